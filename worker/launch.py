"""Which worker processes to start on this host: one per GPU, pinned, or one on the CPU."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from worker.celery_app import TRAIN_QUEUE


@dataclass(frozen=True)
class ProcessSpec:
    """A child process to start and keep alive: its name, command line and extra environment."""

    name: str
    argv: list[str]
    env: dict[str, str]


def detect_gpus() -> list[str]:
    """Indexes of this host's NVIDIA GPUs, as nvidia-smi lists them (none without it)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.splitlines() if line.strip()]


def choose_devices(gpus: str, cpu_workers: int = 1) -> list[str | None]:
    """GPU indexes to pin one worker each to, or `cpu_workers` Nones for CPU workers.

    `gpus` is "all" (every GPU found, or the CPU when none), "none", or a list like "0,2".
    """
    if gpus == "none":
        return [None] * cpu_workers
    if gpus == "all":
        found = detect_gpus()
        return found if found else [None] * cpu_workers
    chosen = [part.strip() for part in gpus.split(",") if part.strip()]
    if not chosen or not all(part.isdigit() for part in chosen):
        raise ValueError(f"--gpus must be all, none or a list of GPU indexes like 0,1; got {gpus!r}")
    return chosen


def worker_process(device: str | None, number: int) -> ProcessSpec:
    """One Celery worker: one process, one job at a time, pinned to one GPU (or none)."""
    name = f"gpu{device}" if device is not None else f"cpu{number}"
    argv = [sys.executable, "-m", "celery", "-A", "worker.celery_app:celery_app", "worker",
            "--pool", "prefork", "--concurrency", "1", "--hostname", f"{name}@%h",
            "--queues", TRAIN_QUEUE, "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    # "-1" hides every GPU from a CPU worker, so it never maps a GPU another worker owns.
    env = {"CUDA_VISIBLE_DEVICES": device if device is not None else "-1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return ProcessSpec(name=name, argv=argv, env=env)


def worker_processes(gpus: str, cpu_workers: int = 1) -> list[ProcessSpec]:
    """The worker processes for this host."""
    return [worker_process(device, number) for number, device in enumerate(choose_devices(gpus, cpu_workers), 1)]


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment plus a child's own variables."""
    return {**os.environ, **extra}
