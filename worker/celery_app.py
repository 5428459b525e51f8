"""The workers' Celery app (`celery -A worker.celery_app:celery_app worker`): the app of worker/queues.py,
plus the bootstep that registers each worker in the database. Only worker processes import this."""
from __future__ import annotations

import ctypes
import signal
import sys

from celery.signals import worker_process_init

from config.settings import load_settings
from worker.queues import make_celery
from worker.registry import WorkerRegistry

PR_SET_PDEATHSIG = 1  # prctl option, from <linux/prctl.h>

# Read once, as the worker starts; the tasks pass it down (worker/tasks.py).
worker_settings = load_settings()
celery_app = make_celery(worker_settings.redis_url)
celery_app.steps["worker"].add(WorkerRegistry)


@worker_process_init.connect
def die_with_the_worker(**_) -> None:
    """A pool child is killed when its worker dies: an orphan would go on training a re-queued job."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
