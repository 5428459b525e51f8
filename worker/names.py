"""Worker names unique on this host (cpu1, cpu2, gpu0, predict1...), each held by a lock file for as long
as the worker lives. Start a worker only under a name NameLocks handed out, and hand its HeldName.fd down
to the worker process: the open descriptor is what keeps the name taken (the invariant: NameLocks).
How and why: docs/architecture.md, "Why some things are built as they are".
"""
from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import shlex
import socket
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from worker.devices import Gpu

LOCK_DIR_ENV = "TLBENCH_LOCK_DIR"
# Lock folders are read, written and entered by their user only.
PRIVATE_FOLDER_MODE = 0o700


class WorkerRefused(RuntimeError):
    """A worker cannot start: the GPU it asks for already has a tlbench worker on this host."""


def host_name() -> str:
    """The host part of every worker name (a container's hostname is its id, so each container differs)."""
    return socket.gethostname()


def default_lock_root() -> Path:
    """TLBENCH_LOCK_DIR, or a folder of this user's under the system temp folder."""
    configured = os.environ.get(LOCK_DIR_ENV)
    return Path(configured) if configured else own_lock_root()


def own_lock_root() -> Path:
    """The lock folder tlbench names itself when TLBENCH_LOCK_DIR is not set: one per user, on the host's disk."""
    return Path(tempfile.gettempdir()) / f"tlbench-locks-{os.getuid()}"


@dataclass
class HeldName:
    """A short worker name (cpu1, gpu0, predict1) and the descriptor that holds its lock."""

    name: str
    fd: int
    host: str

    @property
    def full(self) -> str:
        """The worker's name as Celery, the database and the API know it: cpu1@host."""
        return f"{self.name}@{self.host}"

    def release(self) -> None:
        """Let the name go (the worker never started, or a test is done with it)."""
        os.close(self.fd)


class NameLocks:
    """Hands out worker names on this host; each stays taken while its descriptor is open anywhere.

    INVARIANT: no two live workers of one cluster (one database) share a name. Names are
    `<short>@<hostname>`: the host part keeps hosts apart, and these locks keep apart the workers of one
    host, whichever `tlbench up` or `tlbench worker` started them. worker/runner.py (through
    db.operations.requeue_jobs_held_by) trusts it: a running job that names a worker is taken to belong
    to that worker's one process, so a second live worker under the same name could re-queue, or take
    over, a job the first one is still training.
    """

    def __init__(self, database_url: str, root: Path | None = None, host: str | None = None):
        self.root = root or default_lock_root()
        self.cluster = self.root / hashlib.sha256(database_url.encode()).hexdigest()[:16]
        self.host = host or host_name()

    def gpu(self, gpu: Gpu) -> HeldName | None:
        """Take a GPU for a new worker, named gpu<index>; None when a tlbench worker already has it."""
        fd = _try_lock(self._folder(self.root) / _gpu_lock_name(gpu))
        return HeldName(f"gpu{gpu.index}", fd, self.host) if fd is not None else None

    def gpu_holder(self, gpu: Gpu) -> str:
        """Who holds a GPU, as its lock file says (for the refusal's message)."""
        try:
            return (self.root / _gpu_lock_name(gpu)).read_text().strip() or "an unknown process"
        except OSError:
            return "an unknown process"

    def next_free(self, prefix: str) -> HeldName:
        """The first free name of `prefix`1, `prefix`2... in this cluster, taken."""
        folder = self._folder(self.cluster)
        for number in itertools.count(1):
            fd = _try_lock(folder / f"{prefix}{number}.lock")
            if fd is not None:
                return HeldName(f"{prefix}{number}", fd, self.host)
        raise AssertionError("unreachable")

    def _folder(self, folder: Path) -> Path:
        """A lock folder (the root, or a cluster's folder in it) that only this user can open; refuse one that
        someone else owns.

        The root is made first, so that neither folder is left with the umask's mode. A folder tlbench names
        itself (a cluster's, or the root when TLBENCH_LOCK_DIR is not set) that is open to others is closed
        to this user; a TLBENCH_LOCK_DIR that already exists keeps the mode its owner gave it.
        """
        for level in dict.fromkeys((self.root, folder)):
            level.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
            status = level.stat()
            if status.st_uid != os.getuid():
                raise WorkerRefused(f"the lock folder {level} belongs to another user; set {LOCK_DIR_ENV} "
                                    "to a folder of your own")
            named_by_tlbench = level != self.root or self.root == own_lock_root()
            if named_by_tlbench and stat.S_IMODE(status.st_mode) & ~PRIVATE_FOLDER_MODE:
                os.chmod(level, PRIVATE_FOLDER_MODE)
        return folder


def _gpu_lock_name(gpu: Gpu) -> str:
    """A GPU's lock file: by UUID where the driver told it (by index otherwise)."""
    return f"gpu-{gpu.uuid}.lock" if gpu.uuid else f"gpu{gpu.index}.lock"


def _try_lock(path: Path) -> int | None:
    """An exclusive, non-blocking flock on `path`: its descriptor, or None when someone holds it.

    The descriptor is not inheritable: only the worker it is handed to (subprocess pass_fds) gets it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} ({_command_line()})\n".encode(), 0)
    return fd


def _command_line() -> str:
    """This process's command, as the user typed it when it is tlbench's."""
    program = sys.argv[0]
    if Path(program).name in ("tlbench", "__main__.py"):
        program = "tlbench"
    return shlex.join([program, *sys.argv[1:]])
