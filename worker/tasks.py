"""Celery tasks: thin wrappers that hand ids and paths to the code that does the work."""
from __future__ import annotations

from worker.celery_app import celery_app, worker_settings
from worker.files import local_image, model_folder
from worker.queues import PREDICT_TASK, TRAIN_TASK, TRIALS_TASK
from worker.runner import help_with_trials, run_job_by_id


@celery_app.task(name=TRAIN_TASK, bind=True)
def train_job(self, job_id: int) -> None:
    """Train one job; its state lives in the database, not in Celery's result backend."""
    run_job_by_id(job_id, worker_name=self.request.hostname, app=self.app, settings=worker_settings)


@celery_app.task(name=TRIALS_TASK, bind=True)
def train_trials(self, job_id: int, attempt: int) -> None:
    """Train trials of a job another worker owns (those that cannot share features), while any is free."""
    help_with_trials(job_id, attempt, worker_name=self.request.hostname, settings=worker_settings)


@celery_app.task(name=PREDICT_TASK, ignore_result=False, acks_late=False)
def predict(image_key: str, jobs: list[dict]) -> list[dict]:
    """Predict the image stored under `image_key` with each listed job's model ({"job_id", "attempt", "backbone"}
    each)."""
    from jobs.predict import predict_image  # Keras loads here, in the worker's child, never in its parent

    with local_image(worker_settings, image_key) as image:
        return [{"job_id": job["job_id"], "backbone": job["backbone"],
                 **predict_image(model_folder(worker_settings, job["job_id"], job["attempt"]), image)}
                for job in jobs]
