"""A worker registers itself in the database at start, beats every few seconds, and says when it stops.

Each beat also stores the worker's metrics (worker/devices.py: host CPU and memory, and its GPU's
utilisation and memory where NVML answers). On the same timer it brings back lost jobs
(worker/recovery.py).

It runs in the worker's main process on Celery's own timer (the event loop's thread), so no extra
thread exists when the pool forks a child, and no database connection stays open across a fork.
"""
from __future__ import annotations

import logging
import os
import socket

from celery import bootsteps

from config.settings import load_settings
from db import operations as ops
from db.session import Database
from worker import recovery
from worker.devices import worker_metrics

log = logging.getLogger(__name__)

# The first sample of the CPU is measured over this long (later ones cover the time since the last beat).
FIRST_CPU_SAMPLE_SECONDS = 0.2


class WorkerRegistry(bootsteps.StartStopStep):
    """Register, beat and deregister this worker in the database."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.settings = load_settings()
        self.timer_entry = None

    def start(self, worker) -> None:
        """Register now, re-queue what this worker held before a restart, then beat on the worker's timer."""
        self._write(ops.register_worker, worker.hostname, socket.gethostname(),
                    os.environ.get("TLBENCH_DEVICE", "CPU"), _int_or_none(os.environ.get("TLBENCH_DEVICE_MEMORY")),
                    [queue for queue in os.environ.get("TLBENCH_QUEUES", "").split(",") if queue],
                    _metrics(FIRST_CPU_SAMPLE_SECONDS))
        self._guarded(recovery.requeue_held_jobs, worker.app, worker.hostname)
        self.timer_entry = worker.timer.call_repeatedly(self.settings.liveness.worker_beat_seconds, self._beat, (worker,))

    def _beat(self, worker) -> None:
        """Say this worker is alive, and bring back jobs that others lost."""
        self._write(ops.worker_heartbeat, worker.hostname, _metrics())
        self._guarded(recovery.recover_lost_jobs, worker.app, self.settings.liveness)

    def stop(self, worker) -> None:
        """Stop beating and record the clean shutdown."""
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None
        self._write(ops.worker_stopped, worker.hostname)

    def _guarded(self, recover, app, *arguments) -> None:
        """Run one recovery step with a short-lived engine; log, never raise (the broker may be down)."""
        database = Database(self.settings.database_url)
        try:
            recover(app, database, *arguments)
        except Exception:
            log.exception("job recovery: %s failed", recover.__name__)
        finally:
            database.dispose()

    def _write(self, operation, *args) -> None:
        """Run one database operation in its own short-lived engine; log, never raise."""
        database = Database(self.settings.database_url)
        try:
            with database.transaction() as session:
                operation(session, *args)
        except Exception:  # the worker must keep serving even when the registry can't be written
            log.exception("worker registry: %s failed", operation.__name__)
        finally:
            database.dispose()


def _metrics(cpu_interval: float | None = None) -> dict | None:
    """This worker's metrics now; None (and a log line) if they cannot be read: the beat matters more."""
    try:
        return worker_metrics(os.environ.get("TLBENCH_GPU_INDEX") or None, cpu_interval)
    except Exception:
        log.exception("worker metrics could not be read")
        return None


def _int_or_none(text: str | None) -> int | None:
    """An integer from the environment, if there is one."""
    return int(text) if text and text.isdigit() else None
