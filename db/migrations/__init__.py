"""Alembic migrations of tlbench's schema; applied by db.migrate.upgrade (see docs/database.md)."""
