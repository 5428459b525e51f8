"""Weights files a benchmark may start from: a file under the data roots, or one uploaded through the API.

Any other path is refused with one message, whether or not it exists, so the API says nothing about
the server's files.
"""
from __future__ import annotations

import re
import uuid
from pathlib import Path

from werkzeug.datastructures import FileStorage

from config.settings import Settings
from dashboard.dataset_registry import under_data_roots

UPLOAD_PREFIX = "upload:"
# Keras picks its loader by the name: ".weights.h5" is Keras 3's own format, any other ".h5" the legacy one.
WEIGHTS_SUFFIXES = (".weights.h5", ".h5")
UPLOADED_NAME = re.compile(r"[0-9a-f]{32}(\.weights)?\.h5")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
WEIGHTS_REFUSED = ('must be "imagenet", "none", the id of an uploaded weights file (POST /api/v1/weights) '
                   "or the path of a file under TLBENCH_DATA_ROOTS")


class WeightsRejected(ValueError):
    """The uploaded file is missing or is not a weights file."""


def weights_folder(settings: Settings) -> Path:
    """Where uploaded weights files are kept."""
    return settings.home / "weights"


def resolve_weights(settings: Settings, requested: str) -> Path | None:
    """The file a `weights` value names, if a benchmark may read it: an upload's id, or a file under the data roots."""
    if requested.startswith(UPLOAD_PREFIX):
        path = _uploaded(settings, requested.removeprefix(UPLOAD_PREFIX))
    else:
        path = under_data_roots(settings, requested)
    return path if path is not None and path.is_file() else None


def _uploaded(settings: Settings, name: str) -> Path | None:
    """The uploaded file an id names; only names this module gives out, so nothing can climb out."""
    return weights_folder(settings) / name if UPLOADED_NAME.fullmatch(name) else None


def store_weights_upload(settings: Settings, upload: FileStorage | None) -> tuple[str, int]:
    """Keep an uploaded HDF5 weights file; returns the id a benchmark names it by, and its size."""
    if upload is None or not upload.filename:
        raise WeightsRejected("file: is required (an HDF5 weights file named .h5 or .weights.h5)")
    suffix = _weights_suffix(upload.filename)
    if suffix is None or upload.stream.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
        raise WeightsRejected(f"file: {upload.filename!r} is not a weights file (HDF5, named .h5 or .weights.h5)")
    upload.stream.seek(0)
    folder = weights_folder(settings)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{uuid.uuid4().hex}{suffix}"
    staging = folder / f".{name}.partial"
    try:
        upload.save(staging)
        staging.rename(folder / name)  # a half-written file never gets a name a benchmark could use
    finally:
        staging.unlink(missing_ok=True)
    return UPLOAD_PREFIX + name, (folder / name).stat().st_size


def _weights_suffix(filename: str) -> str | None:
    """The suffix an upload keeps (lower case), or None when its name is not a weights file's."""
    lowered = filename.lower()
    return next((suffix for suffix in WEIGHTS_SUFFIXES if lowered.endswith(suffix)), None)
