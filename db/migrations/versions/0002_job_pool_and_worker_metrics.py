"""Job.pool (the worker pool a job runs on, 'default' for every existing job) and Worker.metrics.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add jobs.pool and workers.metrics."""
    op.add_column("jobs", sa.Column("pool", sa.String(length=64), server_default="default", nullable=False))
    op.add_column("workers", sa.Column("metrics", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop jobs.pool and workers.metrics."""
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("metrics")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("pool")
