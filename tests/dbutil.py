"""The databases tests run on: a SQLite file, or a fresh PostgreSQL database of this test run.

Every PostgreSQL database is created for the run under a name of its own (tlbench_test_<run>_<n>),
so parallel runs on one server never meet, and dropped when the run ends. The server is
$TLBENCH_TEST_POSTGRES (a libpq URL of a user who may create databases; default DEFAULT_SERVER);
when it does not answer the tests that need it fail, saying so: CI must prove both databases.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

SERVER_ENV = "TLBENCH_TEST_POSTGRES"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
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


def connect_postgres() -> PostgresServer:
    """The server $TLBENCH_TEST_POSTGRES names (or the local default); fails the test, never skips it,
    when that server does not answer."""
    server = PostgresServer(os.environ.get(SERVER_ENV) or DEFAULT_SERVER)
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
