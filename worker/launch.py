"""Which worker processes to start on this host: one per GPU, pinned, or one on the CPU,
plus one that answers predictions."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from db.settings import load_settings
from worker.celery_app import PREDICT_QUEUE, TRAIN_QUEUE

# The prediction worker keeps its process (and the models it loaded) across requests; it never
# forks after loading TensorFlow, because its one child does all the work.
PREDICT_TASKS_PER_CHILD = 1000
# A GPU worker runs each job in a fresh process: TensorFlow never gives GPU memory back otherwise.
# A CPU worker holds no device memory, so its process runs many jobs and each saves the ~6 s of
# importing and starting TensorFlow (jobs clear Keras' session and measure their own memory peak).
CPU_JOBS_PER_PROCESS = 50
# ...unless it has grown past this (Celery replaces it after the job): TensorFlow and the allocator
# keep some memory from each backbone a process has run.
CPU_PROCESS_MEMORY_LIMIT_KIB = 2 * 2**20


@dataclass(frozen=True)
class ProcessSpec:
    """A child process to start and keep alive: its name, command line and extra environment."""

    name: str
    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA GPU as nvidia-smi lists it."""

    index: str
    name: str
    memory_bytes: int


def detect_gpus() -> list[Gpu]:
    """This host's NVIDIA GPUs (none without nvidia-smi)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total",
                                 "--format=csv,noheader,nounits"],
                                capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [[field.strip() for field in line.split(",")] for line in listed.splitlines() if line.strip()]
    return [Gpu(index, name, int(float(mebibytes)) * 2**20) for index, name, mebibytes in rows]


def choose_devices(gpus: str, cpu_workers: int = 1) -> list[Gpu | None]:
    """GPUs to pin one worker each to, or `cpu_workers` Nones for CPU workers.

    `gpus` is "all" (every GPU found, or the CPU when none), "none", or a list like "0,2".
    """
    if gpus == "none":
        return [None] * cpu_workers
    found = detect_gpus()
    if gpus == "all":
        return found if found else [None] * cpu_workers
    chosen = [part.strip() for part in gpus.split(",") if part.strip()]
    if not chosen or not all(part.isdigit() for part in chosen):
        raise ValueError(f"--gpus must be all, none or a list of GPU indexes like 0,1; got {gpus!r}")
    by_index = {gpu.index: gpu for gpu in found}
    missing = [index for index in chosen if index not in by_index]
    if missing:
        raise ValueError(f"--gpus asks for GPU {', '.join(missing)}, but nvidia-smi lists "
                         f"{', '.join(by_index) or 'none'}")
    return [by_index[index] for index in chosen]


def host_memory_bytes() -> int:
    """Physical memory of this host."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def celery_worker(name: str, queues: list[str], device: Gpu | None, extra: list[str] = ()) -> ProcessSpec:
    """One Celery worker process with one child, pinned to one GPU (or none), that registers itself."""
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app:celery_app", "worker",
            "--pool", "prefork", "--concurrency", "1", "--hostname", f"{name}@%h",
            "--queues", ",".join(queues), "--loglevel", "INFO", "--without-gossip", "--without-mingle", *extra]
    env = {
        # "-1" hides every GPU from a CPU worker, so it never maps a GPU another worker owns.
        "CUDA_VISIBLE_DEVICES": device.index if device else "-1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TLBENCH_DEVICE": f"GPU {device.index}: {device.name}" if device else f"CPU ({os.cpu_count()} cores)",
        "TLBENCH_DEVICE_MEMORY": str(device.memory_bytes if device else host_memory_bytes()),
        "TLBENCH_QUEUES": ",".join(queues),
        **compilation_cache_environment(),
    }
    return ProcessSpec(name=name, argv=argv, env=env)


def compilation_cache_environment() -> dict[str, str]:
    """A persistent XLA compilation cache under the home, so the next job of a backbone skips compiling.

    JAX reads its variable at import; TensorFlow applies its flag to XLA-compiled functions.
    """
    folder = load_settings().cache_root / "xla"
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if "tf_xla_persistent_cache_directory" not in flags:
        flags = f"{flags} --tf_xla_persistent_cache_directory={folder}".strip()
    return {"JAX_COMPILATION_CACHE_DIR": str(folder), "TF_XLA_FLAGS": flags}


def training_worker(device: Gpu | None, number: int) -> ProcessSpec:
    """A training worker pinned to one GPU (a fresh process per job), or a CPU worker (a warm one)."""
    if device:
        return celery_worker(f"gpu{device.index}", [TRAIN_QUEUE], device)
    return celery_worker(f"cpu{number}", [TRAIN_QUEUE], None,
                         ["--max-tasks-per-child", str(CPU_JOBS_PER_PROCESS),
                          "--max-memory-per-child", str(CPU_PROCESS_MEMORY_LIMIT_KIB)])


def worker_processes(gpus: str, cpu_workers: int = 1) -> list[ProcessSpec]:
    """The training workers for this host (one per GPU, or CPU workers) and one prediction worker."""
    training = [training_worker(device, number) for number, device in enumerate(choose_devices(gpus, cpu_workers), 1)]
    predict = celery_worker("predict", [PREDICT_QUEUE], None,
                            ["--max-tasks-per-child", str(PREDICT_TASKS_PER_CHILD)])
    return [*training, predict]


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment plus a child's own variables."""
    return {**os.environ, **extra}
