"""The web app: HTML pages and the JSON API. It never imports TensorFlow."""
from __future__ import annotations

import os

from flask import Flask
from werkzeug.exceptions import HTTPException

from config.settings import TOKEN_ENV, Settings, ensure_folders, load_settings
from dashboard.hosts import ALLOWED_HOSTS_ENV, configure_hosts
from db.migrate import upgrade
from db.session import Database
from worker.queues import make_celery

# What `tlbench up` serves through gunicorn: never debug mode (not even with FLASK_DEBUG set), and an
# unhandled error becomes a plain 500 answer rather than propagating with its traceback.
PRODUCTION_CONFIG = {"DEBUG": False, "TESTING": False, "PROPAGATE_EXCEPTIONS": False}


def create_app(config: dict | None = None) -> Flask:
    """Build the app; `config` may carry TLBENCH_SETTINGS (a Settings), TLBENCH_TOKEN, TLBENCH_ALLOWED_HOSTS
    and Flask options.

    TLBENCH_TOKEN and TLBENCH_ALLOWED_HOSTS default to the environment variables of those names; a token
    turns on login, allowed hosts add names to the loopback ones the app answers to.
    """
    app = Flask(__name__)
    config = dict(config or {})
    settings: Settings = config.pop("TLBENCH_SETTINGS", None) or load_settings()
    token = config.pop(TOKEN_ENV, os.environ.get(TOKEN_ENV))
    allowed_hosts = config.pop(ALLOWED_HOSTS_ENV, os.environ.get(ALLOWED_HOSTS_ENV))
    app.config.update(MAX_CONTENT_LENGTH=settings.max_upload_bytes, JSON_SORT_KEYS=False)
    app.config.update(config)

    ensure_folders(settings)
    upgrade(settings.database_url)  # creates the schema on an empty database; harmless when it is current
    database = Database(settings.database_url)
    app.extensions["tlbench.settings"] = settings
    app.extensions["tlbench.database"] = database
    app.extensions["tlbench.celery"] = make_celery(settings.redis_url)

    from dashboard import api, auth, pages

    configure_hosts(app, allowed_hosts)
    auth.configure_auth(app, token, settings)
    app.register_blueprint(api.api)
    app.register_blueprint(pages.pages)
    app.register_error_handler(HTTPException, api.http_error)
    return app


def create_production_app(settings: Settings | None = None) -> Flask:
    """The app as gunicorn serves it for `tlbench up` (see dashboard/wsgi.py)."""
    return create_app({**PRODUCTION_CONFIG, "TLBENCH_SETTINGS": settings})
