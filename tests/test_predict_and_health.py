"""Predictions answer quickly when no prediction worker does, keep no upload and no server path; the
health check says only ok or down per part and logs the details."""
from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from db import operations as ops
from db.models import Job, JobStatus
from db.session import Database
from testsupport.images import CLASS_COLOURS, coloured_image, png_bytes, two_class_zip
from testsupport.stack import wait_until
from worker.queues import PREDICT_QUEUE, make_celery

ROOT = Path(__file__).resolve().parents[1]
# What tells a leaked connection string: a user name that appears nowhere else.
LEAKY_USER = "leaky-user-4f1e"


@pytest.fixture
def predictable(client, app) -> str:
    """The predict route of a benchmark whose one job is marked succeeded."""
    return predict_route(client, app)


def predict_route(client, app) -> str:
    """Register a dataset, submit a one-job benchmark, mark its job succeeded; its predict route."""
    dataset = client.post("/api/v1/datasets", data={"file": (io.BytesIO(two_class_zip()), "ok.zip")},
                          content_type="multipart/form-data").json["id"]
    created = client.post("/api/v1/benchmarks", json={"dataset": dataset, "backbones": ["VGG16"], "epochs": 1,
                                                      "image_size": 32, "weights": "none"}).json
    with app.extensions["tlbench.database"].transaction() as session:
        session.get(Job, created["jobs"][0]["id"]).status = JobStatus.SUCCEEDED
    return f"/api/v1/benchmarks/{created['id']}/predict"


def an_image() -> tuple[io.BytesIO, str]:
    """A small decodable PNG upload."""
    return io.BytesIO(png_bytes(coloured_image(CLASS_COLOURS["red"], 16, np.random.default_rng(0)))), "cat.png"


def predictions_folder(settings) -> list[Path]:
    """What is left in the home's predictions folder."""
    folder = settings.home / "predictions"
    return list(folder.iterdir()) if folder.exists() else []


def test_predict_answers_503_at_once_when_no_prediction_worker_is_registered(client, settings, predictable,
                                                                             redis_client):
    started = time.monotonic()
    response = client.post(predictable, data={"file": an_image()}, content_type="multipart/form-data")
    assert time.monotonic() - started < 3
    assert response.status_code == 503, response.json
    assert "no prediction worker" in response.json["error"]
    assert predictions_folder(settings) == [] and redis_client.llen(PREDICT_QUEUE) == 0


def test_predict_answers_503_quickly_when_the_registered_worker_is_gone(client, app, settings, predictable):
    with app.extensions["tlbench.database"].transaction() as session:  # beat just now, but no process answers
        ops.register_worker(session, "predict1@vanished", "vanished", "CPU", None, [PREDICT_QUEUE])
    started = time.monotonic()
    response = client.post(predictable, data={"file": an_image()}, content_type="multipart/form-data")
    assert time.monotonic() - started < 5
    assert response.status_code == 503 and "no prediction worker" in response.json["error"], response.json
    assert predictions_folder(settings) == []


@pytest.fixture
def worker_that_answers_but_never_predicts(app, client, settings):
    """A real Celery worker registered as a prediction worker that consumes another queue: it answers
    pings, and a prediction sent to it waits forever. (After `app`, which creates the home and its database.)"""
    env = {**os.environ, "REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url,
           "TLBENCH_HOME": str(settings.home), "TLBENCH_QUEUES": PREDICT_QUEUE}
    process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker.celery_app:celery_app", "worker",
                                "-n", "predict9@silent", "-Q", "nothing-comes-here", "-P", "solo",
                                "--loglevel", "warning"], env=env, cwd=ROOT)
    try:
        wait_until(lambda: [worker for worker in client.get("/api/v1/workers").json["workers"]
                            if worker["name"] == "predict9@silent" and worker["status"] == "online"], 90,
                   "the silent worker to register")
        celery = make_celery(settings.redis_url)
        wait_until(lambda: celery.control.ping(destination=["predict9@silent"], timeout=0.5), 30,
                   "the silent worker to answer pings")
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_predict_answers_504_after_its_timeout_when_the_worker_never_answers(
        app, client, settings, predictable, worker_that_answers_but_never_predicts):
    app.config["TLBENCH_PREDICT_TIMEOUT"] = 2
    started = time.monotonic()
    response = client.post(predictable, data={"file": an_image()}, content_type="multipart/form-data")
    took = time.monotonic() - started
    assert response.status_code == 504, response.json
    assert "no prediction worker answered within 2 s" in response.json["error"]
    assert 2 <= took < 10
    assert predictions_folder(settings) == []


def test_the_prediction_timeout_is_well_below_two_minutes():
    from dashboard.prediction import PREDICT_TIMEOUT_SECONDS

    assert PREDICT_TIMEOUT_SECONDS <= 30


@pytest.mark.parametrize("content, filename", [(b"#!/usr/bin/env python\nprint('hi')\n", "x.py"),
                                               (b"\x89PNG\r\n\x1a\n broken", "broken.png"),
                                               (b"GIF89a", "tiny.gif")])
def test_a_refused_prediction_upload_names_no_server_path(client, settings, predictable, content, filename):
    response = client.post(predictable, data={"file": (io.BytesIO(content), filename)},
                           content_type="multipart/form-data")
    assert response.status_code == 400 and response.json["field"] == "file", response.json
    error = response.json["error"]
    assert f"{filename!r} is not a decodable image" in error
    assert str(settings.home) not in error and "predictions" not in error and "/" not in error.split(": ", 1)[1]
    assert predictions_folder(settings) == []


# --- Health -----------------------------------------------------------------------------------------------


def test_health_says_down_without_the_broker_details_and_logs_them(settings, caplog):
    import dataclasses

    from dashboard import create_app

    unreachable = dataclasses.replace(settings, redis_url=f"redis://{LEAKY_USER}:pw@127.0.0.1:9/0")
    app = create_app({"TESTING": True, "TLBENCH_SETTINGS": unreachable})
    try:
        with caplog.at_level(logging.WARNING):
            response = app.test_client().get("/api/v1/health")
        assert response.status_code == 503
        assert response.json == {"status": "degraded", "database": "ok", "broker": "down"}
        assert "broker" in caplog.text and "Connection refused" in caplog.text
    finally:
        app.extensions["tlbench.database"].dispose()


def test_health_says_down_without_the_database_details_and_logs_them(app, client, caplog):
    app.extensions["tlbench.database"].dispose()
    app.extensions["tlbench.database"] = Database(f"postgresql+psycopg://{LEAKY_USER}:pw@127.0.0.1:9/secret_db")
    with caplog.at_level(logging.WARNING):
        response = client.get("/api/v1/health")
    assert response.status_code == 503
    assert response.json == {"status": "degraded", "database": "down", "broker": "ok"}
    assert LEAKY_USER not in response.get_data(as_text=True)
    assert "database" in caplog.text and "127.0.0.1" in caplog.text
