"""Rows to JSON: the one place that decides what the API shows of each thing."""
from __future__ import annotations

from datetime import datetime

from db.models import DEFAULT_POOL, EPOCH_METRICS, Benchmark, Dataset, Epoch, Job, JobStatus, Worker
from db.operations import worker_status
from worker.celery_app import PREDICT_QUEUE


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 with its UTC offset, or None."""
    return moment.isoformat() if moment else None


def dataset_json(dataset: Dataset) -> dict:
    """A dataset as the API shows it."""
    return {
        "id": dataset.id,
        "name": dataset.name,
        "source": "upload" if dataset.uploaded else "path",
        "sample": dataset.sample,
        "classes": dataset.classes,
        "counts": dataset.counts,
        "images": sum(dataset.counts.values()),
        "skipped": dataset.skipped,
        "sha256": dataset.sha256,
        "created_at": iso(dataset.created_at),
    }


def job_json(job: Job, epochs_done: int, detail: bool = False) -> dict:
    """A job with its status, progress and summary; with detail, its spec and traceback too."""
    shown = {
        "id": job.id,
        "benchmark_id": job.benchmark_id,
        "backbone": job.backbone,
        "status": job.status.value,
        "pool": job.pool,
        "attempt": job.attempt,
        "worker": job.worker,
        "phase": job.phase,
        "image_size": job.spec["image_size"],
        "epochs": job.spec["epochs"],
        "epochs_done": epochs_done,
        "error": job.error,
        "summary": job.summary,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "heartbeat_at": iso(job.heartbeat_at),
    }
    if detail:
        shown.update(spec=job.spec, traceback=job.traceback, cancel_requested=job.cancel_requested)
    return shown


def leader(benchmark: Benchmark) -> dict | None:
    """The succeeded job with the best validation accuracy, or None yet (a cancelled job's partial run never leads)."""
    scored = [job for job in benchmark.jobs if job.status is JobStatus.SUCCEEDED and job.summary
              and job.summary.get("best_val_accuracy") is not None]
    if not scored:
        return None
    best = max(scored, key=lambda job: job.summary["best_val_accuracy"])
    return {"job_id": best.id, "backbone": best.backbone, "best_val_accuracy": best.summary["best_val_accuracy"]}


def benchmark_json(benchmark: Benchmark, epochs_done: dict[int, int], detail: bool = False) -> dict:
    """A benchmark with its derived status, leader and jobs (with detail: its configuration)."""
    shown = {
        "id": benchmark.id,
        "name": benchmark.name,
        "status": benchmark.status.value,
        "dataset": {"id": benchmark.dataset.id, "name": benchmark.dataset.name},
        "backbones": [job.backbone for job in benchmark.jobs],
        "pool": benchmark.config.get("pool", DEFAULT_POOL),
        "leader": leader(benchmark),
        "created_at": iso(benchmark.created_at),
        "jobs": [job_json(job, epochs_done.get(job.id, 0)) for job in benchmark.jobs],
    }
    if detail:
        shown["config"] = benchmark.config
    return shown


def epoch_json(epoch: Epoch) -> dict:
    """One epoch's metrics."""
    return {"epoch": epoch.epoch, **{name: getattr(epoch, name) for name in EPOCH_METRICS},
            "recorded_at": iso(epoch.recorded_at)}


def worker_json(worker: Worker, current_job: Job | None) -> dict:
    """A worker with its pools, liveness, the job it is running and its latest metrics."""
    predicts = PREDICT_QUEUE in worker.queues
    return {
        "name": worker.name,
        "host": worker.host,
        "role": "predict" if predicts else "training",
        "device": worker.device,
        "memory_bytes": worker.memory_bytes,
        "pools": [] if predicts else worker.queues,
        "queues": worker.queues,
        "status": worker_status(worker),
        "current_job": {"id": current_job.id, "backbone": current_job.backbone,
                        "benchmark_id": current_job.benchmark_id,
                        "benchmark": current_job.benchmark.name} if current_job else None,
        "metrics": worker.metrics,
        "started_at": iso(worker.started_at),
        "heartbeat_at": iso(worker.heartbeat_at),
        "stopped_at": iso(worker.stopped_at),
    }
