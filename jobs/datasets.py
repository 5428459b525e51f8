"""Scan a folder of labelled images, unpack uploaded zip archives safely, and keep a dataset in a storage
other than the home (stored once under its sha256, fetched once per host)."""

import hashlib
import io
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

from jobs.storage import Storage

IMAGE_SUBSETS = ("train", "validation", "test")
MACOS_METADATA = "__MACOSX"


@dataclass
class ImageFile:
    """One decodable image: its path relative to the dataset root, label and subset."""

    path: str
    label: int
    subset: str | None


@dataclass
class ScannedDataset:
    """What scanning a dataset folder found: classes, usable images and what was skipped."""

    root: Path
    classes: list[str]
    files: list[ImageFile]
    counts: dict[str, int]
    skipped: list[dict]
    sha256: str


class UnsafeArchive(ValueError):
    """An uploaded archive that could write outside its folder or expand beyond limits."""


def _is_ignored_name(name: str) -> bool:
    """Hidden entries and macOS zip metadata are never data."""
    return name.startswith(".") or name == MACOS_METADATA


def _visible_entries(folder: Path) -> list[Path]:
    """The folder's entries, sorted by name, without hidden ones and macOS metadata."""
    return sorted(entry for entry in folder.iterdir() if not _is_ignored_name(entry.name))


def _real_folders(folder: Path) -> list[Path]:
    """The visible sub-folders that are not symbolic links (links are never followed)."""
    return [entry for entry in _visible_entries(folder) if entry.is_dir() and not entry.is_symlink()]


def _has_subset_layout(root: Path) -> bool:
    """True when the top level holds only train/, validation/ and test/ folders, train/ among them."""
    names = {folder.name for folder in _real_folders(root)}
    return "train" in names and names <= set(IMAGE_SUBSETS)


def _class_folders(root: Path) -> list[tuple[str | None, Path]]:
    """(subset, class folder) pairs of the dataset, for either layout."""
    if not _has_subset_layout(root):
        return [(None, folder) for folder in _real_folders(root)]
    return [
        (subset, folder)
        for subset in IMAGE_SUBSETS
        if (root / subset).is_dir()
        for folder in _real_folders(root / subset)
    ]


def _skip_reason(path: Path) -> str | None:
    """Why a path found while scanning is not data, or None if it may be an image."""
    if path.is_symlink():
        return "symbolic link"
    if path.name == MACOS_METADATA:
        return "macOS metadata folder"
    if path.name.startswith("."):
        return "hidden folder" if path.is_dir() else "hidden file"
    return None


def _decode_error(content: bytes) -> str | None:
    """Decode the image fully (verify() misses truncated data); return the error, if any."""
    try:
        with Image.open(io.BytesIO(content)) as image:
            image.load()
    except UnidentifiedImageError:
        return "not a decodable image: unknown format"
    # Pillow's many decoders raise many exception types on bad input.
    except Exception as error:
        return f"not a decodable image: {error}"
    return None


def _walk_class_folder(folder: Path):
    """Yield (path, skip reason or None) for every entry below a class folder, not following links."""
    for directory, subfolders, filenames in os.walk(folder):
        base = Path(directory)
        for name in sorted(subfolders):
            reason = _skip_reason(base / name)
            if reason:
                yield base / name, reason
        subfolders[:] = sorted(name for name in subfolders if not _skip_reason(base / name))
        for name in sorted(filenames):
            yield base / name, _skip_reason(base / name)


def _stray_entries(root: Path) -> list[dict]:
    """Entries above the class folders: files at the root or in train/, validation/ and test/."""
    parents = [root / subset for subset in IMAGE_SUBSETS] if _has_subset_layout(root) else []
    strays = []
    for parent in [root, *parents]:
        for entry in sorted(parent.iterdir()) if parent.is_dir() else []:
            reason = _skip_reason(entry)
            if reason is None and entry.is_dir():
                continue
            relative = entry.relative_to(root).as_posix()
            strays.append({"file": relative, "reason": reason or "file outside a class folder"})
    return strays


def scan_dataset(root: Path) -> ScannedDataset:
    """List the decodable images of a dataset folder, its classes and a content hash."""
    root = Path(root)
    skipped = _stray_entries(root)
    found: list[tuple[str, str, str | None, bytes]] = []
    for subset, folder in _class_folders(root):
        kept_before = len(found)
        for path, reason in _walk_class_folder(folder):
            relative = path.relative_to(root).as_posix()
            content = None if reason else path.read_bytes()
            reason = reason or _decode_error(content)
            if reason:
                skipped.append({"file": relative, "reason": reason})
            else:
                # Keep only the content's digest: a dataset may not fit in memory.
                found.append((relative, folder.name, subset, hashlib.sha256(content).digest()))
        if len(found) == kept_before:
            skipped.append({"file": folder.relative_to(root).as_posix() + "/", "reason": "empty class folder"})
    return _scanned(root, sorted(found), skipped)


def _scanned(root: Path, found: list[tuple[str, str, str | None, bytes]], skipped: list[dict]) -> ScannedDataset:
    """Label the kept images, count them per class and hash (path, class, content digest) in path order."""
    classes = sorted({class_name for _, class_name, _, _ in found})
    label_of = {name: label for label, name in enumerate(classes)}
    dataset_digest = hashlib.sha256()
    for relative, class_name, _, content_digest in found:
        # Length prefixes keep the hash unambiguous across entry boundaries.
        for part in (relative.encode(), class_name.encode(), content_digest):
            dataset_digest.update(len(part).to_bytes(8, "big") + part)
    counts = {name: 0 for name in classes}
    for _, class_name, _, _ in found:
        counts[class_name] += 1
    files = [ImageFile(relative, label_of[class_name], subset) for relative, class_name, subset, _ in found]
    return ScannedDataset(root, classes, files, counts, skipped, dataset_digest.hexdigest())


def _unsafe_entry_reason(entry: zipfile.ZipInfo) -> str | None:
    """Why one archive entry must not be extracted, or None."""
    parts = PurePosixPath(entry.filename.replace("\\", "/")).parts
    if entry.filename.startswith(("/", "\\")) or (parts and parts[0].endswith(":")):
        return "absolute path"
    depth = 0
    for part in parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return "path climbs out of the archive folder"
    if stat.S_ISLNK(entry.external_attr >> 16):
        return "symbolic link"
    return None


def _check_archive(archive: zipfile.ZipFile, max_total_bytes: int, max_ratio: float) -> None:
    """Raise UnsafeArchive before anything is written if any entry or the total is unsafe."""
    entries = archive.infolist()
    for entry in entries:
        reason = _unsafe_entry_reason(entry)
        if reason:
            raise UnsafeArchive(f"unsafe archive entry {entry.filename!r}: {reason}")
    # zipfile never inflates an entry beyond its declared size, so the declared sizes bound the output.
    total = sum(entry.file_size for entry in entries)
    compressed = sum(entry.compress_size for entry in entries)
    if total > max_total_bytes:
        raise UnsafeArchive(f"archive expands to {total} bytes, more than the limit of {max_total_bytes}")
    if total > max_ratio * max(compressed, 1):
        raise UnsafeArchive(f"archive compression ratio {total / max(compressed, 1):.0f} exceeds {max_ratio:.0f}")


def _dataset_root(extracted: Path) -> Path:
    """The folder holding the layout: a lone top folder with sub-folders (a zipped folder) or the top."""
    top = _visible_entries(extracted)
    lone = top[0] if len(top) == 1 and top[0] in _real_folders(extracted) else None
    if lone and lone.name not in IMAGE_SUBSETS and _real_folders(lone):
        return lone
    return extracted


def _extract_checked(zip_path: Path, folder: Path, max_total_bytes: int, max_ratio: float) -> None:
    """Extract the archive into `folder` after checking all of it."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            _check_archive(archive, max_total_bytes, max_ratio)
            archive.extractall(folder)
    except zipfile.BadZipFile as error:
        raise UnsafeArchive(f"not a zip file ({error})") from error


def extract_zip(zip_path: Path, destination: Path, max_total_bytes: int, max_ratio: float = 200.0) -> Path:
    """Check every entry, extract into `destination` (which must not exist) and return the dataset root."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Extract beside the destination, then rename: a failure leaves nothing behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    try:
        _extract_checked(zip_path, staging, max_total_bytes, max_ratio)
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _dataset_root(destination)


# A dataset kept in a storage other than the home: its kept images in one archive under its sha256 (one object
# to store and fetch, however many images; stored as they are, since images are compressed already).
STORED_DATASETS_FOLDER = "datasets"
ARCHIVE_NAME = "dataset.zip"


class DatasetCorrupt(RuntimeError):
    """A dataset fetched from the storage does not hash to the sha256 it was registered with."""


def stored_dataset_key(sha256: str) -> str:
    """Where a dataset's archive is kept in the storage, relative to its root."""
    return f"{STORED_DATASETS_FOLDER}/{sha256}.zip"


def store_dataset(storage: Storage, scanned: ScannedDataset) -> None:
    """Put a scanned dataset's kept images in the storage, one archive under its sha256; nothing is stored twice."""
    key = stored_dataset_key(scanned.sha256)
    if storage.exists(key):
        return
    with tempfile.TemporaryDirectory(prefix="tlbench-dataset-") as folder:
        archive = Path(folder) / ARCHIVE_NAME
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
            for image in scanned.files:
                zipped.write(Path(scanned.root) / image.path, image.path)
        storage.put_file(archive, key)


def fetch_dataset(storage: Storage, dataset: ScannedDataset, cache_root: Path) -> Path:
    """This host's copy of a stored dataset, under cache_root/datasets/<sha256>: downloaded once per host,
    unpacked with the checks of an upload, and checked against its sha256 before it is used."""
    key = stored_dataset_key(dataset.sha256)

    def unpacked_as_registered(folder: Path) -> None:
        archive = folder / ARCHIVE_NAME
        with zipfile.ZipFile(archive) as zipped:
            size = sum(entry.file_size for entry in zipped.infolist())
        _extract_checked(archive, folder, max_total_bytes=size, max_ratio=1.0)
        archive.unlink()
        found = scan_dataset(folder).sha256
        if found != dataset.sha256:
            raise DatasetCorrupt(f"the dataset fetched from {storage.shown}/{key} hashes to {found}, not "
                                 f"{dataset.sha256}: it changed in the storage")

    return storage.fetch_once({key: ARCHIVE_NAME}, Path(cache_root) / STORED_DATASETS_FOLDER / dataset.sha256,
                              unpacked_as_registered)
