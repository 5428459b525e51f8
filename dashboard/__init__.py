"""The web app: HTML pages and the JSON API. It never imports TensorFlow."""
from __future__ import annotations

from flask import Flask
from werkzeug.exceptions import HTTPException

from db.session import Database
from db.settings import Settings, ensure_folders, load_settings
from worker.celery_app import make_celery


def create_app(config: dict | None = None) -> Flask:
    """Build the app; `config` may carry TLBENCH_SETTINGS (a Settings) and Flask options."""
    app = Flask(__name__)
    config = dict(config or {})
    settings: Settings = config.pop("TLBENCH_SETTINGS", None) or load_settings()
    app.config.update(MAX_CONTENT_LENGTH=settings.max_upload_bytes, JSON_SORT_KEYS=False)
    app.config.update(config)

    ensure_folders(settings)
    database = Database(settings.database_url)
    database.create_tables()
    app.extensions["tlbench.settings"] = settings
    app.extensions["tlbench.database"] = database
    app.extensions["tlbench.celery"] = make_celery(settings)

    from dashboard import api, pages

    app.register_blueprint(api.api)
    app.register_blueprint(pages.pages)
    app.register_error_handler(HTTPException, api.http_error)
    return app
