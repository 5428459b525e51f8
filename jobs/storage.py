"""Where datasets and artifacts are kept: a local folder (one host, the default) or an object store such as
S3 or MinIO (`s3://bucket/prefix`), behind one small interface on fsspec.

Keys are relative paths ("artifacts/job-3/model.keras"). Credentials and endpoint come from the usual
environment variables of the store's client (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL
for S3); they are never part of a message: `shown` is the URL without them.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import fsspec
from filelock import FileLock

PARTIAL_SUFFIX = ".partial"
# Written last into a local copy that fetch_once made: a folder without it is not whole.
FETCHED_MARKER = ".fetched"
# Secrets a store's client reads from the environment: no message of ours may repeat them.
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
# A probe object written, read back and deleted to prove the storage works before any job needs it.
PROBE_PREFIX = ".tlbench-probe-"


class StorageUnusable(RuntimeError):
    """The storage cannot be read or written; the message names it (without credentials) and says why."""


def shown_url(url: str) -> str:
    """The URL without any user or password it carries, for messages and logs."""
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def is_object_store(url: str) -> bool:
    """Whether the URL names an object store rather than a local folder."""
    scheme = urlsplit(url).scheme
    return bool(scheme) and scheme != "file" and len(scheme) > 1  # "C:" on Windows is a drive, not a scheme


class Storage:
    """Files under one root of one filesystem, addressed by relative keys."""

    def __init__(self, url: str):
        self.url = url
        self.shown = shown_url(url)
        self.is_local = not is_object_store(url)
        if self.shown != url:  # a client may repeat its URL in any error: credentials stay out of it
            raise StorageUnusable(f"cannot use the storage {self.shown}: give its credentials in the environment "
                                  "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), not in the URL")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as error:  # an unknown scheme, or its package is not installed
            raise StorageUnusable(f"cannot use the storage {self.shown}: {error}") from None
        self.root = self.root.rstrip("/")

    def path(self, key: str) -> str:
        """The filesystem path of a key."""
        return f"{self.root}/{key.lstrip('/')}"

    def local_path(self, key: str) -> Path:
        """The file of a key on a local storage (the default layout under TLBENCH_HOME)."""
        if not self.is_local:
            raise ValueError(f"{self.shown} is not a local folder")
        return Path(self.path(key))

    def put_file(self, source: Path, key: str) -> None:
        """Store a local file under `key`, whole: a reader sees the old object, or the new one, never a part."""
        if self.is_local:
            target = self.local_path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}")
            self.fs.put_file(str(source), str(partial))
            os.replace(partial, target)
        else:  # an object store makes a new object visible only once it is complete
            self.fs.put_file(str(source), self.path(key))

    def put_bytes(self, data: bytes, key: str) -> None:
        """Store a few bytes under `key`, whole."""
        with tempfile.NamedTemporaryFile() as source:
            source.write(data)
            source.flush()
            self.put_file(Path(source.name), key)

    def get_tree(self, prefix: str, folder: Path) -> list[str]:
        """Copy every object below `prefix` into `folder` (each file moved into place whole); the names copied."""
        names = sorted(self.files(prefix))
        for name in names:
            self.get_file(f"{prefix.rstrip('/')}/{name}", folder / name)
        return names

    def get_file(self, key: str, target: Path) -> None:
        """Copy an object to a local file, moved into place whole."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}")
        try:
            self.fs.get_file(self.path(key), str(partial))
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)

    def fetch_once(self, files: dict[str, str], target: Path, check: Callable[[Path], None] | None = None) -> Path:
        """A local copy of some objects (key -> path under `target`), downloaded once per host: one process
        downloads while the others wait, `check` may refuse the copy, and it is moved into place whole."""
        if (target / FETCHED_MARKER).is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{target}.lock"):
            if (target / FETCHED_MARKER).is_file():
                return target
            partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}")
            try:
                targets = [partial / relative for relative in files.values()]
                for folder in {target.parent for target in targets}:
                    folder.mkdir(parents=True, exist_ok=True)
                # One call for every file: an object store's client fetches them concurrently.
                self.fs.get([self.path(key) for key in files], [str(target) for target in targets])
                if check is not None:
                    check(partial)
                (partial / FETCHED_MARKER).touch()
                shutil.rmtree(target, ignore_errors=True)  # what an interrupted fetch left, without its marker
                os.replace(partial, target)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        return target

    def open(self, key: str) -> IO[bytes]:
        """An object opened for reading (a context manager, or for a caller that closes it, like a streamed
        HTTP answer); FileNotFoundError when there is none."""
        return self.fs.open(self.path(key), "rb")

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        return self.fs.isfile(self.path(key))

    def files(self, prefix: str) -> dict[str, int]:
        """Every object below `prefix`: its key relative to the prefix, and its size in bytes."""
        base = self.path(prefix).rstrip("/")
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        return {name[len(base) + 1:]: int(info.get("size") or 0) for name, info in found.items()
                if info.get("type") == "file" and name.startswith(base + "/") and not name.endswith(PARTIAL_SUFFIX)}

    def delete(self, key: str) -> None:
        """Remove an object, or every object below a prefix (nothing when there is none)."""
        base = self.path(key).rstrip("/")
        if self.fs.exists(base):
            self.fs.rm(base, recursive=True)

    def check(self) -> None:
        """Write, read back and delete a small object; StorageUnusable, naming the storage and why, if any fails."""
        key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        payload = key.encode()
        try:
            if self.is_local:
                Path(self.root).mkdir(parents=True, exist_ok=True)
            self.fs.pipe_file(self.path(key), payload)
            if self.fs.cat_file(self.path(key)) != payload:
                raise OSError("an object read back differs from the one written")
            self.fs.rm_file(self.path(key))
        except Exception as error:  # the client's errors vary by store: any of them means "can't use it"
            raise StorageUnusable(f"cannot read and write the storage {self.shown}: {_one_line(error)}") from None


class FolderMirror:
    """Keeps a local folder's copy in a storage up to date as the folder changes (a running job's checkpoint,
    for a worker on another host to resume from): each sync stores the files that changed since the last one,
    the state files last, so a stored state never names a file not stored yet, and drops the ones that went."""

    def __init__(self, storage: Storage, folder: Path, prefix: str, state_names: tuple[str, ...],
                 every_seconds: float = 0.0):
        self.storage, self.folder, self.prefix = storage, Path(folder), prefix.rstrip("/")
        self.state_names, self.every_seconds = state_names, every_seconds
        self.stored: dict[str, tuple[int, int]] = {}  # name -> (size, modified) as last stored
        # time.monotonic() of the last sync, or of the start: a job shorter than every_seconds stores nothing
        # before its end (resumed elsewhere, it starts over, having lost less than that).
        self.synced_at = time.monotonic()

    def sync_if_due(self) -> None:
        """Sync once `every_seconds` have passed since the last sync (or the start): a checkpoint's upload costs
        bandwidth, and a job resumed from the store goes back at most that long."""
        if time.monotonic() - self.synced_at >= self.every_seconds:
            self.sync()

    def sync(self, prune: bool = False) -> None:
        """Store what changed, state files last; then remove what this mirror stored and the folder no longer has
        (with `prune`, every stored file the folder does not have, whoever stored it). StorageUnusable, naming the
        file (or the folder, while listing it) and the store's answer, when the store fails."""
        key = f"{self.prefix}/"
        try:
            now = self._signatures()
            if prune:
                self.stored.update({name: (-1, -1) for name in self.storage.files(self.prefix)
                                    if name not in self.stored})
            changed = [name for name, signature in now.items() if self.stored.get(name) != signature]
            for name in sorted(changed, key=lambda name: (Path(name).name in self.state_names, name)):
                key = f"{self.prefix}/{name}"
                self.storage.put_file(self.folder / name, key)
                self.stored[name] = now[name]
            for name in [name for name in self.stored if name not in now]:
                key = f"{self.prefix}/{name}"
                self.storage.delete(key)
                del self.stored[name]
        except Exception as error:  # the client's errors vary by store
            raise StorageUnusable(f"could not store {key} in {self.storage.shown}: {_one_line(error)}") from None
        self.synced_at = time.monotonic()

    def _signatures(self) -> dict[str, tuple[int, int]]:
        """Each file under the folder (relative name) with its size and modification time."""
        found = {}
        for path in self.folder.rglob("*"):
            if path.is_file() and not path.is_symlink() and not path.name.endswith(PARTIAL_SUFFIX):
                try:
                    status = path.stat()
                except FileNotFoundError:  # went while listed: the next sync drops its stored copy
                    continue
                found[path.relative_to(self.folder).as_posix()] = (status.st_size, status.st_mtime_ns)
        return found


def _one_line(error: Exception) -> str:
    """An error's message on one line, with its kind when it says nothing, and no secret of the environment."""
    return scrubbed(" ".join(str(error).split()) or type(error).__name__)


def scrubbed(message: str, environ=None) -> str:
    """The message with the value of every secret variable of the environment replaced by ***."""
    env = os.environ if environ is None else environ
    for name in SECRET_VARIABLES:
        if env.get(name):
            message = message.replace(env[name], "***")
    return message
