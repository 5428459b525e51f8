"""Predictions for the web app: check and keep the uploaded image, ask a worker, wait for its answer.

The web process never loads a model or TensorFlow: a worker on the prediction queue does. It answers
at once when no such worker is alive, and never holds a web thread for long.
"""
from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from PIL import Image, UnidentifiedImageError
from werkzeug.datastructures import FileStorage

from config.settings import Settings
from db import operations as ops
from db.session import Database
from worker.queues import PREDICT_QUEUE, PREDICT_TASK

# A warm worker answers in milliseconds; its first prediction loads TensorFlow and the models (~10 s here).
PREDICT_TIMEOUT_SECONDS = 30
# Under the home, and in the storage: uploaded images waiting for a prediction worker.
PREDICTIONS_FOLDER = "predictions"
# A live worker answers a ping in milliseconds, even while it predicts (its main process replies).
PING_SECONDS = 1.0
# Far below Pillow's own limits (89 MP warns, 179 MP refuses): the models see at most a few hundred pixels
# a side, an ordinary photo has 12 to 24 MP, and a 40 MP RGB image already decodes to 120 MB in a web thread.
MAX_IMAGE_PIXELS = 40_000_000


class ImageRejected(ValueError):
    """The upload is missing, is not an image Pillow can decode, or is too large."""


class PredictionUnavailable(RuntimeError):
    """No prediction worker is alive to ask."""


class PredictionTimeout(RuntimeError):
    """No prediction worker answered in time."""


def store_prediction_image(settings: Settings, upload: FileStorage | None) -> Path:
    """Save the upload where workers can read it, after checking that it decodes as an image; whatever fails,
    nothing stays on disk."""
    if upload is None or not upload.filename:
        raise ImageRejected("file: is required (an image)")
    folder = settings.home / PREDICTIONS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}{Path(upload.filename).suffix.lower()[:10]}"
    try:
        upload.save(path)
        check_image(path, upload.filename)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def check_image(path: Path, filename: str) -> None:
    """Refuse an image Pillow can't decode or that has too many pixels; messages name the upload, never
    the file it was saved to (Pillow's own errors quote that path)."""
    try:
        decoded = _decode_unless_too_large(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        decoded = False
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageRejected(f"file: {filename!r} is not a decodable image (PNG, JPEG, GIF, BMP, TIFF, "
                            "WebP...)") from None
    if not decoded:
        raise ImageRejected(_too_many_pixels(filename))


def _decode_unless_too_large(path: Path) -> bool:
    """Decode the image unless its header says it has more than MAX_IMAGE_PIXELS; whether it was decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused, not just logged
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                return False
            image.load()
            return True


def _too_many_pixels(filename: str) -> str:
    """The refusal of an image over MAX_IMAGE_PIXELS."""
    return (f"file: {filename!r} has more than {MAX_IMAGE_PIXELS // 1_000_000} megapixels; "
            "send a smaller image (the models see a few hundred pixels a side)")


def require_prediction_worker(celery: Celery, database: Database, offline_after: timedelta) -> None:
    """Return once a registered prediction worker answers a ping; raise PredictionUnavailable within about a second."""
    names = online_prediction_workers(database, offline_after)
    if names and celery.control.ping(destination=names, timeout=PING_SECONDS, limit=1):
        return
    raise PredictionUnavailable("no prediction worker is running: start one with `tlbench worker` "
                                "(or `tlbench up`), which serves the predict queue")


def online_prediction_workers(database: Database, offline_after: timedelta) -> list[str]:
    """Names of the workers on the predict queue that beat within `offline_after`."""
    with database.transaction() as session:
        return [worker.name for worker, _ in ops.list_workers(session, offline_after)
                if PREDICT_QUEUE in worker.queues and ops.worker_status(worker) == "online"]


@contextmanager
def shared_image(settings: Settings, path: Path) -> Iterator[str]:
    """The key under which the prediction workers find an uploaded image (saved in the home's predictions/):
    the file itself when the storage is the home, else a copy put in the storage; gone from both afterwards."""
    key = f"{PREDICTIONS_FOLDER}/{path.name}"
    try:
        if not settings.storage_is_home:
            settings.storage().put_file(path, key)
        yield key
    finally:
        path.unlink(missing_ok=True)
        if not settings.storage_is_home:
            settings.storage().delete(key)


def run_prediction(celery: Celery, image_key: str, jobs: list[dict],
                   timeout: float = PREDICT_TIMEOUT_SECONDS) -> list[dict]:
    """Ask a prediction worker for every job's probabilities and wait for the answer."""
    result = celery.send_task(PREDICT_TASK, args=[image_key, jobs], queue=PREDICT_QUEUE)
    try:
        return result.get(timeout=timeout)
    except CeleryTimeout:
        result.revoke()
        raise PredictionTimeout(f"no prediction worker answered within {timeout:g} s; the prediction workers "
                                "may all be busy or stuck (GET /api/v1/workers lists them)") from None
    finally:
        result.forget()
