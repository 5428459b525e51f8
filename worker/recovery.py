"""Put lost jobs back on the queue: the database, not the broker, says which jobs exist and who holds them.

A job sent twice is harmless: only one attempt can claim it (db.operations.claim_job). The four ways a job
is lost, and what brings each back, are in docs/reliability.md.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery

from config.settings import Liveness
from db import operations as ops
from db.session import Database
from worker.queues import enqueue_training

log = logging.getLogger(__name__)

# Present as long as the broker keeps its data; absent after it restarted empty.
BROKER_MARKER = "tlbench:broker-keeps-messages"


def send_again(app: Celery, jobs: list[ops.QueuedJob], why: str) -> None:
    """Enqueue each job again on its own pool's queue, with one log line for all of them."""
    if jobs:
        log.warning("%s; sending job%s %s to the queue again", why, "s" if len(jobs) > 1 else "",
                    ", ".join(f"{job.id} (pool {job.pool})" for job in jobs))
    for job in jobs:
        enqueue_training(app, job.id, job.pool)


def requeue_held_jobs(app: Celery, database: Database, worker_name: str) -> list[int]:
    """At a worker's start: the jobs it still holds died with its previous process."""
    with database.transaction() as session:
        held = ops.requeue_jobs_held_by(session, worker_name)
    send_again(app, held, f"its worker {worker_name} restarted")
    return [job.id for job in held]


def recover_lost_jobs(app: Celery, database: Database, liveness: Liveness) -> list[int]:
    """Re-queue running jobs silent for liveness.job_lost_after_seconds; send again every queued job if the broker
    lost its messages, else those nobody claimed within liveness.queued_resend_after_seconds of their last send."""
    lost_after_seconds, resend_after_seconds = liveness.job_lost_after_seconds, liveness.queued_resend_after_seconds
    broker_lost_messages = bool(app.backend.client.set(BROKER_MARKER, "1", nx=True))
    with database.transaction() as session:
        silent = ops.requeue_lost_jobs(session, timedelta(seconds=lost_after_seconds))
        if broker_lost_messages:
            queued, why = ops.queued_jobs(session), "the broker holds nothing sent before it (re)started"
        else:
            queued = ops.jobs_to_send_again(session, timedelta(seconds=resend_after_seconds))
            why = f"nobody claimed them within {resend_after_seconds:g} s of their last send"
    send_again(app, silent, "their heartbeat stopped")
    # Nothing tells a lost message from one still waiting its turn: a queued job may now have two
    # messages, and the second finds it taken and is dropped.
    send_again(app, [job for job in queued if job not in silent], why)
    return sorted({job.id for job in silent} | {job.id for job in queued})
