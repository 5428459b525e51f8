"""Entry point for gunicorn: `gunicorn dashboard.wsgi:app`."""
from dashboard import create_production_app

app = create_production_app()
