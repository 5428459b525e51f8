"""Entry point for gunicorn: `gunicorn dashboard.wsgi:app`."""
from gunicorn.errors import AppImportError

from dashboard import create_production_app
from db.session import DatabaseUnusable

try:
    app = create_production_app()
except DatabaseUnusable as error:
    # gunicorn prints this error's message alone and stops, where any other error gets a traceback per worker.
    raise AppImportError(f"tlbench: {error}") from None
