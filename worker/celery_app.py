"""The Celery app shared by the workers, the web app (to enqueue) and the CLI."""
from __future__ import annotations

from celery import Celery

from db.settings import Settings, load_settings
from worker.registry import WorkerRegistry

TRAIN_QUEUE = "training"
TRAIN_TASK = "tlbench.train_job"
PREDICT_QUEUE = "predict"
PREDICT_TASK = "tlbench.predict"
PREDICTION_RESULT_SECONDS = 300
# Longer than any training should take: an unacknowledged message is delivered again after it.
VISIBILITY_TIMEOUT_SECONDS = 7 * 24 * 3600


def make_celery(settings: Settings) -> Celery:
    """Build the Celery app with the settings GPU jobs need (see docs/architecture.md)."""
    app = Celery("tlbench", broker=settings.redis_url, backend=settings.redis_url,
                 include=["worker.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS},
        result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS},
        task_default_queue=TRAIN_QUEUE,
        task_routes={TRAIN_TASK: {"queue": TRAIN_QUEUE}, PREDICT_TASK: {"queue": PREDICT_QUEUE}},
        # Job state lives in the database; only predictions are answered through the result backend.
        task_ignore_result=True,
        result_expires=PREDICTION_RESULT_SECONDS,
        worker_hijack_root_logger=False,
    )
    app.steps["worker"].add(WorkerRegistry)
    return app


celery_app = make_celery(load_settings())


def enqueue_training(app: Celery, job_id: int) -> None:
    """Put one job on the training queue; the message carries only the job id."""
    app.send_task(TRAIN_TASK, args=[job_id], queue=TRAIN_QUEUE)
