"""The cache's size cap: adding an entry evicts the least recently used ones, never one in use."""

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from config.settings import load_settings
from jobs.cache import cache_max_bytes, cached_array
from jobs.images import load_uint8_images

ENTRY_VALUES = 1024  # uint8 values per test entry; the .npy header adds 128 bytes
GIB = 2**30


def write_array(fill: int):
    """A writer for cached_array: a 1 KiB array of `fill`."""

    def write(partial: Path) -> None:
        with partial.open("wb") as destination:
            np.save(destination, np.full(ENTRY_VALUES, fill, dtype=np.uint8))

    return write


def entry_bytes(tmp_path) -> int:
    """The size one test entry takes on disk."""
    probe = tmp_path / "probe"
    write_array(0)(probe)
    return probe.stat().st_size


def add(root: Path, name: str, room_for: int, fill: int = 0) -> np.ndarray:
    """Use the entry `name` of the cache at root, whose cap has room for `room_for` test entries."""
    cap = room_for * entry_bytes(root.parent)
    return cached_array(root / f"{name}.npy", write_array(fill), root=root, max_bytes=cap)


def entries(root: Path) -> list[str]:
    """The names of the cached entries, without their extension."""
    return sorted(path.stem for path in root.rglob("*.npy"))


def test_adding_past_the_cap_evicts_the_least_recently_used_entry(tmp_path):
    root = tmp_path / "cache"
    add(root, "a", room_for=2)
    add(root, "b", room_for=2)
    gc.collect()
    add(root, "a", room_for=2)  # a hit: a is now used more recently than b
    gc.collect()
    add(root, "c", room_for=2)
    assert entries(root) == ["a", "c"]


def test_a_hit_reads_the_entry_without_writing_it_again(tmp_path):
    root = tmp_path / "cache"
    add(root, "a", room_for=2, fill=7)
    gc.collect()
    again = cached_array(root / "a.npy", lambda partial: pytest.fail("an entry on disk was written again"),
                         root=root, max_bytes=GIB)
    assert (again == 7).all()


def test_an_entry_in_use_stays_past_the_cap_and_goes_once_released(tmp_path):
    root = tmp_path / "cache"
    in_use = add(root, "a", room_for=1, fill=1)
    add(root, "b", room_for=1)
    assert entries(root) == ["a", "b"]
    assert (in_use == 1).all()
    del in_use
    gc.collect()
    add(root, "c", room_for=1)
    assert entries(root) == ["c"]


HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    from jobs.cache import cached_array

    root = Path(sys.argv[1])
    def write(partial):
        with partial.open("wb") as destination:
            np.save(destination, np.zeros(1024, dtype=np.uint8))
    held = cached_array(root / "a.npy", write, root=root, max_bytes=2**30)
    print("holding", flush=True)
    sys.stdin.readline()
""")


def test_an_entry_another_process_uses_is_not_evicted(tmp_path):
    root = tmp_path / "cache"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        assert holder.stdout.readline() == "holding\n"
        add(root, "b", room_for=1)
        assert entries(root) == ["a", "b"]
    finally:
        holder.communicate("done\n", timeout=30)
    gc.collect()
    add(root, "c", room_for=1)
    assert entries(root) == ["c"]


def test_a_partial_file_left_by_a_crash_goes_and_one_being_written_stays(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    (root / "crashed.npy.partial").write_bytes(b"half")
    (root / "writing.npy.partial").write_bytes(b"half")
    with FileLock(str(root / "writing.npy") + ".lock"):
        add(root, "a", room_for=10)
    assert sorted(path.name for path in root.glob("*.partial")) == ["writing.npy.partial"]


def test_the_cap_comes_from_tlbench_cache_max_gb_default_20():
    assert cache_max_bytes({}) == 20 * GIB
    assert cache_max_bytes({"TLBENCH_CACHE_MAX_GB": "0.5"}) == GIB // 2
    assert load_settings({"TLBENCH_HOME": "/tmp/x"}).cache_max_bytes == 20 * GIB
    assert load_settings({"TLBENCH_HOME": "/tmp/x", "TLBENCH_CACHE_MAX_GB": "0.5"}).cache_max_bytes == GIB // 2


@pytest.mark.parametrize("value", ["-1", "0", "lots", "nan"])
def test_a_cap_that_is_not_a_positive_number_is_refused_naming_the_variable(value):
    with pytest.raises(ValueError, match="TLBENCH_CACHE_MAX_GB"):
        cache_max_bytes({"TLBENCH_CACHE_MAX_GB": value})
    with pytest.raises(ValueError, match="TLBENCH_CACHE_MAX_GB"):
        load_settings({"TLBENCH_HOME": "/tmp/x", "TLBENCH_CACHE_MAX_GB": value})


def tiny_cap(monkeypatch) -> None:
    """A cap of TLBENCH_CACHE_MAX_GB small enough that any entry not in use goes when one is added."""
    monkeypatch.setenv("TLBENCH_CACHE_MAX_GB", str(1 / GIB))


def test_decoded_images_obey_the_cap_from_the_environment(small_dataset, tmp_path, monkeypatch):
    tiny_cap(monkeypatch)
    cache = tmp_path / "cache"
    load_uint8_images(small_dataset.root, small_dataset.files, 16, cache, small_dataset.sha256)
    gc.collect()
    load_uint8_images(small_dataset.root, small_dataset.files, 24, cache, small_dataset.sha256)
    assert [path.name for path in cache.glob("*.npy")] == [f"{small_dataset.sha256}-24px.npy"]


def test_a_running_job_keeps_its_entries_and_the_next_job_evicts_them(small_dataset, tmp_path, monkeypatch,
                                                                       make_reporter):
    from jobs.spec import JobSpec
    from jobs.training import run_job

    tiny_cap(monkeypatch)
    cache = tmp_path / "cache"

    def job(image_size: int) -> list[str]:
        spec = JobSpec(backbone="VGG16", image_size=image_size, epochs=1, batch_size=8, learning_rate=1e-3,
                       patience=10, weights="none")
        run_job(spec, small_dataset, tmp_path / f"job-{image_size}", cache, make_reporter())
        # No gc.collect(): a job's arrays go, and its entries are free, as soon as run_job returns.
        return sorted(path.name.split("-")[1] for path in cache.rglob("*.npy"))

    # Adding its features evicted nothing: the job was still using its decoded images.
    assert job(32) == ["32px.npy", "VGG16"]
    assert job(40) == ["40px.npy", "VGG16"]
    assert [path.name for path in cache.rglob("*.npy") if "VGG16" in path.name][0].startswith(
        f"{small_dataset.sha256}-VGG16-40px")
