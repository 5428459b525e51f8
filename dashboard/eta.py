"""How long until a job, and a benchmark, is done: from what earlier jobs of the same kind took, never a guess
from nowhere.

Jobs are alike when they share the backbone, the image size, the device kind (CPU or GPU) and the path
(heads on cached features, or end to end). From each earlier succeeded job of a kind come its fixed
seconds (building the model, saving: the wall time less the other phases), its training seconds per
training image x planned epoch (so early stopping is folded in) with its number of trials, and, where
the job did that work rather than find it in the cache, its seconds per image for decoding and for the
base's features. A job's estimate is the median of each over its kind's history, scaled by its own
images and epochs, and for its trials (training_rate); decoding and features count only when no
earlier job left them in the cache. A benchmark's is its unfinished jobs' work shared by the online workers of its pool, and never
less than its longest job.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from db.models import FINISHED_STATUSES, Benchmark, Job, JobStatus, Worker
from db.operations import database_now
from jobs.features import uses_feature_cache
from jobs.spec import JobSpec, plan_trials
from worker.queues import PREDICT_QUEUE

# The most recent succeeded jobs looked at for a pace, and for what the cache holds.
HISTORY_JOBS = 200


@dataclass(frozen=True)
class Kind:
    """What makes two jobs' times comparable."""

    backbone: str
    image_size: int
    device: str  # "CPU" or "GPU"
    cached_features: bool

    def words(self) -> str:
        path = "cached features" if self.cached_features else "end to end"
        return f"{self.backbone} at {self.image_size} px on {self.device}, {path}"


@dataclass(frozen=True)
class Pace:
    """What one earlier job cost; a per-image cost is None when the job found that work in the cache."""

    fixed_seconds: float  # building the model and saving artifacts
    trials: int
    training_per_image_epoch: float  # training seconds per training image x planned epoch, all its trials
    decode_per_image: float | None  # decoding the dataset's images
    features_per_image: float | None  # the base's features of every image


@dataclass(frozen=True)
class Estimate:
    """Seconds left (None: unknown) and what the figure rests on."""

    seconds: float | None
    basis: str


def device_kind(device: str) -> str:
    """A worker's device (worker/launch.py: "GPU 0: <name>" or "CPU (n cores)") as a kind."""
    return "GPU" if device.startswith("GPU") else "CPU"


def _spec(job: Job) -> JobSpec | None:
    try:
        return JobSpec.model_validate(job.spec)
    except ValueError:
        return None


def training_rate(paces: list[Pace], trials: int) -> float:
    """Training seconds per training image x planned epoch for a job of `trials` trials.

    With earlier jobs of at least two trial counts, a straight line through them (trials that train
    together share part of the cost: one pass over the batches, one model); otherwise in proportion to
    the trials, which overestimates stacked trials until such a history exists.
    """
    counts = [pace.trials for pace in paces]
    rates = [pace.training_per_image_epoch for pace in paces]
    if len(set(counts)) >= 2:
        slope, intercept = statistics.linear_regression(counts, rates)
        if slope >= 0 and intercept >= 0:
            return intercept + slope * trials
    return statistics.median(rate / count for rate, count in zip(rates, counts)) * trials


def _features_key(job: Job, spec: JobSpec) -> tuple:
    """What a job's cached features depend on (jobs.features.feature_cache_path)."""
    return job.benchmark.dataset_id, job.backbone, spec.image_size, spec.weights, spec.seed


def pace_of(job: Job) -> tuple[Kind, Pace] | None:
    """The kind and pace of a succeeded job, or None for one that recorded too little (made before the record)."""
    summary, spec = job.summary or {}, _spec(job)
    device = (summary.get("reproducibility") or {}).get("device", {}).get("kind")
    phases, cached = summary.get("phase_seconds") or {}, summary.get("cached")
    if spec is None or device is None or cached is None or "training" not in phases or not summary.get("n_train"):
        return None
    images = summary["n_train"] + summary["n_validation"] + summary.get("n_test", 0)
    decoding, features = phases.get("decoding images", 0.0), phases.get("computing features", 0.0)
    wall = (job.finished_at - job.started_at).total_seconds()
    kind = Kind(job.backbone, spec.image_size, device, bool(summary.get("feature_cache")))
    return kind, Pace(max(0.0, wall - decoding - features - phases["training"]), len(plan_trials(spec)),
                      phases["training"] / (summary["n_train"] * spec.epochs),
                      None if cached["images"] else decoding / images,
                      None if cached["features"] or not kind.cached_features else features / images)


def _before_it_in_its_benchmark(job: Job, same) -> bool:
    """Whether an unfinished job of the same benchmark with a lower id is `same(other, its spec)` as this one."""
    return any(other.id < job.id and other.status not in FINISHED_STATUSES and (spec := _spec(other)) is not None
               and same(other, spec) for other in job.benchmark.jobs)


def _median(values) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _images(benchmark: Benchmark) -> tuple[int, float]:
    """(every image, the training images) of the benchmark's dataset, from a job's split once one reported it."""
    reported = next((job.summary for job in benchmark.jobs if job.summary and job.summary.get("n_train")), None)
    if reported:
        return reported["n_train"] + reported["n_validation"] + reported.get("n_test", 0), reported["n_train"]
    total = sum(benchmark.dataset.counts.values())
    config = benchmark.config
    return total, total * (1 - config.get("validation_split", 0.15) - config.get("test_split", 0.0))


@dataclass(frozen=True)
class History:
    """What the recent succeeded jobs tell: paces by kind, and what they left in the cache."""

    paces: dict[Kind, list[Pace]]
    decoded: set[tuple]  # (dataset id, image size)
    featured: set[tuple]  # _features_key


# The history as last read, and the marker (the database, how many succeeded jobs, the latest end) it was read
# at: pages poll every second, and the history changes only when a job succeeds.
_last_history: list = [None, None]


def _history(session: Session) -> History:
    """The recent succeeded jobs' history, read again only when a job has succeeded since the last read."""
    marker = (str(session.get_bind().url), *session.execute(select(func.count(), func.max(Job.finished_at))
                                                           .where(Job.status == JobStatus.SUCCEEDED)).one())
    known_marker, known = _last_history
    if known is not None and known_marker == marker:
        return known
    recent = list(session.scalars(select(Job).where(Job.status == JobStatus.SUCCEEDED)
                                  .options(selectinload(Job.benchmark))
                                  .order_by(Job.finished_at.desc()).limit(HISTORY_JOBS)))
    paces: dict[Kind, list[Pace]] = {}
    for kind, pace in filter(None, map(pace_of, recent)):
        paces.setdefault(kind, []).append(pace)
    # What the cache holds now, as far as the jobs that filled it tell (one host's cache: the default).
    specs = [(job, spec) for job in recent if (spec := _spec(job)) is not None]
    history = History(paces, {(job.benchmark.dataset_id, spec.image_size) for job, spec in specs},
                      {_features_key(job, spec) for job, spec in specs if uses_feature_cache(spec)})
    _last_history[:] = [marker, history]
    return history


class Estimator:
    """Estimates for the jobs and benchmarks of one read, sharing the history, the workers and the clock."""

    def __init__(self, session: Session, offline_after: timedelta):
        """`offline_after`: a worker silent this long counts for no estimate (Liveness.worker_offline_after)."""
        self.now: datetime = database_now(session)
        history = _history(session)
        self.paces, self.decoded, self.featured = history.paces, history.decoded, history.featured
        online = session.scalars(select(Worker).where(Worker.stopped_at.is_(None),
                                                      Worker.heartbeat_at >= self.now - offline_after))
        self.training_workers = [worker for worker in online if PREDICT_QUEUE not in worker.queues]
        self.worker_devices = {worker.name: device_kind(worker.device) for worker in self.training_workers}

    def _device(self, job: Job) -> str | None:
        """The kind of device the job runs on, or will: its worker's, or the one kind its pool's workers share."""
        if job.worker in self.worker_devices and job.status is JobStatus.RUNNING:
            return self.worker_devices[job.worker]
        kinds = {device_kind(worker.device) for worker in self.training_workers if job.pool in worker.queues}
        return kinds.pop() if len(kinds) == 1 else None

    def _decodes(self, job: Job, spec: JobSpec) -> bool:
        """Whether the job will decode its images: nothing earlier did at its size, nor will a job of its
        benchmark that comes before it."""
        return ((job.benchmark.dataset_id, spec.image_size) not in self.decoded
                and not _before_it_in_its_benchmark(job, lambda other, other_spec: other_spec.image_size == spec.image_size))

    def _computes_features(self, job: Job, spec: JobSpec) -> bool:
        """Whether the job will compute its base's features: it trains on them, and neither an earlier job nor
        one before it in its benchmark left them in the cache."""
        key = _features_key(job, spec)
        return (uses_feature_cache(spec) and key not in self.featured
                and not _before_it_in_its_benchmark(job, lambda other, other_spec: _features_key(other, other_spec) == key))

    def job(self, job: Job) -> Estimate:
        """Seconds until the job ends: 0 once it has; None (with the reason) when nothing earlier is like it."""
        if job.status in FINISHED_STATUSES:
            return Estimate(0.0, "finished")
        spec, device = _spec(job), self._device(job)
        if spec is None or device is None:
            return Estimate(None, f"unknown: no online worker of pool {job.pool!r} to run it on")
        kind = Kind(job.backbone, spec.image_size, device, uses_feature_cache(spec))
        paces = self.paces.get(kind)
        if not paces:
            return Estimate(None, f"unknown: no earlier job of {kind.words()}")
        images, train_images = _images(job.benchmark)
        seconds = (_median(pace.fixed_seconds for pace in paces)
                   + training_rate(paces, len(plan_trials(spec))) * train_images * spec.epochs)
        for needed, rate, work in (
                (self._decodes(job, spec), _median(pace.decode_per_image for kind_paces in self.paces.values()
                                                   for pace in kind_paces), "decoded images"),
                (self._computes_features(job, spec), _median(pace.features_per_image for pace in paces),
                 f"computed features of {kind.words()}")):
            if needed and rate is None:
                return Estimate(None, f"unknown: no earlier job {work}")
            seconds += rate * images if needed else 0.0
        elapsed = (self.now - job.started_at).total_seconds() if job.status is JobStatus.RUNNING else 0.0
        return Estimate(max(0.0, seconds - elapsed),
                        f"{len(paces)} earlier job{'s' if len(paces) > 1 else ''} of {kind.words()}")

    def benchmark(self, benchmark: Benchmark) -> Estimate:
        """Seconds until every job of the benchmark has ended, its pool's online workers sharing the work."""
        left = [self.job(job) for job in benchmark.jobs if job.status not in FINISHED_STATUSES]
        if not left:
            return Estimate(0.0, "finished")
        unknown = next((estimate for estimate in left if estimate.seconds is None), None)
        if unknown:
            return unknown
        pool = benchmark.config.get("pool", "default")
        workers = sum(pool in worker.queues for worker in self.training_workers)
        seconds = [estimate.seconds for estimate in left]
        return Estimate(max(max(seconds), sum(seconds) / max(1, workers)),
                        f"{len(left)} job{'s' if len(left) > 1 else ''} left on {workers} worker{'s' if workers != 1 else ''}")
