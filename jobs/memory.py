"""The peak memory of one job, even when its process ran other jobs before it."""

import ctypes
import ctypes.util
import gc
import resource
from pathlib import Path

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
# Writing 5 to clear_refs resets the process's peak resident set size (Linux 4.0 and later).
RESET_PEAK_RSS = "5"


def release_free_memory() -> None:
    """Give memory the previous job freed back to the system, so it doesn't count towards this job."""
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "malloc_trim"):  # glibc keeps freed memory in its arenas until asked
            libc.malloc_trim(0)


def reset_peak_memory() -> None:
    """Start measuring the peak from now (a no-op where the kernel does not offer it)."""
    release_free_memory()
    try:
        CLEAR_REFS.write_text(RESET_PEAK_RSS)
    except OSError:
        pass


def peak_memory_bytes() -> int:
    """Peak resident memory since the last reset (or since the process started)."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
