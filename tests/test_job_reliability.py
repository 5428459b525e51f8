"""Jobs that must not be lost or come back wrong (issue 10): a send that fails, a message that was lost,
the leader of a benchmark with cancelled jobs, an artifact that vanishes while it is listed.

The web app runs through Flask's test client, on a real Redis (or a socket where none listens) and a
real database."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from config.settings import Liveness
from dashboard import api, create_app
from db import operations as ops
from db.models import Benchmark, Epoch, Job, JobStatus
from db.session import Database
from testsupport.broker import queued_job_ids
from worker import recovery
from worker.queues import TRAIN_QUEUE, make_celery

LONG_AGO = datetime(2000, 1, 1, tzinfo=timezone.utc)


def add_dataset(database: Database) -> int:
    """A dataset row of four images a class (no files: nothing here trains)."""
    manifest = [[f"{name}/{index}.png", label, None] for label, name in enumerate("ab") for index in range(4)]
    with database.transaction() as session:
        return ops.add_dataset(session, name="d", root="/nowhere", classes=["a", "b"], counts={"a": 4, "b": 4},
                               skipped=[], sha256="0" * 64, manifest=manifest).id


def benchmark_request(dataset_id: int) -> dict:
    return {"dataset": dataset_id, "backbones": ["VGG16", "ResNet50"], "epochs": 1, "image_size": 32,
            "weights": "none"}


def row_counts(database: Database) -> tuple[int, int, int]:
    """How many benchmarks, jobs and epochs the database holds."""
    with database.transaction() as session:
        return tuple(session.scalar(select(func.count()).select_from(model)) for model in (Benchmark, Job, Epoch))


@pytest.fixture
def app_without_broker(settings, tmp_path):
    """The web app with its broker at a socket where nothing listens (Redis is down)."""
    app = create_app({"TESTING": True,
                      "TLBENCH_SETTINGS": replace(settings, redis_url=f"redis+socket://{tmp_path / 'no-redis.sock'}")})
    yield app
    app.extensions["tlbench.database"].dispose()


def test_a_submit_the_broker_does_not_take_answers_503_and_writes_nothing(app_without_broker):
    database = app_without_broker.extensions["tlbench.database"]
    dataset_id = add_dataset(database)
    response = app_without_broker.test_client().post("/api/v1/benchmarks", json=benchmark_request(dataset_id))
    assert response.status_code == 503, response.json
    assert set(response.json) == {"error", "field"} and "broker" in response.json["error"]
    assert row_counts(database) == (0, 0, 0)


def test_a_submit_answers_201_and_sends_every_job(client, app, redis_client):
    dataset_id = add_dataset(app.extensions["tlbench.database"])
    response = client.post("/api/v1/benchmarks", json=benchmark_request(dataset_id))
    assert response.status_code == 201, response.json
    assert queued_job_ids(redis_client, TRAIN_QUEUE) == [job["id"] for job in response.json["jobs"]]


def test_a_queued_job_whose_message_was_lost_is_sent_again_once_per_interval(database, settings, redis_client):
    celery = make_celery(settings.redis_url)
    redis_client.set(recovery.BROKER_MARKER, "1")  # the broker kept its data: only the lost message is missing
    with database.transaction() as session:
        benchmark = ops.create_benchmark(session, name="b", dataset_id=add_dataset(database), config={},
                                         specs=[{"backbone": "VGG16"}])
        job_id = benchmark.jobs[0].id
        benchmark.jobs[0].sent_at = LONG_AGO  # its send failed long ago (the broker was down for a second)
    try:
        assert recovery.recover_lost_jobs(celery, database, Liveness()) == [job_id]
        assert queued_job_ids(redis_client, TRAIN_QUEUE) == [job_id]
        assert recovery.recover_lost_jobs(celery, database, Liveness()) == []  # not again so soon
        assert queued_job_ids(redis_client, TRAIN_QUEUE) == [job_id]
    finally:
        celery.close()


# Only succeeded jobs lead (item 10)

def finish(database: Database, job_id: int, status: JobStatus, best: float) -> None:
    with database.transaction() as session:
        attempt = ops.claim_job(session, job_id, "w1")
        ops.finish_job(session, job_id, attempt, status, summary={"best_val_accuracy": best})


def test_a_cancelled_job_never_leads_its_benchmark(client, app):
    database = app.extensions["tlbench.database"]
    with database.transaction() as session:
        benchmark = ops.create_benchmark(session, name="b", dataset_id=add_dataset(database), config={},
                                         specs=[{"backbone": "VGG16", "image_size": 32, "epochs": 3},
                                                {"backbone": "ResNet50", "image_size": 32, "epochs": 3}])
        benchmark_id, (cancelled, succeeded) = benchmark.id, [job.id for job in benchmark.jobs]
    finish(database, cancelled, JobStatus.CANCELLED, best=0.99)  # stopped early: its summary is partial
    assert client.get(f"/api/v1/benchmarks/{benchmark_id}").json["leader"] is None
    finish(database, succeeded, JobStatus.SUCCEEDED, best=0.6)
    # These summaries have no test result, as jobs made before test sets: the leader is by validation, and says so.
    assert client.get(f"/api/v1/benchmarks/{benchmark_id}").json["leader"] == {
        "job_id": succeeded, "backbone": "ResNet50", "by": "val_accuracy", "test_accuracy_mean": None,
        "best_val_accuracy": 0.6}


# Files that vanish while the artifacts are listed are skipped (item 11)

def test_an_artifact_that_vanishes_while_listed_is_skipped(client, app, settings, monkeypatch):
    database = app.extensions["tlbench.database"]
    with database.transaction() as session:
        job_id = ops.create_benchmark(session, name="b", dataset_id=add_dataset(database), config={},
                                      specs=[{"backbone": "VGG16"}]).jobs[0].id
    folder = settings.job_artifact_dir(job_id)
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "history.csv").write_text("epoch\n")
    rotated = folder / "checkpoint" / "epoch-1.weights.h5"
    rotated.write_bytes(b"w" * 10)
    checked = api._is_artifact

    def rotate_after_check(base, path):
        """The checkpoint moves on to epoch 2 right after the listing looked at epoch 1's weights."""
        found = checked(base, path)
        if path == rotated:
            rotated.unlink()
        return found

    monkeypatch.setattr(api, "_is_artifact", rotate_after_check)
    response = client.get(f"/api/v1/jobs/{job_id}/artifacts")
    assert response.status_code == 200, response.data
    assert response.json == {"artifacts": [{"name": "history.csv", "bytes": 6}]}
