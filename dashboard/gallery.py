"""The test images behind a job's answer, as the API, the page and the report show them: a dataset image by
its index (only ever a file of the dataset's list, inside its folder), shrunk to a JPEG, and a trial's
per-image test predictions read from its predictions.npz."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from config.settings import job_artifact_key
from jobs.datasets import ImageFile
from jobs.images import thumbnail
from jobs.storage import Storage
from jobs.training import PREDICTIONS_FILE, TRIALS_FOLDER

THUMBNAIL_QUALITY = 85


class ImageUnavailable(LookupError):
    """The index names no image of the dataset, or its file can no longer be read from inside the dataset."""


def dataset_image_path(root: Path, manifest: list, index: int) -> Path:
    """The file of the dataset's index-th image, resolved; ImageUnavailable unless it lies inside `root`."""
    if index >= len(manifest):
        raise ImageUnavailable(f"the dataset has {len(manifest)} images, numbered 0 to {len(manifest) - 1}")
    path = root / ImageFile(*manifest[index]).path
    try:
        resolved = path.resolve(strict=True)
    except OSError:
        resolved = None
    # Not one a link, or a changed file list, leads out of the dataset's folder.
    if resolved is None or not resolved.is_relative_to(root.resolve()):
        raise ImageUnavailable(f"image {index} can no longer be read")
    return resolved


def jpeg_thumbnail(path: Path, side: int) -> bytes:
    """The image as a JPEG no larger than side x side; ImageUnavailable when it no longer decodes."""
    try:
        image = thumbnail(path, side)
    except OSError:
        raise ImageUnavailable(f"{path.name} is no longer a readable image") from None
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=THUMBNAIL_QUALITY)
    return encoded.getvalue()


def trial_predictions(storage: Storage, job_id: int, trial: int, labels: list[int]) -> list[dict] | None:
    """Per test image of the trial: its dataset index, true and predicted class and the probability the model
    gave its prediction; None when the trial has no predictions file (not finished, or no test set)."""
    try:
        with storage.open(f"{job_artifact_key(job_id)}/{TRIALS_FOLDER}/{trial:02d}/{PREDICTIONS_FILE}") as stream:
            saved_bytes = stream.read()
    except FileNotFoundError:
        return None
    with np.load(io.BytesIO(saved_bytes)) as saved:
        index, predicted = saved["index"], saved["predicted"]
        confidence = saved["probabilities"].astype(np.float64)[np.arange(len(index)), predicted]
    return [{"index": int(image), "true": labels[image], "predicted": int(guess), "confidence": round(float(p), 4)}
            for image, guess, p in zip(index, predicted, confidence)]
