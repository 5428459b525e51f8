"""Predict one image with a finished job's saved model: class probabilities, top class, time taken."""

import functools
import json
import time
from pathlib import Path

import numpy as np

from jobs.images import decode_image

LOADED_MODELS = 8


@functools.lru_cache(maxsize=LOADED_MODELS)
def _load_model(model_path: str, modified: float):
    """Load a model.keras in safe mode and warm it up, so later timings measure inference only.

    `modified` is part of the cache key: a retried job's new model replaces the old one.
    """
    import keras

    model = keras.saving.load_model(model_path, safe_mode=True)
    size = model.input_shape[1]
    model.predict_on_batch(np.zeros((1, size, size, 3), dtype=np.uint8))
    return model


def predict_image(artifact_dir: Path, image_path: Path) -> dict:
    """The job's class probabilities for the image, its top class and the milliseconds inference took."""
    model_path = Path(artifact_dir) / "model.keras"
    model = _load_model(str(model_path), model_path.stat().st_mtime)
    labels = json.loads((Path(artifact_dir) / "labels.json").read_text())
    pixels = decode_image(Path(image_path), model.input_shape[1])[np.newaxis]
    started = time.perf_counter()
    probabilities = np.asarray(model.predict_on_batch(pixels))[0]
    milliseconds = (time.perf_counter() - started) * 1000
    return {
        "probabilities": {label: float(p) for label, p in zip(labels, probabilities)},
        "top": labels[int(np.argmax(probabilities))],
        "ms": milliseconds,
    }
