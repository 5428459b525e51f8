"""Trial holders: which worker (and attempt of the job) trains a trial now, and when it last said so.

Trials that cannot share features are trained by the job's own worker and idle workers of its pool,
each holding one trial at a time. Existing trials hold nothing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the holder's name, its attempt of the job and its heartbeat to every trial."""
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("worker", sa.String(255), nullable=True))
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Forget who held each trial."""
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("attempt")
        batch.drop_column("worker")
