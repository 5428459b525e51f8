"""Engine and transactions: SQLite tuned for several processes, or PostgreSQL (docs/database.md)."""
from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session

SQLITE_BUSY_TIMEOUT_MS = 30_000
WAL_SWITCH_RETRY_SECONDS = 0.01
# The PostgreSQL driver tlbench ships (psycopg 3); plain postgresql:// URLs are given to it.
POSTGRES_DRIVER = "postgresql+psycopg"
# The databases whose SQL tlbench's schema, migrations and row locks are written for (docs/database.md).
SUPPORTED_BACKENDS = ("sqlite", "postgresql")


class DatabaseUnusable(RuntimeError):
    """DATABASE_URL names a database tlbench cannot use: not a URL, another kind of database, a driver that
    is not installed, or a server that does not answer. The message is one line and shows no password."""


def unusable(url: str, problem: str) -> DatabaseUnusable:
    """The error that says which database cannot be used, and why."""
    try:
        shown = f" {shown_url(url)}"
    except ArgumentError:  # not a URL at all: it may hold a password nobody can find to hide
        shown = " of DATABASE_URL"
    return DatabaseUnusable(f"cannot use the database{shown}: {' '.join(problem.split())}")


def checked_url(url: str) -> URL:
    """The parsed URL of a database tlbench can use; DatabaseUnusable otherwise."""
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError:
        raise unusable(url, "DATABASE_URL is not a database URL (sqlite:///path or "
                            "postgresql://user:password@host/name)") from None
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise unusable(url, f"tlbench works with SQLite and PostgreSQL, not {parsed.get_backend_name()} "
                            "(sqlite:///path or postgresql://user:password@host/name)")
    return parsed


def normalize_url(url: str) -> str:
    """The URL SQLAlchemy should open: postgresql:// and postgres:// mean psycopg 3, not psycopg2."""
    scheme, separator, rest = url.partition("://")
    if separator and scheme in ("postgresql", "postgres"):
        return f"{POSTGRES_DRIVER}://{rest}"
    return url


def shown_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    return make_url(normalize_url(url)).render_as_string(hide_password=True)


def is_sqlite(url: str) -> bool:
    """Whether a database URL names a SQLite database."""
    return checked_url(url).get_backend_name() == "sqlite"


class Database:
    """One engine per process; create it after a fork, never before (pooled connections can't cross one)."""

    def __init__(self, url: str):
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One short transaction: commit on success, roll back on any error.

        On SQLite it holds the database's write lock from its start (BEGIN IMMEDIATE); on PostgreSQL
        it runs at READ COMMITTED, and operations that read a row and then change it lock that row
        first (SELECT ... FOR NO KEY UPDATE, see db/operations.py).
        """
        with Session(self.engine, expire_on_commit=False) as session:
            with session.begin():
                yield session

    def ping(self) -> None:
        """Run a trivial query; raises when the database can't be reached."""
        with self.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a long busy timeout, foreign keys and BEGIN IMMEDIATE.

    Raises DatabaseUnusable for a URL tlbench cannot use (see checked_url) or whose driver is missing.
    """
    url = normalize_url(url)
    if not is_sqlite(url):
        try:
            return create_engine(url, pool_pre_ping=True, json_serializer=dumps_json)
        except ImportError as error:  # e.g. postgresql+psycopg2:// without psycopg2
            raise unusable(url, f"its driver is not installed ({error}); postgresql:// uses psycopg 3, "
                                "which tlbench ships") from None
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, json_serializer=dumps_json)
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def dumps_json(value) -> str:
    """JSON for a JSON column, with NaN and infinities as null: PostgreSQL refuses them, and so do browsers."""
    return json.dumps(_finite(value))


def _finite(value):
    """The value with every non-finite float inside it replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _configure_sqlite_connection(dbapi_connection, _connection_record) -> None:
    """Let SQLAlchemy emit BEGIN itself and set the pragmas every connection needs."""
    # pysqlite would otherwise start deferred transactions on its own, and a deferred
    # transaction that reads then writes fails with SQLITE_BUSY without waiting.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    _switch_to_wal(cursor)
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _switch_to_wal(cursor) -> None:
    """Put the database in WAL mode, waiting as long as the busy timeout for other connections.

    On a new database file the switch fails at once with "database is locked", whatever the busy
    timeout, while another process holds a lock on it (two processes migrating a new file at once).
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(WAL_SWITCH_RETRY_SECONDS)


def _begin_immediate(connection) -> None:
    """Take the write lock at the start, so the busy timeout applies to every writer."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")
