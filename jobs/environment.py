"""The reproducibility record of a job: what ran it, where, and on what, so a result can be traced and rerun.

Keras and its backend are imported inside the functions (this module is imported with jobs.training,
which must not load TensorFlow at import time).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np

from jobs.spec import JobSpec, Trial

CHECKOUT = Path(__file__).resolve().parents[1]
GIT_SECONDS = 5
# The library each Keras backend runs on, whose version the record names.
BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def reproducibility_record(spec: JobSpec, trials: list[Trial], dataset_sha256: str, splits: dict,
                           precision: str) -> dict:
    """Versions, device, host, precision, seeds and data identity of the job that is running in this process."""
    import keras

    backend = keras.backend.backend()
    return {
        "tlbench": installed_version("tlbench"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "keras_backend": backend,
        "backend_version": installed_version(BACKEND_PACKAGES.get(backend, backend)),
        "numpy": np.__version__,
        "device": device(backend),
        "host": socket.gethostname(),
        "precision": precision,
        "seeds": {"benchmark": spec.seed, "trials": [trial.seed for trial in trials]},
        "dataset_sha256": dataset_sha256,
        "splits": splits,
    }


def installed_version(package: str) -> str | None:
    """The installed distribution's version, or None when it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit(folder: Path = CHECKOUT) -> str | None:
    """The commit of the checkout tlbench runs from, with "-dirty" when files differ from it; None outside one."""
    if not (folder / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=GIT_SECONDS, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=GIT_SECONDS, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None  # no git on this host, or not a readable repository
    return f"{commit}-dirty" if changed else commit


def device(backend: str) -> dict:
    """The accelerator Keras trains on (its model), or the CPU (its model and the cores this process may use)."""
    accelerator = _accelerator_name(backend)
    if accelerator:
        return {"kind": "GPU", "name": accelerator}
    return {"kind": "CPU", "name": cpu_model(), "cores": len(os.sched_getaffinity(0))}


def _accelerator_name(backend: str) -> str | None:
    """The first GPU's model as the backend names it, or None when it sees none."""
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else None
    if backend == "jax":
        import jax

        accelerators = [found for found in jax.devices() if found.platform != "cpu"]
        return accelerators[0].device_kind if accelerators else None
    return None


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo on Linux, else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
