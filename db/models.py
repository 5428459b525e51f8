"""The tables: datasets, benchmarks, jobs, their trials and epochs; and the database's clock (DatabaseNow)."""
from __future__ import annotations

import enum
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    LargeBinary,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column, query_expression, relationship
from sqlalchemy.sql.functions import FunctionElement


class UtcDateTime(TypeDecorator):
    """A timestamp stored in UTC that always comes back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        """Store every timestamp in UTC."""
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value, dialect):
        """Give back an aware datetime whatever the driver returned."""
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=timezone.utc)


class DatabaseNow(FunctionElement):
    """The database server's current time in UTC: the one clock of every timestamp, whichever host writes it.

    Liveness is judged on it too (db/operations.py), so hosts whose clocks disagree agree on it.
    """

    type = UtcDateTime()
    inherit_cache = True


@compiles(DatabaseNow)
def _database_now(element, compiler, **kw) -> str:
    """PostgreSQL's now(): the transaction's start, timezone-aware."""
    return "CURRENT_TIMESTAMP"


@compiles(DatabaseNow, "sqlite")
def _sqlite_now(element, compiler, **kw) -> str:
    """SQLite's CURRENT_TIMESTAMP keeps whole seconds only; this is UTC to the millisecond, in the format
    SQLAlchemy stores datetimes in ('YYYY-MM-DD HH:MM:SS.fff'), so stored times compare as text."""
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


class Base(DeclarativeBase):
    """Declarative base of every tlbench table."""


class JobStatus(str, enum.Enum):
    """Lifecycle of one job: queued → running → succeeded | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
# The pool every training worker serves (its Celery queue has the same name).
DEFAULT_POOL = "default"


class Dataset(Base):
    """A folder of class sub-folders, scanned once when it was registered."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    root: Mapped[str] = mapped_column(Text)
    uploaded: Mapped[bool] = mapped_column(Boolean, default=False)
    # The small dataset `tlbench up` creates on first start, so a new user can try a benchmark.
    sample: Mapped[bool] = mapped_column(Boolean, default=False)
    classes: Mapped[list] = mapped_column(JSON)
    counts: Mapped[dict] = mapped_column(JSON)
    skipped: Mapped[list] = mapped_column(JSON)
    sha256: Mapped[str] = mapped_column(String(64))
    # Every kept file as [path, label, subset]; only the worker needs it, so it loads on demand.
    manifest: Mapped[list] = deferred(mapped_column(JSON))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=DatabaseNow())


class Benchmark(Base):
    """One dataset, one shared configuration, one job per backbone."""

    __tablename__ = "benchmarks"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    config: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=DatabaseNow())

    dataset: Mapped[Dataset] = relationship()
    jobs: Mapped[list[Job]] = relationship(back_populates="benchmark", order_by="Job.id")

    @property
    def status(self) -> JobStatus:
        """The benchmark's state, derived from its jobs'."""
        statuses = {job.status for job in self.jobs}
        if statuses == {JobStatus.QUEUED}:
            return JobStatus.QUEUED
        if JobStatus.RUNNING in statuses or JobStatus.QUEUED in statuses:
            return JobStatus.RUNNING
        for end_state in (JobStatus.FAILED, JobStatus.CANCELLED):
            if end_state in statuses:
                return end_state
        return JobStatus.SUCCEEDED


class Job(Base):
    """One backbone of one benchmark, and everything known about its run."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    benchmark_id: Mapped[int] = mapped_column(ForeignKey("benchmarks.id"), index=True)
    backbone: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict] = mapped_column(JSON)
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]),
        default=JobStatus.QUEUED,
        index=True,
    )
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # The worker pool (a Celery queue) the job runs on; "default" is served by every training worker.
    pool: Mapped[str] = mapped_column(String(64), default=DEFAULT_POOL, server_default=DEFAULT_POOL)
    worker: Mapped[str | None] = mapped_column(String(200))
    phase: Mapped[str | None] = mapped_column(String(200))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set only when recovery puts a running job back in the queue: its next attempt may carry on from the
    # checkpoint. Every other attempt (the first, a retry, after a cancel) starts from epoch 1.
    resumable: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=DatabaseNow())
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # When the job's message was last sent to the broker (database clock); a queued job not claimed
    # for a while is sent again (worker/recovery.py).
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    benchmark: Mapped[Benchmark] = relationship(back_populates="jobs")


class Trial(Base):
    """One (learning rate, repeat) of a job, and its result once the job's training ended.

    Added by the attempt that starts the job (jobs.spec.plan_trials numbers them) and removed by a retry;
    a job made before trials has one, number 0 (migration 0004).
    """

    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("job_id", "number", name="uq_trial_per_job"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    learning_rate: Mapped[float] = mapped_column(Float)
    repeat: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    # None until the job's training ended; then whether it ran to its end or was cancelled part-way.
    finished: Mapped[str | None] = mapped_column(String(16))
    best_val_accuracy: Mapped[float | None] = mapped_column(Float)
    best_epoch: Mapped[int | None] = mapped_column(Integer)
    epochs_run: Mapped[int | None] = mapped_column(Integer)
    test_accuracy: Mapped[float | None] = mapped_column(Float)
    # Per test image, whether this trial got it right (one bit each, jobs.stats.pack_correct): the paired
    # tests between backbones need it. The predictions themselves are an artifact file per trial.
    test_correct: Mapped[bytes | None] = deferred(mapped_column(LargeBinary))
    selected: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Who trains it now: trials that cannot share features are taken one at a time by the job's own
    # worker and by idle workers of its pool (db.operations.claim_trial). A holder that stops beating for
    # TLBENCH_JOB_LOST_AFTER, or belongs to an earlier attempt of the job, no longer holds it.
    worker: Mapped[str | None] = mapped_column(String(255))
    attempt: Mapped[int | None] = mapped_column(Integer)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Epoch(Base):
    """The metrics of one epoch of one trial of one job; (job, trial, epoch) is unique."""

    __tablename__ = "epochs"
    __table_args__ = (UniqueConstraint("job_id", "trial", "epoch", name="uq_epoch_per_trial"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    # The trial's number within its job (Trial.number).
    trial: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    epoch: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_accuracy: Mapped[float | None] = mapped_column(Float)
    learning_rate: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    images_per_second: Mapped[float | None] = mapped_column(Float)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime, default=DatabaseNow())


class Worker(Base):
    """A worker process that registered itself; alive while its heartbeat is recent."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    host: Mapped[str] = mapped_column(String(200))
    device: Mapped[str] = mapped_column(String(200))
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    queues: Mapped[list] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=DatabaseNow())
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime, default=DatabaseNow())
    stopped_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The latest device and system figures (GPU utilisation and memory where NVML is available,
    # CPU and RAM), refreshed with each heartbeat; None until the first.
    metrics: Mapped[dict | None] = mapped_column(JSON)
    # Whether it beat recently, by the database's clock; filled by db.operations.list_workers.
    online: Mapped[bool | None] = query_expression()


EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds", "images_per_second")
