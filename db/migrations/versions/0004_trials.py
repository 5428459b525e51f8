"""Trials: a job's learning-rate grid x repeats, each with its result; epoch rows carry their trial.

Every existing job gets one trial (number 0, its learning rate, repeat 0, its seed) holding what its
summary says of validation; none has a test result, since none had a test set.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FINISHED = {"succeeded": "completed", "cancelled": "cancelled"}


def upgrade() -> None:
    """Create trials, give epochs a trial number (0) and make (job, trial, epoch) unique."""
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("learning_rate", sa.Float(), nullable=False),
        sa.Column("repeat", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("finished", sa.String(16), nullable=True),
        sa.Column("best_val_accuracy", sa.Float(), nullable=True),
        sa.Column("best_epoch", sa.Integer(), nullable=True),
        sa.Column("epochs_run", sa.Integer(), nullable=True),
        sa.Column("test_accuracy", sa.Float(), nullable=True),
        sa.Column("test_correct", sa.LargeBinary(), nullable=True),
        sa.Column("selected", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.UniqueConstraint("job_id", "number", name="uq_trial_per_job"),
    )
    op.create_index("ix_trials_job_id", "trials", ["job_id"])
    with op.batch_alter_table("epochs") as batch:
        batch.add_column(sa.Column("trial", sa.Integer(), server_default="0", nullable=False))
        batch.drop_constraint("uq_epoch_per_job", type_="unique")
        batch.create_unique_constraint("uq_epoch_per_trial", ["job_id", "trial", "epoch"])
    _one_trial_per_existing_job()


def _one_trial_per_existing_job() -> None:
    """Trial 0 of every job, from its spec and summary; nothing is invented for what it never measured."""
    connection = op.get_bind()
    jobs = connection.execute(sa.text("SELECT id, spec, status, summary FROM jobs")).all()
    trials = sa.table("trials", *(sa.column(name) for name in (
        "job_id", "number", "learning_rate", "repeat", "seed", "finished", "best_val_accuracy", "best_epoch",
        "epochs_run", "selected")))
    rows = []
    for job_id, spec, status, summary in jobs:
        spec = json.loads(spec) if isinstance(spec, str) else spec
        summary = (json.loads(summary) if isinstance(summary, str) else summary) or {}
        if spec.get("learning_rate") is None:
            continue  # no trial to describe; a worker that starts the job adds its trials
        rows.append({"job_id": job_id, "number": 0, "learning_rate": spec["learning_rate"], "repeat": 0,
                     "seed": spec.get("seed", 0), "finished": FINISHED.get(status) if summary else None,
                     "best_val_accuracy": summary.get("best_val_accuracy"), "best_epoch": summary.get("best_epoch"),
                     "epochs_run": summary.get("epochs_run"), "selected": bool(summary)})
    if rows:
        op.bulk_insert(trials, rows)


def downgrade() -> None:
    """Drop trials and the epochs' trial numbers (epochs of trials other than 0 go: (job, epoch) is unique again)."""
    op.execute("DELETE FROM epochs WHERE trial <> 0")
    with op.batch_alter_table("epochs") as batch:
        batch.drop_constraint("uq_epoch_per_trial", type_="unique")
        batch.create_unique_constraint("uq_epoch_per_job", ["job_id", "epoch"])
        batch.drop_column("trial")
    op.drop_index("ix_trials_job_id", "trials")
    op.drop_table("trials")
