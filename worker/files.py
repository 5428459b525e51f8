"""Where a worker finds what it reads: in the home itself when that is the storage, else in this host's copies
fetched from the storage (each once, under the cache, never shared between hosts)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

from config.settings import Settings, job_artifact_key

# What a prediction needs of a finished job's artifacts.
MODEL_FILES = ("model.keras", "labels.json")
MODELS_FOLDER = "models"


def model_folder(settings: Settings, job_id: int, attempt: int) -> Path:
    """A folder holding the job's saved model and labels: its artifact folder, or this host's copy of the
    attempt's files (a retried job's next attempt gets a copy of its own)."""
    if settings.storage_is_home:
        return settings.job_artifact_dir(job_id)
    key = job_artifact_key(job_id)
    return settings.storage().fetch_once({f"{key}/{name}": name for name in MODEL_FILES},
                                         settings.cache_root / MODELS_FOLDER / f"job-{job_id}-attempt-{attempt}")


@contextmanager
def local_image(settings: Settings, key: str) -> Iterator[Path]:
    """The file of an image the web app stored under `key` (a prediction's upload), for as long as it is used."""
    if settings.storage_is_home:
        yield settings.home / key
        return
    with TemporaryDirectory(prefix="tlbench-predict-") as folder:
        path = Path(folder) / Path(key).name
        settings.storage().get_file(key, path)
        yield path
