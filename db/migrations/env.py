"""Alembic's environment: compares with and migrates to db.models.

tlbench runs it through db.migrate.upgrade, which hands over a connection that already holds the
migration lock inside one transaction. From the `alembic` command line (developers; docs/database.md)
it opens such a connection itself, on $DATABASE_URL or tlbench's default SQLite file.
"""
from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import TypeDecorator

from config.settings import load_settings
from db.migrate import COMPARE_OPTIONS, locked_connection
from db.models import Base
from db.session import normalize_url


def render_item(kind: str, item, _autogen_context):
    """Write a custom column type (UtcDateTime) as the plain SQLAlchemy type it stores, so a revision
    never imports the models it migrates."""
    if kind == "type" and isinstance(item, TypeDecorator):
        return f"sa.{item.impl!r}"
    return False


def run_migrations(connection) -> None:
    """Run the command Alembic was given on this connection (its transaction is the caller's)."""
    context.configure(connection=connection, target_metadata=Base.metadata, render_item=render_item,
                      render_as_batch=True, **COMPARE_OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    """Programmatic (db.migrate) or command line."""
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    if config.config_file_name:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    url = config.get_main_option("sqlalchemy.url") or load_settings().database_url
    if context.is_offline_mode():
        context.configure(url=normalize_url(url), target_metadata=Base.metadata, literal_binds=True,
                          render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    with locked_connection(url) as connection:
        run_migrations(connection)


main()
