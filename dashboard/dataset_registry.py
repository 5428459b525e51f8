"""Turning an uploaded zip or an allowed folder into a scanned, registered dataset."""
from __future__ import annotations

import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

from werkzeug.datastructures import FileStorage

from config.settings import Settings
from jobs.datasets import ScannedDataset, UnsafeArchive, extract_zip, scan_dataset, store_dataset
from jobs.storage import scrubbed

# An archive may not expand to more than this many times the upload limit.
EXTRACTED_BYTES_PER_UPLOADED_BYTE = 8


class DatasetUnstored(RuntimeError):
    """The storage did not take a dataset being registered; the message names it and says why."""


class DatasetRejected(ValueError):
    """The dataset can't be used; the message says why and names the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def store_upload(settings: Settings, upload: FileStorage) -> tuple[Path, ScannedDataset]:
    """Save and safely extract an uploaded zip, then scan it; if any step fails nothing stays on disk."""
    settings.upload_root.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    archive = settings.upload_root / f".upload-{token}.zip"
    destination = settings.upload_root / token
    try:
        upload.save(archive)
        root = extract_zip(archive, destination,
                           max_total_bytes=settings.max_upload_bytes * EXTRACTED_BYTES_PER_UPLOADED_BYTE)
    except UnsafeArchive as refusal:
        raise DatasetRejected("file", str(refusal)) from refusal
    finally:
        archive.unlink(missing_ok=True)
    with removed_unless_registered(settings, root, uploaded=True):
        return root, usable_scan(root, "file")


@contextmanager
def removed_unless_registered(settings: Settings, root: Path, uploaded: bool):
    """Delete an uploaded dataset's folder if the block fails (refused scan, failed insert): nothing is left behind.

    A folder registered by path belongs to its owner and is never touched.
    """
    try:
        yield
    except BaseException:
        if uploaded:
            shutil.rmtree(_upload_folder(settings, root), ignore_errors=True)
        raise


def _upload_folder(settings: Settings, root: Path) -> Path:
    """The folder one upload was extracted into (its dataset root may be a folder inside it)."""
    return settings.upload_root / root.relative_to(settings.upload_root).parts[0]


def under_data_roots(settings: Settings, requested: str) -> Path | None:
    """The real path (links followed) behind a requested one if it lies under an allowed data root, else None.

    It may not exist: whether a path outside the roots exists is never looked at, so no answer can tell.
    """
    try:
        real = Path(requested).expanduser().resolve()
    except (OSError, RuntimeError):  # a link loop, or ~user of an unknown user
        return None
    return real if any(real.is_relative_to(root) for root in settings.data_roots) else None


def resolve_allowed_folder(settings: Settings, requested: str) -> Path:
    """The real folder behind a requested path, if it lies under an allowed data root."""
    folder = under_data_roots(settings, requested)
    if folder is None:
        roots = ", ".join(str(root) for root in settings.data_roots)
        raise DatasetRejected("path", f"{requested!r} is not under an allowed data root ({roots}; "
                                      "set TLBENCH_DATA_ROOTS)")
    if not folder.exists():
        raise DatasetRejected("path", f"{requested!r} does not exist")
    if not folder.is_dir():
        raise DatasetRejected("path", f"{requested!r} is not a folder")
    return folder


def usable_scan(root: Path, field: str) -> ScannedDataset:
    """Scan a folder and insist it can train a classifier: images in at least two classes."""
    scanned = scan_dataset(root)
    if not scanned.files:
        raise DatasetRejected(field, "contains no decodable images in class sub-folders")
    if len(scanned.classes) < 2:
        raise DatasetRejected(field, f"has one class ({scanned.classes[0]}); a classifier needs at least two")
    return scanned


def keep_in_storage(settings: Settings, scanned: ScannedDataset) -> None:
    """Store a dataset being registered in the storage, when that is not the home, so that workers on any host
    can fetch it; DatasetUnstored, naming the storage and why, if it can't be."""
    if settings.storage_is_home:
        return
    try:
        store_dataset(settings.storage(), scanned)
    except Exception as error:  # the store's client raises its own errors
        raise DatasetUnstored(f"the dataset could not be stored in {settings.storage().shown}: "
                              f"{scrubbed(' '.join(str(error).split()))}") from None


def dataset_fields(name: str, root: Path, uploaded: bool, scanned: ScannedDataset) -> dict:
    """The columns of a new Dataset row."""
    return {
        "name": name,
        "root": str(root),
        "uploaded": uploaded,
        "classes": scanned.classes,
        "counts": scanned.counts,
        "skipped": scanned.skipped,
        "sha256": scanned.sha256,
        "manifest": [[image.path, image.label, image.subset] for image in scanned.files],
    }
