"""Schema migrations with Alembic, applied before any other process uses the database (docs/database.md).

`upgrade(url)` brings a database to the newest revision in db/migrations/versions: it creates the
schema on an empty database, and adopts a database that an earlier tlbench made without migrations.
Several processes may call it at once (the web app and the workers start together): each one
migrates inside a single transaction that first takes a lock, so the first does the work and the
others then find nothing left to do.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import OperationalError

from db.models import Base
from db.session import is_sqlite, make_engine, normalize_url, unusable

MIGRATIONS = Path(__file__).with_name("migrations")
# The schema every tlbench made with create_all before it had migrations.
BASELINE = "0001"
# PostgreSQL advisory lock held while migrating ("tlbench" in ASCII); one per database.
MIGRATION_LOCK_KEY = 0x746C62656E6368
# How a database is compared with the models (tests, `alembic check`, adopting an unversioned database).
COMPARE_OPTIONS = {"compare_type": True, "compare_server_default": True}


class MigrationError(RuntimeError):
    """The database could not be brought to the newest schema."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, without an ini file; `connection` is the one env.py migrates."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(database_url: str) -> None:
    """Bring the database to the newest revision; an unversioned database of an earlier tlbench is adopted.

    Raises db.session.DatabaseUnusable, with the server's one-line reason, when the database can't be opened.
    """
    try:
        with locked_connection(database_url) as connection:
            config = alembic_config(connection)
            _adopt_unversioned(connection, config)
            command.upgrade(config, "head")
    except OperationalError as error:  # no server, refused login, unwritable file...
        raise unusable(database_url, str(error.orig or error)) from None


def schema_differences(connection: Connection) -> list:
    """What autogenerate would change to make the database match db.models (empty: nothing)."""
    return compare_metadata(MigrationContext.configure(connection, opts=COMPARE_OPTIONS), Base.metadata)


@contextmanager
def locked_connection(database_url: str) -> Iterator[Connection]:
    """A connection inside one transaction that holds the migration lock; committed at the end.

    PostgreSQL: a transaction-level advisory lock (DDL is transactional there, so a migration
    that fails leaves nothing behind). SQLite: the engine begins with BEGIN IMMEDIATE, which holds
    the database's write lock (others wait up to its busy timeout), and foreign keys are off for
    the migration as Alembic's batch mode needs; they are checked before the commit.
    """
    url = normalize_url(database_url)
    sqlite = is_sqlite(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if sqlite:  # on the driver's connection: a PRAGMA inside a transaction would do nothing
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
            with connection.begin():
                if not sqlite:
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                yield connection
                if sqlite:
                    _check_foreign_keys(connection)
    finally:
        engine.dispose()  # the SQLite connection without foreign keys must not be reused


def _check_foreign_keys(connection: Connection) -> None:
    """Refuse to commit a SQLite migration that left rows pointing nowhere."""
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise MigrationError(f"the migration left rows whose foreign keys point nowhere: {broken[:5]}")


def _adopt_unversioned(connection: Connection, config: Config) -> None:
    """Stamp a database whose tables create_all made: head if it already matches the models, else BASELINE."""
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" in tables or not tables & set(Base.metadata.tables):
        return
    command.stamp(config, "head" if not schema_differences(connection) else BASELINE)
