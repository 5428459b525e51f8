"""`tlbench up` and `tlbench worker` check the database and the broker before they start anything, and
say in one line which one they can't use; `tlbench --help` names every command."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from db.session import Database
from testsupport.stack import free_port
from testsupport.workers import registered_workers
from tlbench.cli import build_parser, main
from tlbench.stack import BROKER_WAIT_SECONDS


def command_names() -> list[str]:
    """The commands the parser knows."""
    subparsers = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    return list(subparsers.choices)


def test_help_names_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    usage = capsys.readouterr().out
    summary = usage.split("\n\n")[1]  # the line under "usage:", before the list of commands
    assert "redis" in command_names()
    for name in command_names():
        assert name in summary, f"{name!r} is missing from {summary!r}"


def start_without_broker(command: str, home, redis_url: str | None) -> subprocess.CompletedProcess:
    """Run `tlbench <command>` on `home` with REDIS_URL=`redis_url` (None: the home's embedded Redis, not running)."""
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
    if redis_url:
        env["REDIS_URL"] = redis_url
    argv = [sys.executable, "-m", "tlbench", command, "--gpus", "none", "--home", str(home)]
    if command == "up":
        argv += ["--port", str(free_port())]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=BROKER_WAIT_SECONDS + 60)


@pytest.mark.parametrize("command, redis", [("worker", "embedded"), ("worker", "dead port"), ("up", "dead port")])
def test_without_a_broker_nothing_starts_and_one_line_says_why(command, redis, tmp_path):
    home = tmp_path / "home"
    redis_url = f"redis://127.0.0.1:{free_port()}/0" if redis == "dead port" else None

    result = start_without_broker(command, home, redis_url)

    assert result.returncode == 1
    assert "started" not in result.stdout and "running at" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    shown = redis_url or f"redis+socket://{home / 'redis.sock'}"
    assert lines[0].startswith(f"tlbench: cannot reach the broker {shown} within {BROKER_WAIT_SECONDS:g} s: ")
    if redis == "embedded":
        assert lines[0].endswith(f"(start `tlbench redis` or `tlbench up` on {home}, or set REDIS_URL)")
    database = Database(f"sqlite:///{home / 'tlbench.db'}")
    try:
        assert registered_workers(database) == []
    finally:
        database.dispose()


@pytest.mark.parametrize("database_url, says", [
    ("mysql://tlbench:secret@db.example/tlbench",
     "tlbench: cannot use the database mysql://tlbench:***@db.example/tlbench: tlbench works with SQLite and "
     "PostgreSQL, not mysql (sqlite:///path or postgresql://user:password@host/name)"),
    ("postgresql+psycopg2://tlbench:secret@db.example/tlbench",
     "tlbench: cannot use the database postgresql+psycopg2://tlbench:***@db.example/tlbench: its driver is not "
     "installed (No module named 'psycopg2'); postgresql:// uses psycopg 3, which tlbench ships"),
    ("postgresql://tlbench:secret@127.0.0.1:{port}/tlbench",
     "tlbench: cannot use the database postgresql+psycopg://tlbench:***@127.0.0.1:{port}/tlbench: connection "
     "failed: connection to server at \"127.0.0.1\", port {port} failed: Connection refused"),
    ("no url at all, secret", "tlbench: cannot use the database of DATABASE_URL: DATABASE_URL is not a database URL "
                              "(sqlite:///path or postgresql://user:password@host/name)"),
], ids=["mysql", "missing driver", "no server", "not a url"])
@pytest.mark.parametrize("command", ["up", "worker"])
def test_a_database_that_cannot_be_used_is_named_in_one_line(command, database_url, says, tmp_path, monkeypatch,
                                                              capsys):
    port = free_port()
    monkeypatch.setenv("DATABASE_URL", database_url.format(port=port))

    assert main([command, "--gpus", "none", "--home", str(tmp_path / "home")]) == 1

    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(says.format(port=port)), captured.err
    assert "secret" not in captured.err and captured.out == ""
