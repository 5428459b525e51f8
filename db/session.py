"""Engine and transactions: SQLite tuned for several processes, or PostgreSQL."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from db.models import Base

SQLITE_BUSY_TIMEOUT_MS = 30_000


class Database:
    """One engine per process; create it after a fork, never before (pooled connections can't cross one)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)

    def create_tables(self) -> None:
        """Create missing tables; harmless when they exist."""
        Base.metadata.create_all(self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One short transaction: commit on success, roll back on any error."""
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
    """Create an engine; SQLite gets WAL, a long busy timeout, foreign keys and BEGIN IMMEDIATE."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def _configure_sqlite_connection(dbapi_connection, _connection_record) -> None:
    """Let SQLAlchemy emit BEGIN itself and set the pragmas every connection needs."""
    # pysqlite would otherwise start deferred transactions on its own, and a deferred
    # transaction that reads then writes fails with SQLITE_BUSY without waiting.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_immediate(connection) -> None:
    """Take the write lock at the start, so the busy timeout applies to every writer."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")
