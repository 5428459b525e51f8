"""Arrays computed once per host and shared by every job: written under a lock, moved into place whole,
and kept under a size cap by evicting the least recently used entries that no process is using.

An entry is one `.npy` file anywhere under the cache root. Three locks guard it:
- `<entry>.lock` (filelock, exclusive): one process writes a missing entry while the others wait;
- the entry file itself, flock-shared by every process that holds the array: an entry is in use
  as long as the array cached_array returned (or a view of it) is alive;
- `<root>/.eviction.lock`: one eviction at a time, so two never free the same room twice.
Eviction takes an entry's write lock and an exclusive flock on it without waiting, so an entry
being written or used is skipped, never waited for; the kernel drops a dead process's locks.
"""

import fcntl
import math
import os
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

CACHE_MAX_GB_VARIABLE = "TLBENCH_CACHE_MAX_GB"
DEFAULT_CACHE_MAX_GB = 20
BYTES_PER_GB = 2**30
ENTRY_SUFFIX = ".npy"
PARTIAL_SUFFIX = ".partial"
EVICTION_LOCK = ".eviction.lock"


def cache_max_bytes(environ: Mapping[str, str] | None = None) -> int:
    """The cache's cap in bytes, from TLBENCH_CACHE_MAX_GB (gigabytes, default 20)."""
    env = os.environ if environ is None else environ
    value = env.get(CACHE_MAX_GB_VARIABLE) or str(DEFAULT_CACHE_MAX_GB)
    try:
        gigabytes = float(value)
    except ValueError:
        gigabytes = math.nan
    if not math.isfinite(gigabytes) or gigabytes <= 0:
        raise ValueError(f"{CACHE_MAX_GB_VARIABLE}: must be a positive number of gigabytes, not {value!r}")
    return max(1, int(gigabytes * BYTES_PER_GB))


def _write_lock(entry: Path) -> FileLock:
    """The lock a process holds while it checks for or writes this entry."""
    return FileLock(str(entry) + ".lock")


def _hold(entry: Path) -> int:
    """Mark the entry in use by this process (a shared flock on its file); returns the descriptor to close."""
    descriptor = os.open(entry, os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_SH)
    return descriptor


def _mark_used(entry: Path) -> None:
    """Record this use as the entry's most recent: its access time (the modified time stays when it was written)."""
    os.utime(entry, ns=(time.time_ns(), entry.stat().st_mtime_ns))


def cached_array(path: Path, write: Callable[[Path], None], root: Path, max_bytes: int | None = None) -> np.ndarray:
    """The .npy array at `path` (under the cache `root`), memory-mapped; on a miss, `write(partial_path)` creates it.

    Workers that miss together wait for the first one instead of computing the same array again, and
    a crash mid-write leaves only a `.partial` file that the next writer replaces or eviction removes.
    The entry counts as in use until the returned array (and every view of it) is gone. Adding an
    entry evicts least recently used ones, not in use, until the cache fits `max_bytes` (default:
    TLBENCH_CACHE_MAX_GB).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _write_lock(path):
        added = not path.exists()
        if added:
            partial = path.with_name(path.name + PARTIAL_SUFFIX)
            write(partial)
            os.replace(partial, path)
        # Held before the write lock is released: eviction needs both, so it cannot slip in between.
        descriptor = _hold(path)
        _mark_used(path)
    try:
        array = np.load(path, mmap_mode="r")
    except BaseException:
        os.close(descriptor)
        raise
    weakref.finalize(array, os.close, descriptor)
    if added:
        evict_least_recently_used(Path(root), cache_max_bytes() if max_bytes is None else max_bytes)
    return array


def _cache_entries(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every entry under root with its stat, skipping any that vanish meanwhile."""
    for entry in root.rglob("*" + ENTRY_SUFFIX):
        try:
            yield entry, entry.stat()
        except FileNotFoundError:
            continue


def _remove_unless_busy(entry: Path) -> bool:
    """Delete the entry unless a process is writing or using it; never waits. True when it is gone."""
    try:
        with _write_lock(entry).acquire(blocking=False):
            return _unlink_unless_used(entry)
    except Timeout:
        return False  # being written right now


def _unlink_unless_used(entry: Path) -> bool:
    """Delete the entry unless some process holds it (a shared flock on it); True when it is gone."""
    try:
        descriptor = os.open(entry, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        entry.unlink()
        return True
    finally:
        os.close(descriptor)


def _remove_orphaned_partials(root: Path) -> None:
    """Delete `.partial` files whose writer is gone (a crash mid-write); leave those being written."""
    for partial in root.rglob("*" + ENTRY_SUFFIX + PARTIAL_SUFFIX):
        try:
            with _write_lock(partial.with_suffix("")).acquire(blocking=False):
                partial.unlink(missing_ok=True)
        except Timeout:
            continue


def evict_least_recently_used(root: Path, max_bytes: int) -> list[Path]:
    """Delete least recently used entries not in use until the cache under root fits max_bytes; returns them.

    Entries in use stay even when the cache is still over its cap: a running job never loses its data.
    """
    root.mkdir(parents=True, exist_ok=True)
    evicted = []
    with FileLock(str(root / EVICTION_LOCK)):
        _remove_orphaned_partials(root)
        found = sorted(_cache_entries(root), key=lambda item: item[1].st_atime_ns)
        total = sum(stat.st_size for _, stat in found)
        for entry, stat in found:
            if total <= max_bytes:
                break
            if _remove_unless_busy(entry):
                total -= stat.st_size
                evicted.append(entry)
    return evicted
