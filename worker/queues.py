"""What the web app and the CLI need to put work on the queues: task and queue names, pool-name checks,
and a Celery app that sends. It imports no worker machinery (worker/celery_app.py is the workers' app)."""
from __future__ import annotations

import re
from collections.abc import Iterable

from celery import Celery

from db.models import DEFAULT_POOL

# Each pool of training workers is a Celery queue of the same name; every training worker serves
# the default pool, and `tlbench worker --pool NAME` adds others (a GPU model, a big-memory host...).
TRAIN_QUEUE = DEFAULT_POOL
POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
TRAIN_TASK = "tlbench.train_job"
TRIALS_TASK = "tlbench.train_trials"
PREDICT_QUEUE = "predict"
PREDICT_TASK = "tlbench.predict"
PREDICTION_RESULT_SECONDS = 300
# Longer than any training should take: an unacknowledged message is delivered again after it.
VISIBILITY_TIMEOUT_SECONDS = 7 * 24 * 3600


def make_celery(redis_url: str) -> Celery:
    """The Celery app with the settings GPU jobs need (see docs/architecture.md), for senders and workers.

    No fix-ups: Celery's only built-in one is for Django projects, and loading it imports the worker
    machinery into every process that merely sends a message.
    """
    app = Celery("tlbench", broker=redis_url, backend=redis_url, include=["worker.tasks"], fixups=[])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=1,
        # On a lost broker connection the running job goes on: the database, not the message, says
        # who owns it, and a broker that restarted empty gets its queued jobs back from the database.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS},
        result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS},
        task_default_queue=TRAIN_QUEUE,
        # Training messages name their job's pool when they are sent (enqueue_training).
        task_routes={PREDICT_TASK: {"queue": PREDICT_QUEUE}},
        # Job state lives in the database; only predictions are answered through the result backend.
        task_ignore_result=True,
        result_expires=PREDICTION_RESULT_SECONDS,
        worker_hijack_root_logger=False,
    )
    return app


def enqueue_training(app: Celery, job_id: int, pool: str) -> None:
    """Put one job on its pool's queue; the message carries only the job id.

    Raises kombu's OperationalError within about a second when the broker does not answer. No result is
    awaited: without ignore_result the client would first subscribe to the result backend, and retry
    that for 20 s when Redis is down.
    """
    app.send_task(TRAIN_TASK, args=[job_id], queue=pool, ignore_result=True)


def enqueue_trial_helpers(app: Celery, job_id: int, attempt: int, pool: str, count: int) -> None:
    """Ask `count` idle workers of the pool to train trials of this attempt of the job alongside its owner.

    A message that finds no trial left to take (its job ended, or other workers took them all) is dropped.
    """
    for _ in range(count):
        app.send_task(TRIALS_TASK, args=[job_id, attempt], queue=pool, ignore_result=True)


def pool_name_problem(name: str) -> str | None:
    """What is wrong with a pool name, or None when it can name a pool (and its queue)."""
    if name == PREDICT_QUEUE:
        return f"{name!r} is the prediction workers' queue, not a training pool"
    if not POOL_NAME.match(name):
        return (f"{name!r} is not a pool name: 1 to 40 lower-case letters, digits, '-' and '_', "
                "starting with a letter or a digit")
    return None


def parse_pools(values: Iterable[str]) -> list[str]:
    """Pool names from options like `--pool a100 --pools a100,big`: checked, in order, each once."""
    pools = []
    for name in (part.strip() for value in values for part in value.split(",")):
        problem = pool_name_problem(name)
        if problem:
            raise ValueError(f"--pool: {problem}")
        if name not in pools:
            pools.append(name)
    return pools
