"""Database operations: claiming, idempotent epoch rows, attempt ownership, derived status."""
from __future__ import annotations

import pytest

from db import operations as ops
from db.models import Epoch, Job, JobStatus
from db.session import Database


@pytest.fixture
def database(tmp_path):
    """A fresh SQLite database."""
    database = Database(f"sqlite:///{tmp_path / 'test.db'}")
    database.create_tables()
    yield database
    database.dispose()


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
