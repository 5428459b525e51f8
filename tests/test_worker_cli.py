"""`tlbench worker` alone (no web app, no `tlbench up`): it prepares the database and its workers register."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from sqlalchemy.exc import OperationalError

from db import operations as ops
from db.session import Database
from stackutil import wait_until


def registered_workers(database: Database) -> list[str]:
    """Names of the workers in the database, or none while its tables don't exist yet."""
    try:
        with database.transaction() as session:
            return [worker.name for worker, _ in ops.list_workers(session)]
    except OperationalError:  # no table yet: nothing registered
        return []


def test_a_worker_started_on_an_empty_home_registers_itself(tmp_path, redis_socket):
    home = tmp_path / "home"
    env = {**os.environ, "TLBENCH_HOME": str(home), "REDIS_URL": f"redis+socket://{redis_socket}"}
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "tlbench", "worker", "--gpus", "none"], env=env)
    database = Database(f"sqlite:///{home / 'tlbench.db'}")
    try:
        names = wait_until(lambda: len(registered_workers(database)) == 2 and registered_workers(database),
                           60, "the training and prediction workers to register")
        assert sorted(name.split("@")[0] for name in names) == ["cpu1", "predict"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        database.dispose()
