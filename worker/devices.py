"""This host's GPUs and how busy the host is: NVML (pynvml) where a driver answers, else nvidia-smi;
psutil for the CPU and memory.

Used by the launcher (which GPUs to pin a worker to) and by each worker's heartbeat (its metrics).
Nothing here imports TensorFlow: the heartbeat runs in the Celery worker's main process, which forks
the pool children that train.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone

import psutil

NVIDIA_SMI_SECONDS = 20
MIB = 2**20


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA GPU: its index (NVML's and nvidia-smi's, in PCI bus order), name, memory and UUID.

    The UUID names the physical GPU wherever it is seen from: inside a container the GPU Docker
    hands out is always index 0, whichever it is.
    """

    index: str
    name: str
    memory_bytes: int
    uuid: str | None = None


def detect_gpus() -> list[Gpu]:
    """This host's NVIDIA GPUs: NVML if it initialises, else nvidia-smi, else none."""
    found = _gpus_from_nvml()
    return found if found is not None else gpus_from_nvidia_smi()


def _gpus_from_nvml() -> list[Gpu] | None:
    """The GPUs NVML lists; None when NVML is not available (no driver, no library)."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(Gpu(str(index), _text(pynvml.nvmlDeviceGetName(handle)),
                            int(pynvml.nvmlDeviceGetMemoryInfo(handle).total), _text(pynvml.nvmlDeviceGetUUID(handle))))
        return gpus
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


def gpus_from_nvidia_smi(executable: str = "nvidia-smi") -> list[Gpu]:
    """The GPUs nvidia-smi lists (none when it is missing or fails)."""
    if not shutil.which(executable):
        return []
    try:
        query = ["--query-gpu=index,uuid,memory.total,name", "--format=csv,noheader,nounits"]
        listed = subprocess.run([executable, *query], capture_output=True, text=True, timeout=NVIDIA_SMI_SECONDS,
                                check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    # The name comes last: it is the one field that might hold a comma.
    rows = [[field.strip() for field in line.split(",", 3)] for line in listed.splitlines() if line.strip()]
    return [Gpu(index, name, int(float(mebibytes)) * MIB, uuid) for index, uuid, mebibytes, name in rows]


def gpu_metrics(index: str) -> dict | None:
    """One GPU's name, utilisation and memory from NVML; None where NVML is not available."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(int(index))
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return {"index": int(index), "name": _text(pynvml.nvmlDeviceGetName(handle)),
                "utilization_percent": float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                "memory_used_bytes": int(memory.used), "memory_total_bytes": int(memory.total)}
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


def worker_metrics(gpu_index: str | None, cpu_interval: float | None = None) -> dict:
    """What a worker's heartbeat stores: host CPU and memory, its GPU's figures when it has one.

    `cpu_interval`: seconds to measure the CPU over; None measures since the previous call (the
    heartbeat's period), which is what a worker beating every 10 s wants after its first sample.
    """
    memory = psutil.virtual_memory()
    metrics = {
        "measured_at": datetime.now(timezone.utc).isoformat(),
        "cpu_percent": psutil.cpu_percent(interval=cpu_interval),
        "cpu_count": psutil.cpu_count(),
        # In use: what the host could not hand to a new process without swapping (total - available).
        "memory_used_bytes": int(memory.total - memory.available),
        "memory_total_bytes": int(memory.total),
        "gpu": None,
    }
    if gpu_index is not None:
        metrics["gpu"] = gpu_metrics(gpu_index)
    return metrics


def _text(value) -> str:
    """NVML answers str in recent bindings, bytes in old ones."""
    return value.decode() if isinstance(value, bytes) else str(value)
