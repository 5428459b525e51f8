"""Arrays computed once per host and shared by every job: written under a lock, moved into place whole."""

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from filelock import FileLock


def cached_array(path: Path, write: Callable[[Path], None]) -> np.ndarray:
    """The .npy array at `path`, memory-mapped; on a miss, `write(partial_path)` creates it first.

    Workers that miss together wait for the first one instead of computing the same array again, and
    a crash mid-write leaves only a `.partial` file that the next writer replaces.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            partial = path.with_name(path.name + ".partial")
            write(partial)
            os.replace(partial, path)
    return np.load(path, mmap_mode="r")
