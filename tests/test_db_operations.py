"""Database operations: claiming, idempotent epoch rows, attempt ownership, derived status.

Each test runs on SQLite and on PostgreSQL (the `database` fixture of conftest.py)."""
from __future__ import annotations

import threading

import pytest

from db import operations as ops
from db.models import Epoch, Job, JobStatus


@pytest.fixture
def job_ids(database) -> list[int]:
    """Two queued jobs of one benchmark."""
    with database.transaction() as session:
        dataset = ops.add_dataset(session, name="d", root="/d", classes=["a", "b"], counts={"a": 1, "b": 1},
                                  skipped=[], sha256="0" * 64, manifest=[])
        benchmark = ops.create_benchmark(session, name="b", dataset_id=dataset.id, config={},
                                         specs=[{"backbone": "VGG16"}, {"backbone": "ResNet50"}])
        return [job.id for job in benchmark.jobs]


def claim(database, job_id, worker="w1"):
    """Claim in its own transaction."""
    with database.transaction() as session:
        return ops.claim_job(session, job_id, worker)


def test_a_job_is_claimed_once(database, job_ids):
    assert claim(database, job_ids[0]) == 1
    assert claim(database, job_ids[0], "w2") is None
    with database.transaction() as session:
        job = session.get(Job, job_ids[0])
        assert (job.status, job.worker, job.attempt) == (JobStatus.RUNNING, "w1", 1)
        assert job.started_at.tzinfo is not None


def test_recording_an_epoch_twice_keeps_one_row_with_the_latest_values(database, job_ids):
    attempt = claim(database, job_ids[0])
    for loss in (0.9, 0.5):
        with database.transaction() as session:
            assert ops.record_epoch(session, job_ids[0], attempt, 1, {"loss": loss, "val_accuracy": float("nan")})
    with database.transaction() as session:
        rows = ops.job_epochs(session, job_ids[0])
        assert [(row.epoch, row.loss, row.val_accuracy) for row in rows] == [(1, 0.5, None)]


def test_a_stale_attempt_can_no_longer_write(database, job_ids):
    attempt = claim(database, job_ids[0])
    with database.transaction() as session:  # as a retry would: back to the queue, claimed again
        session.get(Job, job_ids[0]).status = JobStatus.QUEUED
    newer = claim(database, job_ids[0], "w2")
    assert newer == attempt + 1
    with database.transaction() as session:
        assert not ops.record_epoch(session, job_ids[0], attempt, 1, {"loss": 1.0})
        assert not ops.heartbeat(session, job_ids[0], attempt)
        assert not ops.finish_job(session, job_ids[0], attempt, JobStatus.SUCCEEDED, summary={})
        assert ops.heartbeat(session, job_ids[0], newer, phase="training")
    with database.transaction() as session:
        assert session.query(Epoch).count() == 0
        assert session.get(Job, job_ids[0]).status is JobStatus.RUNNING


def test_benchmark_status_follows_its_jobs(database, job_ids):
    def status():
        with database.transaction() as session:
            return ops.list_benchmarks(session)[0].status

    assert status() is JobStatus.QUEUED
    first = claim(database, job_ids[0])
    assert status() is JobStatus.RUNNING
    with database.transaction() as session:
        ops.finish_job(session, job_ids[0], first, JobStatus.SUCCEEDED, summary={"best_val_accuracy": 0.9})
    assert status() is JobStatus.RUNNING  # one job still queued
    second = claim(database, job_ids[1])
    with database.transaction() as session:
        ops.finish_job(session, job_ids[1], second, JobStatus.FAILED, error="boom")
    assert status() is JobStatus.FAILED


def test_epochs_done_counts_the_highest_epoch(database, job_ids):
    attempt = claim(database, job_ids[0])
    for epoch in (1, 2, 3):
        with database.transaction() as session:
            ops.record_epoch(session, job_ids[0], attempt, epoch, {"loss": 1.0})
    with database.transaction() as session:
        assert ops.epochs_done(session, job_ids) == {job_ids[0]: 3, job_ids[1]: 0}


def test_two_workers_claiming_one_job_at_once_get_one_attempt(database, job_ids):
    # Each claim runs in its own thread and transaction, and each waits (up to hold_seconds) for the
    # other to have claimed too before committing. Unless the claim locks the row it reads, both read
    # "queued" and both commit an attempt; with the lock the second waits, then finds the job running.
    hold_seconds = 1.0
    both_claimed = threading.Barrier(2)
    attempts: dict[str, int | None] = {}

    def claim_and_hold(worker: str) -> None:
        with database.transaction() as session:
            attempts[worker] = ops.claim_job(session, job_ids[0], worker)
            try:
                both_claimed.wait(timeout=hold_seconds)
            except threading.BrokenBarrierError:
                pass  # the other claim is waiting for this transaction's lock

    threads = [threading.Thread(target=claim_and_hold, args=(worker,)) for worker in ("w1", "w2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(attempts.values(), key=str) == [1, None], attempts
    winner = next(worker for worker, attempt in attempts.items() if attempt == 1)
    with database.transaction() as session:
        job = session.get(Job, job_ids[0])
        assert (job.status, job.worker, job.attempt) == (JobStatus.RUNNING, winner, 1)


def test_json_columns_store_nan_and_infinity_as_null(database, job_ids):
    attempt = claim(database, job_ids[0])
    summary = {"best_val_accuracy": float("nan"), "history": [1.0, float("inf")], "epochs_run": 2}
    with database.transaction() as session:
        assert ops.finish_job(session, job_ids[0], attempt, JobStatus.SUCCEEDED, summary=summary)
    with database.transaction() as session:
        assert session.get(Job, job_ids[0]).summary == {"best_val_accuracy": None, "history": [1.0, None],
                                                        "epochs_run": 2}
