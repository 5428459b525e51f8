"""Which worker processes to start on this host: one per GPU, pinned, or CPU workers, plus one that
answers predictions; each under a name unique on the host (worker/names.py) and serving its pools."""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from config.settings import Settings
from worker.queues import PREDICT_QUEUE, TRAIN_QUEUE
from worker.devices import Gpu, detect_gpus
from worker.names import HeldName, NameLocks, WorkerRefused

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
# TensorFlow's thread pools, which a CPU worker's share of the host's cores sizes (unless set already).
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


@dataclass(frozen=True)
class ProcessSpec:
    """A child process to start and keep alive: its name, command line, extra environment, and the
    descriptors it inherits (the lock that holds a worker's name: see worker/names.py)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()


def choose_devices(gpus: str, cpu_workers: int = 1, found: list[Gpu] | None = None) -> list[Gpu | None]:
    """GPUs to pin one worker each to, or `cpu_workers` Nones for CPU workers.

    `gpus` is "all" (every GPU found, or the CPU when none), "none", or a list like "0,2";
    `found` is this host's GPUs (default: detect them).
    """
    if gpus == "none":
        return [None] * cpu_workers
    found = detect_gpus() if found is None else found
    if gpus == "all":
        return list(found) if found else [None] * cpu_workers
    chosen = [part.strip() for part in gpus.split(",") if part.strip()]
    if not chosen or not all(part.isdigit() for part in chosen):
        raise ValueError(f"--gpus must be all, none or a list of GPU indexes like 0,1; got {gpus!r}")
    by_index = {gpu.index: gpu for gpu in found}
    missing = [index for index in chosen if index not in by_index]
    if missing:
        raise ValueError(f"--gpus asks for GPU {', '.join(missing)}, but this host has "
                         f"{', '.join(by_index) or 'none'} (NVML or nvidia-smi)")
    return [by_index[index] for index in dict.fromkeys(chosen)]


def host_memory_bytes() -> int:
    """Physical memory of this host."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def celery_worker(held: HeldName, queues: list[str], device: Gpu | None, cache_root: Path,
                  extra: Sequence[str] = ()) -> ProcessSpec:
    """One Celery worker process with one child, pinned to one GPU (or none), that registers itself.

    It inherits the lock of its name, so the name stays taken while it (or its child) lives.
    """
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app:celery_app", "worker",
            "--pool", "prefork", "--concurrency", "1", "--hostname", held.full,
            "--queues", ",".join(queues), "--loglevel", "INFO", "--without-gossip", "--without-mingle", *extra]
    env = {
        # "-1" hides every GPU from a CPU worker, so it never maps a GPU another worker owns. CUDA
        # numbers GPUs in PCI bus order like NVML and nvidia-smi only when asked to.
        "CUDA_VISIBLE_DEVICES": device.index if device else "-1",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TLBENCH_DEVICE": f"GPU {device.index}: {device.name}" if device else f"CPU ({os.cpu_count()} cores)",
        "TLBENCH_DEVICE_MEMORY": str(device.memory_bytes if device else host_memory_bytes()),
        "TLBENCH_GPU_INDEX": device.index if device else "",
        "TLBENCH_QUEUES": ",".join(queues),
        **compilation_cache_environment(cache_root / "xla"),
    }
    return ProcessSpec(name=held.full, argv=argv, env=env, pass_fds=(held.fd,))


def compilation_cache_environment(folder: Path) -> dict[str, str]:
    """A persistent XLA compilation cache in `folder`, so the next job of a backbone skips compiling.

    JAX reads its variable at import; TensorFlow applies its flag to XLA-compiled functions.
    """
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if "tf_xla_persistent_cache_directory" not in flags:
        flags = f"{flags} --tf_xla_persistent_cache_directory={folder}".strip()
    return {"JAX_COMPILATION_CACHE_DIR": str(folder), "TF_XLA_FLAGS": flags}


def training_worker(held: HeldName, device: Gpu | None, cache_root: Path, pools: Sequence[str] = (),
                    cpu_workers: int = 1) -> ProcessSpec:
    """A training worker pinned to one GPU (a fresh process per job), or a CPU worker (a warm one).

    It serves the default pool and `pools`, each a Celery queue. A CPU worker started with others
    gets its share of the cores for TensorFlow's thread pools (see cpu_threads).
    """
    queues = list(dict.fromkeys([TRAIN_QUEUE, *pools]))
    if device:
        return celery_worker(held, queues, device, cache_root)
    spec = celery_worker(held, queues, None, cache_root, ["--max-tasks-per-child", str(CPU_JOBS_PER_PROCESS),
                                              "--max-memory-per-child", str(CPU_PROCESS_MEMORY_LIMIT_KIB)])
    spec.env.update(cpu_threads(cpu_workers))
    return spec


def cpu_threads(cpu_workers: int) -> dict[str, str]:
    """TensorFlow threads for each of `cpu_workers` CPU workers: the host's cores shared out evenly.

    By default each TensorFlow process sizes its pools to every core, and CPU workers side by side
    then fight over them (measured in docs/operations.md). Variables already set in the environment win.
    """
    if any(name in os.environ for name in THREAD_VARIABLES):
        return {}
    threads = str(max(1, (os.cpu_count() or 1) // max(1, cpu_workers)))
    return dict.fromkeys(THREAD_VARIABLES, threads)


def worker_processes(settings: Settings, gpus: str, cpu_workers: int = 1, pools: Sequence[str] = (),
                     names: NameLocks | None = None, found: list[Gpu] | None = None) -> list[ProcessSpec]:
    """The training workers for this host (one per GPU, or CPU workers) and one prediction worker.

    Each gets a name no other live worker of this host and cluster has (worker/names.py): `--gpus all`
    skips GPUs that already have a tlbench worker and refuses when none is left; a GPU asked for by
    index must be free. The names' locks stay with the calling process and the workers it starts.
    """
    # The names' locks keep each name unique among live workers: the invariant is stated in worker/names.py.
    names = names or NameLocks(settings.database_url)
    held: list[HeldName] = []
    try:
        devices = claim_devices(choose_devices(gpus, cpu_workers, found), names, held, skip_busy=gpus == "all")
        training = [training_worker(name, device, settings.cache_root, pools, cpu_workers) for name, device in devices]
        predict_name = names.next_free("predict")
        held.append(predict_name)
        predict = celery_worker(predict_name, [PREDICT_QUEUE], None, settings.cache_root,
                                ["--max-tasks-per-child", str(PREDICT_TASKS_PER_CHILD)])
    except BaseException:
        for name in held:
            name.release()
        raise
    return [*training, predict]


def claim_devices(devices: list[Gpu | None], names: NameLocks, held: list[HeldName],
                  skip_busy: bool) -> list[tuple[HeldName, Gpu | None]]:
    """A name for each device's worker (gpu<index>, or the next free cpu<n>), appended to `held` as taken."""
    claimed, busy = [], []
    for device in devices:
        name = names.gpu(device) if device else names.next_free("cpu")
        if name is None:
            busy.append(device)
            continue
        held.append(name)
        claimed.append((name, device))
    if busy and (not skip_busy or not claimed):
        taken = "; ".join(f"GPU {gpu.index} already has a tlbench worker on this host, started by "
                          f"{names.gpu_holder(gpu)}" for gpu in busy)
        raise WorkerRefused(f"{taken}. A GPU runs one job at a time: stop that worker first, or pick other GPUs "
                            "with --gpus (or --gpus none for a CPU worker)")
    if busy:
        print(f"tlbench: skipping GPU {', '.join(gpu.index for gpu in busy)}: already served by a tlbench worker "
              "on this host", file=sys.stderr, flush=True)
    return claimed


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment plus a child's own variables."""
    return {**os.environ, **extra}
