"""Celery tasks: thin wrappers that hand a job id to the runner."""
from __future__ import annotations

from worker.celery_app import TRAIN_TASK, celery_app
from worker.runner import run_job_by_id


@celery_app.task(name=TRAIN_TASK, bind=True)
def train_job(self, job_id: int) -> None:
    """Train one job; its state lives in the database, not in Celery's result backend."""
    run_job_by_id(job_id, worker_name=self.request.hostname)
