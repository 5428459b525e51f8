"""Where tlbench keeps its state, read once from the environment."""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from jobs.cache import DEFAULT_CACHE_MAX_GB, cache_max_bytes
from jobs.storage import Storage, is_object_store

# The shared secret that turns on login and bearer tokens (dashboard/auth.py); the CLI sends it.
TOKEN_ENV = "TLBENCH_TOKEN"
DEFAULT_HOME = "~/.tlbench"
ARTIFACTS_FOLDER = "artifacts"
DEFAULT_CHECKPOINT_STORE_SECONDS = 60.0
DEFAULT_MAX_UPLOAD_MB = 1024
# A Unix socket path must fit in 108 bytes; a deep home gets its socket in the temp folder.
MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class Liveness:
    """How often each process says it is alive, and how long a silence means it is gone (docs/reliability.md)."""

    # A worker's beat (worker/registry.py), which also runs the recovery of lost jobs.
    worker_beat_seconds: float = 10.0
    # A running job's or trial's beat, from its training process (worker/runner.py).
    job_beat_seconds: float = 10.0
    # A worker silent this long is shown offline, and counts for no estimate or prediction.
    worker_offline_after_seconds: float = 30.0
    # A running job (or helper's trial) silent this long lost its process and is re-queued: TLBENCH_JOB_LOST_AFTER.
    job_lost_after_seconds: float = 60.0
    # A queued job nobody claimed this long after its message was sent is sent again (the send may have
    # failed): TLBENCH_QUEUED_RESEND_AFTER.
    queued_resend_after_seconds: float = 60.0

    @property
    def worker_offline_after(self) -> timedelta:
        """worker_offline_after_seconds, for comparing with heartbeat times."""
        return timedelta(seconds=self.worker_offline_after_seconds)


@dataclass(frozen=True)
class Settings:
    """Paths and addresses shared by the web app, the workers and the CLI."""

    home: Path
    database_url: str
    redis_url: str
    embedded_redis: bool
    data_roots: tuple[Path, ...]
    max_upload_bytes: int
    liveness: Liveness = Liveness()
    # Decoded images and features kept under cache/; least recently used ones go past this (jobs/cache.py).
    cache_max_bytes: int = DEFAULT_CACHE_MAX_GB * 2**30
    # Where datasets and artifacts are kept (TLBENCH_STORAGE): the home itself, or an object store's URL.
    storage_url: str = ""
    # With a storage other than the home, a running job's checkpoint is stored at most this often
    # (TLBENCH_CHECKPOINT_STORE_SECONDS): a job resumed on another host goes back at most this long.
    checkpoint_store_seconds: float = DEFAULT_CHECKPOINT_STORE_SECONDS

    def storage(self) -> Storage:
        """The storage of datasets and artifacts (jobs/storage.py); the home when TLBENCH_STORAGE is unset."""
        return Storage(self.storage_url or str(self.home))

    @property
    def artifact_root(self) -> Path:
        """Folder holding one sub-folder of artifacts per job."""
        return self.home / ARTIFACTS_FOLDER

    @property
    def upload_root(self) -> Path:
        """Folder holding the datasets uploaded as zips."""
        return self.home / "datasets"

    @property
    def cache_root(self) -> Path:
        """Folder holding decoded-image caches, shared by the workers of this host."""
        return self.home / "cache"

    def job_artifact_dir(self, job_id: int) -> Path:
        """The folder of this host where a job's artifacts are written (and kept, when the storage is the home)."""
        return self.home / job_artifact_key(job_id)

    @property
    def storage_is_home(self) -> bool:
        """Whether datasets and artifacts are kept in the home itself (the default): nothing is copied anywhere."""
        if not self.storage_url:
            return True
        return not is_object_store(self.storage_url) and Path(self.storage_url).expanduser().resolve() == self.home


def job_artifact_key(job_id: int) -> str:
    """Where a job's artifacts are kept, relative to the storage's root (and to the home)."""
    return f"{ARTIFACTS_FOLDER}/job-{job_id}"


def load_settings(environ: dict | None = None) -> Settings:
    """Build the settings from TLBENCH_* variables, DATABASE_URL and REDIS_URL."""
    env = os.environ if environ is None else environ
    home = Path(env.get("TLBENCH_HOME") or DEFAULT_HOME).expanduser().resolve()
    redis_url = env.get("REDIS_URL", "")
    socket = embedded_redis_socket(home)
    return Settings(
        home=home,
        database_url=env.get("DATABASE_URL") or f"sqlite:///{home / 'tlbench.db'}",
        redis_url=redis_url or f"redis+socket://{socket}",
        embedded_redis=not redis_url,
        data_roots=_data_roots(env.get("TLBENCH_DATA_ROOTS", ""), home),
        max_upload_bytes=int(env.get("TLBENCH_MAX_UPLOAD_MB") or DEFAULT_MAX_UPLOAD_MB) * 2**20,
        liveness=_liveness(env),
        # The workers read the same variable through jobs/ (which imports nothing of ours).
        cache_max_bytes=cache_max_bytes(env),
        storage_url=env.get("TLBENCH_STORAGE") or str(home),
        checkpoint_store_seconds=float(env.get("TLBENCH_CHECKPOINT_STORE_SECONDS") or DEFAULT_CHECKPOINT_STORE_SECONDS),
    )


def _liveness(env) -> Liveness:
    """The default timers, with the two that TLBENCH_JOB_LOST_AFTER and TLBENCH_QUEUED_RESEND_AFTER may change."""
    default = Liveness()
    return replace(default,
                   job_lost_after_seconds=float(env.get("TLBENCH_JOB_LOST_AFTER") or default.job_lost_after_seconds),
                   queued_resend_after_seconds=float(env.get("TLBENCH_QUEUED_RESEND_AFTER")
                                                     or default.queued_resend_after_seconds))


def embedded_redis_socket(home: Path) -> Path:
    """Where the embedded Redis server listens for this home."""
    socket = home / "redis.sock"
    if len(str(socket)) <= MAX_SOCKET_PATH:
        return socket
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"tlbench-{digest}.sock"


def _data_roots(value: str, home: Path) -> tuple[Path, ...]:
    """Folders under which datasets may be registered by path (os.pathsep-separated)."""
    roots = [Path(part).expanduser().resolve() for part in value.split(os.pathsep) if part]
    return tuple(roots) if roots else (home / "data",)


def ensure_folders(settings: Settings) -> None:
    """Create the state folders that every process expects."""
    for folder in (settings.home, settings.artifact_root, settings.upload_root, settings.cache_root):
        folder.mkdir(parents=True, exist_ok=True)
