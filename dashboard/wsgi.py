"""Entry point for gunicorn: `gunicorn dashboard.wsgi:app`."""
from dashboard import create_app

app = create_app()
