"""What a test can ask the database about workers."""
from __future__ import annotations

from sqlalchemy.exc import OperationalError

from config.settings import Liveness
from db import operations as ops
from db.session import Database


def registered_workers(database: Database) -> list[str]:
    """Names of the workers in the database, or none while its tables don't exist yet."""
    try:
        with database.transaction() as session:
            return [worker.name for worker, _ in ops.list_workers(session, Liveness().worker_offline_after)]
    except OperationalError:  # no table yet: nothing registered
        return []
