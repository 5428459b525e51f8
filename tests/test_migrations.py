"""Schema migrations (db/migrate.py, db/migrations/), each on SQLite and on PostgreSQL: they build exactly
the models' schema, adopt a database an earlier tlbench made without them, and survive two processes
migrating one empty database at once."""
from __future__ import annotations

import importlib.util
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.orm import Session

from db import operations as ops
from config.settings import load_settings
from db.migrate import BASELINE, alembic_config, locked_connection, schema_differences, upgrade
from db.models import Base, Job
from db.session import Database, make_engine
from testsupport.stack import wait_until
from tlbench.stack import prepare_state

ROOT = Path(__file__).resolve().parents[1]
# The columns an earlier tlbench's create_all did not make (revisions 0002 and 0003 add them).
NEWER_COLUMNS = (("jobs", "pool"), ("workers", "metrics"), ("jobs", "sent_at"), ("jobs", "resumable"))


def head_revision() -> str:
    """The newest revision in db/migrations/versions."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(database_url: str) -> str | None:
    """The revision the database is at (None: never migrated)."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def assert_at_head(database_url: str) -> None:
    """The database is at the newest revision and matches the models exactly."""
    assert current_revision(database_url) == head_revision()
    with locked_connection(database_url) as connection:
        assert schema_differences(connection) == []


@contextmanager
def transaction(database_url: str) -> Iterator[Session]:
    """One transaction on a Database of its own."""
    database = Database(database_url)
    try:
        with database.transaction() as session:
            yield session
    finally:
        database.dispose()


def add_queued_job(database_url: str) -> int:
    """A dataset, a benchmark and one queued job, written through the models; the job's id."""
    with transaction(database_url) as session:
        dataset = ops.add_dataset(session, name="d", root="/d", classes=["a"], counts={"a": 1}, skipped=[],
                                  sha256="0" * 64, manifest=[])
        benchmark = ops.create_benchmark(session, name="b", dataset_id=dataset.id, config={},
                                         specs=[{"backbone": "VGG16"}])
        return benchmark.jobs[0].id


def create_all(database_url: str) -> None:
    """Tables as tlbench made them before it had migrations: create_all, no alembic_version."""
    engine = make_engine(database_url)
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()


def undo_trials(connection) -> None:
    """Take away the trials table and the epochs' trial numbers, by revision 0004's own downgrade."""
    path = ROOT / "db" / "migrations" / "versions" / "0004_trials.py"
    module_spec = importlib.util.spec_from_file_location("revision_0004", path)
    revision = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(revision)
    with Operations.context(MigrationContext.configure(connection)):
        revision.downgrade()


def drop_newer_columns(database_url: str) -> None:
    """Take away what an earlier tlbench's create_all did not make (revisions 0002 to 0004 add it)."""
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            undo_trials(connection)
            for table, column in NEWER_COLUMNS:
                connection.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
            assert "alembic_version" not in inspect(connection).get_table_names()
    finally:
        engine.dispose()


def test_migrations_build_exactly_the_models_schema_and_step_back(database_url):
    upgrade(database_url)
    assert_at_head(database_url)
    with locked_connection(database_url) as connection:
        command.downgrade(alembic_config(connection), BASELINE)
    assert current_revision(database_url) == BASELINE
    upgrade(database_url)
    assert_at_head(database_url)


def test_an_earlier_tlbench_database_is_adopted_and_upgraded_with_its_rows(database_url):
    create_all(database_url)
    job_id = add_queued_job(database_url)
    drop_newer_columns(database_url)
    upgrade(database_url)
    assert_at_head(database_url)
    with transaction(database_url) as session:
        job = session.get(Job, job_id)
        assert (job.backbone, job.pool) == ("VGG16", "default")


def test_an_unversioned_database_that_matches_the_models_is_stamped_at_head(database_url):
    create_all(database_url)
    job_id = add_queued_job(database_url)
    upgrade(database_url)
    assert_at_head(database_url)
    with transaction(database_url) as session:
        assert session.get(Job, job_id).backbone == "VGG16"


def test_two_processes_migrating_an_empty_database_at_once_both_succeed(database_url, tmp_path):
    # As `tlbench up` and `tlbench worker` (or two workers) starting together: both are ready to
    # migrate (imports done), then start on one signal.
    code = "\n".join([
        "import sys, time, pathlib",
        "from db.migrate import upgrade",
        "folder = pathlib.Path(sys.argv[2])",
        "(folder / sys.argv[3]).touch()",
        "while not (folder / 'go').exists():",
        "    time.sleep(0.001)",
        "upgrade(sys.argv[1])",
    ])
    processes = [subprocess.Popen([sys.executable, "-c", code, database_url, str(tmp_path), f"ready-{n}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for n in (1, 2)]
    try:
        wait_until(lambda: all((tmp_path / f"ready-{n}").exists() for n in (1, 2))
                   or any(process.poll() is not None for process in processes), 60, "both migrators", 0.01)
        (tmp_path / "go").touch()
        outputs = [process.communicate(timeout=60)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert_at_head(database_url)


def test_prepare_state_migrates_the_database_of_the_settings(database_url, tmp_path):
    settings = load_settings({"TLBENCH_HOME": str(tmp_path / "home"), "DATABASE_URL": database_url})
    prepare_state(settings).dispose()
    assert_at_head(database_url)


def test_the_alembic_command_line_finds_no_change_to_make(tmp_path):
    # What docs/database.md tells a developer to run: `alembic check` compares the models with the newest
    # revision (here on a SQLite file that the command line migrates first).
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}"}
    alembic = [str(Path(sys.executable).parent / "alembic"), "-c", "db/migrations/alembic.ini"]
    for arguments in (["upgrade", "head"], ["check"]):
        result = subprocess.run([*alembic, *arguments], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


def test_a_new_sqlite_file_locked_by_another_connection_is_waited_for(tmp_path):
    # What two processes migrating a new file at once meet: while one holds the write lock of a file
    # not yet in WAL mode, switching the other's connection to WAL fails at once, whatever the busy
    # timeout; db.session retries the switch until the busy timeout.
    path = tmp_path / "tlbench.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE earlier (id INTEGER)")
    threading.Timer(0.3, writer.execute, args=("COMMIT",)).start()
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()
        writer.close()
