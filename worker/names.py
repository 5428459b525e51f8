"""Worker names unique on this host (cpu1, cpu2, gpu0, predict1...), each held by a lock file for as long
as the worker lives.

INVARIANT: no two live workers of one cluster (one database) share a name. worker/runner.py (through
db.operations.requeue_jobs_held_by) trusts it: a running job that names a worker is taken to belong to that worker's
one process, so a second live worker under the same name could take over, or re-queue, a job the
first one is still training. Names are `<short>@<hostname>`: the host part keeps hosts apart, and the
locks here keep the workers of one host apart, whichever `tlbench up` or `tlbench worker` started them.

How: the process that starts workers (`tlbench up`, `tlbench worker`) takes an exclusive flock(2) on
`<short>.lock` before it starts the worker, and hands the locked descriptor down to the worker process
(and so to its pool child), so the lock is held until every one of them has exited. The kernel drops
a flock when the last descriptor closes, so a killed process never leaves a stale lock, and a worker
that `tlbench` restarts after a crash keeps its name (and takes back the jobs it held).

Where: a folder on the host's own disk (flock over NFS is not to be trusted), one per user
(`$TMPDIR/tlbench-locks-<uid>`, or TLBENCH_LOCK_DIR), so other users cannot tamper with it.
- CPU and prediction workers' names live in a sub-folder per cluster, keyed by a hash of the database
  URL: the names must be unique where they meet, in one database; two stacks with their own databases
  (two homes, say, or two test runs) are separate clusters and may each have a cpu1.
- A GPU's lock (`gpu-<UUID>.lock`) sits in the per-user folder itself, for every cluster: a GPU is a
  resource of the host, and two workers of any clusters on one GPU would run two jobs on it. It is
  keyed by the GPU's UUID, which is the same inside and outside containers, so containers that share
  the folder (docker-compose.yml's `locks` volume) never put two workers on one GPU either.
"""
from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import shlex
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from worker.devices import Gpu

LOCK_DIR_ENV = "TLBENCH_LOCK_DIR"


class WorkerRefused(RuntimeError):
    """A worker cannot start: the GPU it asks for already has a tlbench worker on this host."""


def host_name() -> str:
    """The host part of every worker name (a container's hostname is its id, so each container differs)."""
    return socket.gethostname()


def default_lock_root() -> Path:
    """TLBENCH_LOCK_DIR, or a folder of this user's under the system temp folder."""
    configured = os.environ.get(LOCK_DIR_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / f"tlbench-locks-{os.getuid()}"


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
    """Hands out worker names on this host; each stays taken while its descriptor is open anywhere."""

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

    @staticmethod
    def _folder(folder: Path) -> Path:
        """Create a lock folder only this user can write to; refuse one that someone else owns."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if folder.stat().st_uid != os.getuid():
            raise WorkerRefused(f"the lock folder {folder} belongs to another user; set {LOCK_DIR_ENV} "
                                "to a folder of your own")
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
