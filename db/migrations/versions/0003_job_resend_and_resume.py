"""Job.sent_at (when its message was last sent, so a lost one is sent again) and Job.resumable (only a job
recovery put back may resume its checkpoint).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add jobs.sent_at and jobs.resumable (false for every existing job: none resumes a stale checkpoint)."""
    op.add_column("jobs", sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("resumable", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    """Drop jobs.resumable and jobs.sent_at."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("resumable")
        batch.drop_column("sent_at")
