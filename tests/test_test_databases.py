"""The test suite's own PostgreSQL: with TLBENCH_TEST_POSTGRES unset, a throwaway embedded server that other
processes reach through its URL, and that is stopped and deleted at the end."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import psycopg
from sqlalchemy.engine import make_url

from dbutil import SERVER_ENV, connect_postgres, postgres_server_url


def test_without_a_configured_server_the_tests_start_and_remove_an_embedded_one(monkeypatch):
    monkeypatch.delenv(SERVER_ENV, raising=False)
    with postgres_server_url() as url:
        socket_folder = Path(make_url(url).query["host"])
        with psycopg.connect(url) as connection:
            data_folder = Path(connection.execute("SHOW data_directory").fetchone()[0])
        assert data_folder == socket_folder and data_folder.name == "pgdata"
        assert data_folder.parent.name.startswith("tlbench-test-postgres-")  # a folder of this run, not the machine's
        postmaster = psutil.Process(int((data_folder / "postmaster.pid").read_text().split()[0]))
        assert postmaster.name() == "postgres"

        server = connect_postgres(url)
        database_url = server.create_database()
        try:
            assert database_in_another_process(database_url) == database_url.rsplit("/", 1)[1].split("?")[0]
        finally:
            server.drop_all()
    assert not data_folder.parent.exists()
    assert has_exited(postmaster)


def test_a_configured_server_is_used_as_it_is(monkeypatch):
    monkeypatch.setenv(SERVER_ENV, "postgresql://someone@db.invalid:5433/postgres")
    with postgres_server_url() as url:
        assert url == "postgresql://someone@db.invalid:5433/postgres"


def has_exited(process: psutil.Process) -> bool:
    """Whether a process has ended (a zombie has: only its parent has not collected its status yet)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def database_in_another_process(database_url: str) -> str:
    """The name of the database a fresh Python process reaches through `database_url` with tlbench's own engine."""
    code = ("import sys; from db.session import Database; "
            "print(Database(sys.argv[1]).engine.connect().exec_driver_sql('SELECT current_database()').scalar())")
    result = subprocess.run([sys.executable, "-c", code, database_url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()
