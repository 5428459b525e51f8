"""Rows to JSON: the one place that decides what the API shows of each thing."""
from __future__ import annotations

from datetime import datetime
from functools import lru_cache

import numpy as np
from pydantic import ValidationError

from dashboard.eta import Estimate, Estimator
from db.models import DEFAULT_POOL, EPOCH_METRICS, Benchmark, Dataset, Epoch, Job, JobStatus, Trial, Worker
from db.operations import worker_status
from jobs.spec import JobSpec, plan_trials
from jobs.stats import compare_to_leader, tie_sentence, unpack_correct
from worker.queues import PREDICT_QUEUE


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


def job_json(job: Job, epochs_done: int, detail: bool = False, trials: list[Trial] | None = None,
             eta: Estimate | None = None) -> dict:
    """A job with its status, progress (epochs and trials), time left and summary; with detail, its spec and
    traceback too."""
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
        "trials_total": len(planned_trials(job)),
        "trials_done": sum(trial.finished is not None for trial in trials or []),
        "error": job.error,
        "summary": job.summary,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "heartbeat_at": iso(job.heartbeat_at),
        **eta_json(eta),
    }
    if detail:
        shown.update(spec=job.spec, traceback=job.traceback, cancel_requested=job.cancel_requested)
    return shown


def eta_json(eta: Estimate | None) -> dict:
    """The seconds left (None: unknown, or not estimated in this answer) and what the figure rests on."""
    return {"eta_seconds": None if eta is None or eta.seconds is None else round(eta.seconds, 1),
            "eta_basis": None if eta is None else eta.basis}


def planned_trials(job: Job) -> list:
    """The job's trials (jobs.spec.Trial), as its spec plans them; none for a spec no worker could run."""
    try:
        return plan_trials(JobSpec.model_validate(job.spec))
    except ValidationError:
        return []


def _succeeded(benchmark: Benchmark) -> list[Job]:
    """The jobs that ran to their end (a cancelled job's partial run never leads)."""
    return [job for job in benchmark.jobs if job.status is JobStatus.SUCCEEDED and job.summary]


def leader(benchmark: Benchmark) -> dict | None:
    """The succeeded job with the highest mean test accuracy, or None yet.

    A benchmark made before test sets has none: its leader is the best validation accuracy, and says so ("by").
    """
    tested = [job for job in _succeeded(benchmark) if job.summary.get("test")]
    if tested:
        best = max(tested, key=lambda job: job.summary["test"]["accuracy_mean"])
        return {"job_id": best.id, "backbone": best.backbone, "by": "test_accuracy",
                "test_accuracy_mean": best.summary["test"]["accuracy_mean"],
                "best_val_accuracy": best.summary["best_val_accuracy"]}
    scored = [job for job in _succeeded(benchmark) if job.summary.get("best_val_accuracy") is not None]
    if not scored:
        return None
    best = max(scored, key=lambda job: job.summary["best_val_accuracy"])
    return {"job_id": best.id, "backbone": best.backbone, "by": "val_accuracy", "test_accuracy_mean": None,
            "best_val_accuracy": best.summary["best_val_accuracy"]}


# What a backbone's accuracy is weighed against (summary fields); lower is better for each.
COSTS = ("latency_ms_per_image", "params_total", "model_bytes", "train_seconds")


def pareto_front(points: dict) -> list:
    """The keys of the (cost, accuracy) points that no other point dominates (as cheap or cheaper and as
    accurate or more, better in one), cheapest first. Equal points are all on the front."""
    def dominated(cost: float, accuracy: float) -> bool:
        return any(other_cost <= cost and other_accuracy >= accuracy and (other_cost, other_accuracy) != (cost, accuracy)
                   for other_cost, other_accuracy in points.values())

    return sorted((key for key, (cost, accuracy) in points.items() if not dominated(cost, accuracy)),
                  key=lambda key: points[key])


def frontier_json(benchmark: Benchmark, ranked_by: str | None) -> dict[str, list[int]]:
    """Per cost, the ids of the succeeded jobs on the Pareto front of accuracy against that cost; accuracy is
    what ranks the leader (mean test accuracy, or best validation accuracy before test sets)."""
    def accuracy(job: Job) -> float | None:
        if ranked_by == "test_accuracy":
            return (job.summary.get("test") or {}).get("accuracy_mean")
        return job.summary.get("best_val_accuracy")

    jobs = [job for job in _succeeded(benchmark) if accuracy(job) is not None]
    return {cost: pareto_front({job.id: (job.summary[cost], accuracy(job)) for job in jobs
                                if job.summary.get(cost) is not None})
            for cost in COSTS}


def splits_json(benchmark: Benchmark) -> dict | None:
    """The benchmark's train, validation and test parts (counts and hashes), once a job has reported them."""
    reported = [job.summary["splits"] for job in benchmark.jobs if job.summary and job.summary.get("splits")]
    return reported[0] if reported else None


def _correctness(job: Job, trials: list[Trial]) -> tuple[bytes, ...]:
    """The packed test correctness of the job's repeats at its chosen learning rate."""
    chosen = job.summary["chosen_learning_rate"]
    return tuple(trial.test_correct for trial in trials
                 if trial.learning_rate == chosen and trial.test_correct is not None)


@lru_cache(maxsize=64)
def _compare(results: tuple[tuple[int, tuple[bytes, ...]], ...], images: int):
    """compare_to_leader on packed correctness, kept: the dashboard asks again every few seconds."""
    return compare_to_leader({job_id: np.stack([unpack_correct(packed, images) for packed in repeats])
                              for job_id, repeats in results})


def comparison_json(benchmark: Benchmark, trials: dict[int, list[Trial]]) -> dict | None:
    """Every tested backbone against the leader on the same test images; None before any has a test result.

    `trials` must carry their test correctness (db.operations.job_trials with_correctness).
    """
    tested = [job for job in _succeeded(benchmark) if job.summary.get("test")]
    results = tuple((job.id, _correctness(job, trials.get(job.id, []))) for job in tested)
    results = tuple((job_id, repeats) for job_id, repeats in results if repeats)
    if not results:
        return None
    comparison = _compare(results, tested[0].summary["test"]["images"])
    names = {job.id: job.backbone for job in tested}
    return {
        "alpha": comparison.alpha,
        "leader_job_id": comparison.leader,
        "sentence": tie_sentence(names[comparison.leader], [names[job_id] for job_id in comparison.tied],
                                 len(comparison.tests), comparison.alpha),
        "tied_with_leader": comparison.tied,
        "tests": {str(job_id): {"p_value": test.p_value, "test": test.test, "difference": test.difference}
                  for job_id, test in comparison.tests.items()},
    }


def benchmark_json(benchmark: Benchmark, epochs_done: dict[int, int], trials: dict[int, list[Trial]],
                   detail: bool = False, estimator: Estimator | None = None) -> dict:
    """A benchmark with its derived status, leader, splits, time left and jobs; with detail, its configuration
    and the comparison against the leader (`trials` then carry their test correctness)."""
    best = leader(benchmark)
    shown = {
        "id": benchmark.id,
        "name": benchmark.name,
        "status": benchmark.status.value,
        "dataset": {"id": benchmark.dataset.id, "name": benchmark.dataset.name},
        "backbones": [job.backbone for job in benchmark.jobs],
        "pool": benchmark.config.get("pool", DEFAULT_POOL),
        "leader": best,
        "frontier": frontier_json(benchmark, best and best["by"]),
        "splits": splits_json(benchmark),
        "created_at": iso(benchmark.created_at),
        **eta_json(estimator and estimator.benchmark(benchmark)),
        "jobs": [job_json(job, epochs_done.get(job.id, 0), trials=trials.get(job.id), eta=estimator and estimator.job(job))
                 for job in benchmark.jobs],
    }
    if detail:
        shown["config"] = benchmark.config
        shown["comparison"] = comparison_json(benchmark, trials)
    return shown


def epoch_json(epoch: Epoch) -> dict:
    """One epoch's metrics, with its trial's number."""
    return {"epoch": epoch.epoch, "trial": epoch.trial, **{name: getattr(epoch, name) for name in EPOCH_METRICS},
            "recorded_at": iso(epoch.recorded_at)}


def _shown_trial(job: Job) -> int:
    """The trial the job's curves show: the selected one, or trial 0 until one is selected."""
    return (job.summary or {}).get("selected_trial", 0)


def _band(job: Job, epochs: list[Epoch]) -> list[dict]:
    """Per epoch, the lowest and highest validation accuracy across the repeats at the chosen learning rate."""
    summary = job.summary or {}
    if summary.get("repeats", 1) < 2 or "chosen_learning_rate" not in summary:
        return []
    repeats = {trial.number for trial in planned_trials(job) if trial.learning_rate == summary["chosen_learning_rate"]}
    by_epoch: dict[int, list[float]] = {}
    for epoch in epochs:
        if epoch.trial in repeats and epoch.val_accuracy is not None:
            by_epoch.setdefault(epoch.epoch, []).append(epoch.val_accuracy)
    return [{"epoch": number, "low": min(values), "high": max(values)} for number, values in sorted(by_epoch.items())]


def epoch_series_json(job: Job, epochs: list[Epoch]) -> dict:
    """A job's curve for the charts: its shown trial's epochs and the band across that trial's repeats."""
    shown = _shown_trial(job)
    return {"job_id": job.id, "backbone": job.backbone, "trial": shown,
            "epochs": [epoch_json(epoch) for epoch in epochs if epoch.trial == shown], "band": _band(job, epochs)}


def _trial_status(job: Job, row: Trial | None, epochs_done: int) -> str:
    """A trial's state: its own end once the job's training ended, else what the job's state implies."""
    if row is not None and row.finished is not None:
        return "succeeded" if row.finished == "completed" else "cancelled"
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        held = row is not None and row.worker is not None
        return "running" if job.status is JobStatus.RUNNING and (epochs_done or held) else "queued"
    return job.status.value if job.status is not JobStatus.SUCCEEDED else "cancelled"


def trials_json(job: Job, rows: list[Trial], epochs_done: dict[int, int]) -> dict:
    """Every planned trial of the job with its progress and result (none until the job's training ended)."""
    by_number = {row.number: row for row in rows}
    selected = _shown_trial(job) if job.summary else None
    shown = []
    for trial in planned_trials(job):
        row = by_number.get(trial.number)
        shown.append({
            "number": trial.number, "learning_rate": trial.learning_rate, "repeat": trial.repeat, "seed": trial.seed,
            "status": _trial_status(job, row, epochs_done.get(trial.number, 0)),
            "epochs_done": epochs_done.get(trial.number, 0),
            "best_val_accuracy": row.best_val_accuracy if row else None,
            "best_epoch": row.best_epoch if row else None,
            "epochs_run": row.epochs_run if row else None,
            "test_accuracy": row.test_accuracy if row else None,
            "selected": trial.number == selected,
            "worker": row.worker if row else None,
        })
    return {"job_id": job.id, "test_set": bool(job.spec.get("test_split")), "trials": shown}


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
