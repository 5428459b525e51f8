"""Turning an uploaded zip or an allowed folder into a scanned, registered dataset."""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from werkzeug.datastructures import FileStorage

from db.settings import Settings
from jobs.datasets import ScannedDataset, UnsafeArchive, extract_zip, scan_dataset

# An archive may not expand to more than this many times the upload limit.
EXTRACTED_BYTES_PER_UPLOADED_BYTE = 8


class DatasetRejected(ValueError):
    """The dataset can't be used; the message says why and names the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def store_upload(settings: Settings, upload: FileStorage) -> tuple[Path, ScannedDataset]:
    """Save and safely extract an uploaded zip, then scan it; on any refusal nothing stays on disk."""
    settings.upload_root.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    archive = settings.upload_root / f".upload-{token}.zip"
    destination = settings.upload_root / token
    upload.save(archive)
    try:
        root = extract_zip(archive, destination,
                           max_total_bytes=settings.max_upload_bytes * EXTRACTED_BYTES_PER_UPLOADED_BYTE)
    except UnsafeArchive as refusal:
        raise DatasetRejected("file", str(refusal)) from refusal
    finally:
        archive.unlink(missing_ok=True)
    try:
        return root, usable_scan(root, "file")
    except DatasetRejected:
        shutil.rmtree(destination, ignore_errors=True)
        raise


def resolve_allowed_folder(settings: Settings, requested: str) -> Path:
    """The real folder behind a requested path, if it lies under an allowed data root."""
    try:
        folder = Path(requested).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        raise DatasetRejected("path", f"{requested!r} does not exist") from None
    if not any(folder.is_relative_to(root) for root in settings.data_roots):
        roots = ", ".join(str(root) for root in settings.data_roots)
        raise DatasetRejected("path", f"{requested!r} is not under an allowed data root ({roots}; "
                                      "set TLBENCH_DATA_ROOTS)")
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
