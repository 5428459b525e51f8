"""Predictions for the web app: check and keep the uploaded image, ask a worker, wait for its answer.

The web process never loads a model or TensorFlow: a worker on the prediction queue does.
"""
from __future__ import annotations

import uuid
from pathlib import Path

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from PIL import Image, UnidentifiedImageError
from werkzeug.datastructures import FileStorage

from db.settings import Settings
from worker.celery_app import PREDICT_QUEUE, PREDICT_TASK

# The first prediction of a worker loads TensorFlow and every model; later ones take milliseconds.
PREDICT_TIMEOUT_SECONDS = 120


class ImageRejected(ValueError):
    """The upload is missing or is not an image Pillow can decode."""


class PredictionTimeout(RuntimeError):
    """No prediction worker answered in time."""


def store_prediction_image(settings: Settings, upload: FileStorage | None) -> Path:
    """Save the upload where workers can read it, after checking that it decodes as an image."""
    if upload is None or not upload.filename:
        raise ImageRejected("file: is required (an image)")
    folder = settings.home / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}{Path(upload.filename).suffix.lower()[:10]}"
    upload.save(path)
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, ValueError) as error:
        path.unlink(missing_ok=True)
        raise ImageRejected(f"file: {upload.filename!r} is not a decodable image ({error})") from None
    return path


def run_prediction(celery: Celery, image_path: Path, jobs: list[dict]) -> list[dict]:
    """Ask a prediction worker for every job's probabilities and wait for the answer."""
    result = celery.send_task(PREDICT_TASK, args=[str(image_path), jobs], queue=PREDICT_QUEUE)
    try:
        return result.get(timeout=PREDICT_TIMEOUT_SECONDS)
    except CeleryTimeout:
        result.revoke()
        raise PredictionTimeout(f"no prediction worker answered within {PREDICT_TIMEOUT_SECONDS} s; "
                                "is a worker serving the predict queue running?") from None
    finally:
        result.forget()
