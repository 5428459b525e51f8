"""The few writes and reads the web app and the workers need, each one short transaction.

Every write a worker makes names the attempt it belongs to: the database decides which
attempt owns a job, so a stale attempt can no longer change it.

An operation that reads a job and then changes it locks the job's row as it reads it (`_lock`:
SELECT ... FOR NO KEY UPDATE on PostgreSQL, where transactions run at READ COMMITTED). Two
workers claiming one job then take turns, and the second sees it running. On SQLite every
transaction already holds the write lock from its start (BEGIN IMMEDIATE), and FOR UPDATE is not
emitted.

Every liveness time (a job's start, heartbeat and last send; a worker's heartbeat) is the database
server's clock (`database_now`), and every "how long ago" is judged against that same clock, so hosts
whose clocks disagree neither lose live jobs nor keep dead ones.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, selectinload, undefer, with_expression

from db.models import (
    DEFAULT_POOL,
    EPOCH_METRICS,
    FINISHED_STATUSES,
    Benchmark,
    DatabaseNow,
    Dataset,
    Epoch,
    Job,
    JobStatus,
    Trial,
    Worker,
)

RETRYABLE_STATUSES = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})


class QueuedJob(NamedTuple):
    """A job to send to the broker (again): its id and the pool whose queue it goes to."""

    id: int
    pool: str


class NotFound(LookupError):
    """The row asked for does not exist."""


class Conflict(ValueError):
    """The request does not fit the row's current state (cancelling a finished job, say)."""


def database_now(session: Session) -> datetime:
    """The database server's current time (UTC, timezone-aware): the one clock of every liveness check."""
    return session.scalar(select(DatabaseNow()))


def _lock(session: Session, model, row_id: int):
    """Read one row by primary key, locked until the transaction ends; None when it does not exist."""
    return session.get(model, row_id, with_for_update={"key_share": True}, populate_existing=True)


def get_existing(session: Session, model, row_id: int, lock: bool = False):
    """Fetch one row by primary key (locked for a change when `lock`) or raise NotFound naming it."""
    row = _lock(session, model, row_id) if lock else session.get(model, row_id)
    if row is None:
        raise NotFound(f"{model.__tablename__[:-1]} {row_id} not found")
    return row


def add_dataset(session: Session, **fields) -> Dataset:
    """Insert a scanned dataset and return it with its id."""
    dataset = Dataset(**fields)
    session.add(dataset)
    session.flush()
    return dataset


def list_datasets(session: Session) -> list[Dataset]:
    """Every dataset, newest first."""
    return list(session.scalars(select(Dataset).order_by(Dataset.id.desc())))


def sample_dataset(session: Session) -> Dataset | None:
    """The built-in sample dataset, if `tlbench up` created it."""
    return session.scalar(select(Dataset).where(Dataset.sample.is_(True)).order_by(Dataset.id).limit(1))


def create_benchmark(session: Session, *, name: str, dataset_id: int, config: dict, specs: list[dict],
                     pool: str = DEFAULT_POOL) -> Benchmark:
    """Insert a benchmark and one queued job per spec (each spec names its backbone), all in one pool."""
    benchmark = Benchmark(name=name, dataset_id=dataset_id, config=config)
    sent_at = database_now(session)  # the caller sends every job right after the commit
    benchmark.jobs = [Job(backbone=spec["backbone"], spec=spec, status=JobStatus.QUEUED, pool=pool, sent_at=sent_at)
                      for spec in specs]
    session.add(benchmark)
    session.flush()
    return benchmark


def delete_benchmark(session: Session, benchmark_id: int) -> None:
    """Remove a benchmark with its jobs and their epochs (a submit whose jobs could not be sent)."""
    job_ids = list(session.scalars(_locked(select(Job.id).where(Job.benchmark_id == benchmark_id))))
    session.execute(delete(Epoch).where(Epoch.job_id.in_(job_ids)))
    session.execute(delete(Trial).where(Trial.job_id.in_(job_ids)))
    session.execute(delete(Job).where(Job.id.in_(job_ids)))
    session.execute(delete(Benchmark).where(Benchmark.id == benchmark_id))


def list_benchmarks(session: Session) -> list[Benchmark]:
    """Every benchmark with its jobs and dataset, newest first."""
    query = select(Benchmark).options(selectinload(Benchmark.jobs), selectinload(Benchmark.dataset))
    return list(session.scalars(query.order_by(Benchmark.id.desc())))


def job_epochs(session: Session, job_id: int, trial: int | None = None) -> list[Epoch]:
    """A job's epoch rows (of one trial when given), by trial then epoch."""
    get_existing(session, Job, job_id)
    query = select(Epoch).where(Epoch.job_id == job_id)
    if trial is not None:
        query = query.where(Epoch.trial == trial)
    return list(session.scalars(query.order_by(Epoch.trial, Epoch.epoch)))


def job_trials(session: Session, job_ids: list[int], with_correctness: bool = False) -> dict[int, list[Trial]]:
    """The trial rows of each job (those its worker has started), by number; with the test bitmaps when asked."""
    query = select(Trial).where(Trial.job_id.in_(job_ids)).order_by(Trial.job_id, Trial.number)
    if with_correctness:
        query = query.options(undefer(Trial.test_correct))
    found: dict[int, list[Trial]] = {job_id: [] for job_id in job_ids}
    for trial in session.scalars(query):
        found[trial.job_id].append(trial)
    return found


def claim_job(session: Session, job_id: int, worker: str) -> int | None:
    """Mark a queued job running for a new attempt; None when it is not queued (cancelled, taken, gone).

    A queued job someone asked to stop is cancelled instead: it never trains again.
    """
    job = _lock(session, Job, job_id)
    if job is None or job.status is not JobStatus.QUEUED:
        return None
    now = database_now(session)
    if job.cancel_requested:
        _end_cancelled(job, now)
        return None
    job.status, job.worker, job.attempt = JobStatus.RUNNING, worker, job.attempt + 1
    job.started_at, job.heartbeat_at, job.finished_at = now, now, None
    job.error = job.traceback = job.summary = None
    return job.attempt


def may_resume(session: Session, job_id: int) -> bool:
    """Whether the job's current attempt may carry on from its checkpoint (recovery put it back)."""
    return bool(session.scalar(select(Job.resumable).where(Job.id == job_id)))


def _end_cancelled(job: Job, now: datetime) -> None:
    """End a job that was asked to stop as cancelled; nothing of it may resume."""
    job.status, job.finished_at, job.phase, job.resumable = JobStatus.CANCELLED, now, None, False


def _owned_job(session: Session, job_id: int, attempt: int) -> Job | None:
    """The job, locked, if this attempt still owns it (it is running under that attempt number)."""
    job = _lock(session, Job, job_id)
    if job is None or job.attempt != attempt or job.status is not JobStatus.RUNNING:
        return None
    return job


def record_epochs(session: Session, job_id: int, attempt: int, epoch: int, by_trial: dict[int, dict]) -> bool:
    """Write one epoch row per trial named, replacing a row of the same trial and epoch written before."""
    job = _owned_job(session, job_id, attempt)
    if job is None:
        return False
    now = database_now(session)
    existing = {row.trial: row for row in session.scalars(
        select(Epoch).where(Epoch.job_id == job_id, Epoch.epoch == epoch, Epoch.trial.in_(list(by_trial))))}
    for trial, metrics in by_trial.items():
        values = {name: _finite_or_none(metrics.get(name)) for name in EPOCH_METRICS}
        row = existing.get(trial)
        if row is None:
            session.add(Epoch(job_id=job_id, trial=trial, epoch=epoch, recorded_at=now, **values))
        else:
            for name, value in values.items():
                setattr(row, name, value)
            row.recorded_at = now
    job.heartbeat_at = now
    return True


def resume_epochs(session: Session, job_id: int, attempt: int, rows: dict, keep_other_trials: bool = False) -> bool:
    """Start these trials (jobs.spec.Trial) after their epoch rows: their later rows go, these are (re)written,
    and trials not yet in the database are added; the epochs of trials not named go too, unless
    keep_other_trials (one trial taken over from a worker that went silent). False if the attempt does not
    own the job."""
    if _owned_job(session, job_id, attempt) is None:
        return False
    known = {trial.number for trial in session.scalars(select(Trial).where(Trial.job_id == job_id))}
    session.add_all(Trial(job_id=job_id, number=trial.number, learning_rate=trial.learning_rate,
                          repeat=trial.repeat, seed=trial.seed) for trial in rows if trial.number not in known)
    for trial, trial_rows in rows.items():
        session.execute(delete(Epoch).where(Epoch.job_id == job_id, Epoch.trial == trial.number,
                                            Epoch.epoch > len(trial_rows)))
    if not keep_other_trials:
        session.execute(delete(Epoch).where(Epoch.job_id == job_id, Epoch.trial.not_in([t.number for t in rows])))
    for epoch in sorted({row["epoch"] for trial_rows in rows.values() for row in trial_rows}):
        record_epochs(session, job_id, attempt, epoch, {trial.number: trial_rows[epoch - 1]
                                                        for trial, trial_rows in rows.items() if len(trial_rows) >= epoch})
    return True


TRIAL_RESULT_FIELDS = ("best_val_accuracy", "best_epoch", "epochs_run", "test_accuracy", "test_correct", "selected")


def record_trials(session: Session, job_id: int, attempt: int, results: list[dict]) -> bool:
    """Store each trial's result (number, cancelled and TRIAL_RESULT_FIELDS); False if the attempt lost the job."""
    job = _owned_job(session, job_id, attempt)
    if job is None:
        return False
    trials = {trial.number: trial for trial in session.scalars(select(Trial).where(Trial.job_id == job_id))}
    for result in results:
        trial = trials[result["number"]]
        trial.finished = "cancelled" if result["cancelled"] else "completed"
        trial.worker = trial.worker or job.worker  # trials trained together are the job's worker's
        for name in TRIAL_RESULT_FIELDS:
            setattr(trial, name, result[name])
    return True


def claim_trial(session: Session, job_id: int, attempt: int, number: int, worker: str,
                silent_after: timedelta) -> bool | None:
    """Hold an unfinished trial of the job for `worker`, for this attempt. True when it is now the worker's;
    False when it has finished, or another worker of this attempt holds it and beat within silent_after;
    None when the attempt no longer owns the job.

    The job's row is locked first, so two workers claiming trials of one job take turns. A trial held
    under the worker's own name was left by an earlier process of it (a worker runs one task at a time).
    """
    if _owned_job(session, job_id, attempt) is None:
        return None
    trial = session.scalar(select(Trial).where(Trial.job_id == job_id, Trial.number == number))
    if trial is None or trial.finished is not None:
        return False
    now = database_now(session)
    if (trial.worker not in (None, worker) and trial.attempt == attempt
            and trial.heartbeat_at is not None and trial.heartbeat_at >= now - silent_after):
        return False
    trial.worker, trial.attempt, trial.heartbeat_at = worker, attempt, now
    return True


def has_trials_to_take(session: Session, job_id: int, attempt: int) -> bool:
    """Whether this attempt of the job still runs and has a trial that has not finished."""
    return session.scalar(select(func.count()).select_from(Trial).join(Job, Job.id == Trial.job_id).where(
        Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING, Trial.finished.is_(None))) > 0


def release_trials(session: Session, job_id: int, attempt: int, worker: str) -> None:
    """Let other workers take at once the unfinished trials this worker held (it stopped, or failed: see its log)."""
    session.execute(update(Trial).where(Trial.job_id == job_id, Trial.attempt == attempt, Trial.worker == worker,
                                        Trial.finished.is_(None)).values(worker=None, heartbeat_at=None))


def _beat_held_trials(session: Session, job_id: int, attempt: int, worker: str) -> None:
    """Say the worker still trains the unfinished trials it holds for this attempt of the job."""
    session.execute(update(Trial).where(Trial.job_id == job_id, Trial.attempt == attempt, Trial.worker == worker,
                                        Trial.finished.is_(None)).values(heartbeat_at=DatabaseNow()))


def trial_heartbeat(session: Session, job_id: int, attempt: int, worker: str) -> bool:
    """A worker that trains trials of a job another worker owns: say it is alive; False when the attempt lost the job."""
    _beat_held_trials(session, job_id, attempt, worker)
    return session.scalar(select(func.count()).select_from(Job).where(
        Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING)) == 1


def _locked(query):
    """The jobs a query selects, locked in id order (so two recoveries never wait on each other in a circle)."""
    return query.order_by(Job.id).with_for_update(key_share=True).execution_options(populate_existing=True)


def _requeue(session: Session, jobs: list[Job], reason: str) -> list[QueuedJob]:
    """Put running jobs whose process died back in the queue, to resume from their checkpoint; the caller sends them.

    A job someone asked to stop ends cancelled instead: its epoch callback never got to read the flag.
    """
    now = database_now(session)
    requeued = []
    for job in jobs:
        if job.cancel_requested:
            _end_cancelled(job, now)
            continue
        job.status, job.phase, job.resumable, job.sent_at = JobStatus.QUEUED, reason, True, now
        requeued.append(QueuedJob(job.id, job.pool))
    return requeued


def requeue_lost_jobs(session: Session, lost_after: timedelta) -> list[QueuedJob]:
    """Re-queue running jobs whose attempt has not beaten for lost_after: their process is gone."""
    silent_since = database_now(session) - lost_after
    stale = session.scalars(_locked(select(Job).where(Job.status == JobStatus.RUNNING,
                                                      Job.heartbeat_at < silent_since)))
    return _requeue(session, list(stale), "re-queued: its worker stopped answering")


def requeue_jobs_held_by(session: Session, worker: str) -> list[QueuedJob]:
    """Re-queue the running jobs of a worker that starts, or starts a job: they died with its earlier process.

    A training worker runs one job at a time under a name no other live worker has, so any job still
    running under its name at those moments belongs to a process that is gone.
    """
    held = session.scalars(_locked(select(Job).where(Job.status == JobStatus.RUNNING, Job.worker == worker)))
    return _requeue(session, list(held), "re-queued: its worker's process died")


def queued_jobs(session: Session) -> list[QueuedJob]:
    """Every queued job with its pool, oldest first, marked sent now (for a broker that lost its messages)."""
    return _mark_sent(session, select(Job).where(Job.status == JobStatus.QUEUED))


def jobs_to_send_again(session: Session, unclaimed_for: timedelta) -> list[QueuedJob]:
    """Queued jobs sent longer than unclaimed_for ago (or never), marked sent now: each at most once per interval.

    Their message may have been lost (a send that failed after the commit), or may still wait behind
    others; a second message is harmless, since only one attempt can claim a job.
    """
    sent_before = database_now(session) - unclaimed_for
    return _mark_sent(session, select(Job).where(Job.status == JobStatus.QUEUED,
                                                 (Job.sent_at < sent_before) | Job.sent_at.is_(None)))


def _mark_sent(session: Session, query) -> list[QueuedJob]:
    """Lock the jobs the query selects and record that they are sent now (the caller sends them after the commit)."""
    jobs = list(session.scalars(_locked(query)))
    now = database_now(session)
    for job in jobs:
        job.sent_at = now
    return [QueuedJob(job.id, job.pool) for job in jobs]


def _finite_or_none(value) -> float | None:
    """Store NaN and infinities as NULL: JSON has no spelling for them."""
    if value is None:
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def heartbeat(session: Session, job_id: int, attempt: int, phase: str | None = None, worker: str | None = None) -> bool:
    """Say the attempt is alive (and what it is doing), and so are the trials its worker holds; False when it
    lost the job."""
    if worker is not None:
        _beat_held_trials(session, job_id, attempt, worker)
    values = {"heartbeat_at": DatabaseNow()}
    if phase is not None:
        values["phase"] = phase
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.RUNNING)
        .values(**values)
    )
    return result.rowcount == 1


def cancel_requested(session: Session, job_id: int) -> bool:
    """Whether someone asked this job to stop."""
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def finish_job(session: Session, job_id: int, attempt: int, status: JobStatus, summary: dict | None = None,
               error: str | None = None, traceback: str | None = None) -> bool:
    """Close an attempt with its end state; False when the attempt no longer owns the job."""
    job = _owned_job(session, job_id, attempt)
    if job is None:
        return False
    job.status, job.summary, job.error, job.traceback = status, summary, error, traceback
    job.finished_at = job.heartbeat_at = database_now(session)
    job.phase, job.resumable = None, False
    return True


def epochs_done(session: Session, job_ids: list[int]) -> dict[int, int]:
    """The highest recorded epoch of each job (0 when none yet)."""
    if not job_ids:
        return {}
    rows = session.execute(
        select(Epoch.job_id, func.max(Epoch.epoch)).where(Epoch.job_id.in_(job_ids)).group_by(Epoch.job_id)
    )
    done = dict.fromkeys(job_ids, 0)
    done.update({job_id: latest for job_id, latest in rows})
    return done


def trial_epochs_done(session: Session, job_id: int) -> dict[int, int]:
    """The highest recorded epoch of each trial of a job that has any."""
    rows = session.execute(select(Epoch.trial, func.max(Epoch.epoch)).where(Epoch.job_id == job_id)
                           .group_by(Epoch.trial))
    return {trial: latest for trial, latest in rows}


def benchmark_epochs(session: Session, benchmark_id: int) -> list[tuple[Job, list[Epoch]]]:
    """Every job of a benchmark with its epoch rows, in one query for the rows."""
    benchmark = get_existing(session, Benchmark, benchmark_id)
    job_ids = [job.id for job in benchmark.jobs]
    rows = session.scalars(select(Epoch).where(Epoch.job_id.in_(job_ids))
                           .order_by(Epoch.job_id, Epoch.trial, Epoch.epoch))
    by_job: dict[int, list[Epoch]] = {job_id: [] for job_id in job_ids}
    for row in rows:
        by_job[row.job_id].append(row)
    return [(job, by_job[job.id]) for job in benchmark.jobs]


def request_cancel(session: Session, job_id: int) -> Job:
    """Cancel a queued job at once, or ask a running one to stop after its current epoch."""
    job = get_existing(session, Job, job_id, lock=True)
    if job.status in FINISHED_STATUSES:
        raise Conflict(f"job {job_id} has already {job.status.value}")
    job.cancel_requested = True
    if job.status is JobStatus.QUEUED:
        _end_cancelled(job, database_now(session))
    return job


def reset_for_retry(session: Session, job_id: int) -> Job:
    """Put a failed or cancelled job back in the queue to start from epoch 1, its old epochs and results cleared.

    The caller sends it after the commit; the worker that claims it removes the earlier attempts' files.
    """
    job = get_existing(session, Job, job_id, lock=True)
    if job.status not in RETRYABLE_STATUSES:
        raise Conflict(f"job {job_id} is {job.status.value}; only failed or cancelled jobs can be retried")
    session.execute(delete(Epoch).where(Epoch.job_id == job_id))
    session.execute(delete(Trial).where(Trial.job_id == job_id))  # the attempt that starts adds them again
    job.status, job.cancel_requested, job.resumable = JobStatus.QUEUED, False, False
    job.error = job.traceback = job.summary = job.phase = None
    job.started_at = job.finished_at = job.heartbeat_at = None
    job.sent_at = database_now(session)
    return job


def register_worker(session: Session, name: str, host: str, device: str, memory_bytes: int | None,
                    queues: list[str], metrics: dict | None = None) -> None:
    """Record a worker that just started (or started again under the same name), with its first metrics."""
    worker = session.scalar(select(Worker).where(Worker.name == name)) or Worker(name=name)
    now = database_now(session)
    worker.host, worker.device, worker.memory_bytes, worker.queues = host, device, memory_bytes, queues
    worker.started_at = worker.heartbeat_at = now
    worker.stopped_at, worker.metrics = None, metrics
    session.add(worker)


def worker_heartbeat(session: Session, name: str, metrics: dict | None = None) -> None:
    """Say the worker is alive; store its latest metrics when it measured them."""
    values = {"heartbeat_at": DatabaseNow()}
    if metrics is not None:
        values["metrics"] = metrics
    session.execute(update(Worker).where(Worker.name == name).values(**values))


def worker_stopped(session: Session, name: str) -> None:
    """Record a clean shutdown."""
    session.execute(update(Worker).where(Worker.name == name).values(stopped_at=DatabaseNow()))


def worker_status(worker: Worker) -> str:
    """"stopped" after a clean shutdown, "offline" when silent for the `offline_after` of list_workers, else "online".

    The worker must come from list_workers, which judges its silence on the database's clock.
    """
    if worker.stopped_at is not None:
        return "stopped"
    return "online" if worker.online else "offline"


def list_workers(session: Session, offline_after: timedelta) -> list[tuple[Worker, Job | None]]:
    """Every known worker (whether it beat within `offline_after`, judged on the database's clock) with the job it
    is running."""
    running_jobs = select(Job).where(Job.status == JobStatus.RUNNING).options(selectinload(Job.benchmark))
    running = {job.worker: job for job in session.scalars(running_jobs)}
    recently = database_now(session) - offline_after
    # A worker helping with another worker's job trains one of its trials.
    helping = session.execute(select(Trial.worker, Job).join(Job, Job.id == Trial.job_id).where(
        Job.status == JobStatus.RUNNING, Trial.attempt == Job.attempt, Trial.finished.is_(None),
        Trial.heartbeat_at >= recently).options(selectinload(Job.benchmark)))
    for name, job in helping:
        running.setdefault(name, job)
    beat_recently = Worker.heartbeat_at >= recently
    workers = select(Worker).options(with_expression(Worker.online, beat_recently)).order_by(Worker.name)
    return [(worker, running.get(worker.name))
            for worker in session.scalars(workers.execution_options(populate_existing=True))]
