"""Run one job on this worker: claim it, train it through jobs/, record everything.

TensorFlow and Keras are imported inside run_job_by_id's call path only: a forked Celery
child that inherits an initialised TensorFlow hangs.

Only an attempt whose job recovery put back (its process died) carries on from the checkpoint. Every
other attempt starts from epoch 1: it first removes any checkpoint an earlier attempt left (one
that died and was then cancelled while queued, or one that resumed and failed before training), and
a retry also removes the earlier attempts' other files. This runs on the worker, which writes the
artifacts, whichever host the retry came from.
"""
from __future__ import annotations

import logging
import shutil
import threading
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from celery import Celery

from config.settings import Liveness, Settings, job_artifact_key
from db import operations as ops
from db.models import Dataset, Job, JobStatus
from db.session import Database
from jobs.checkpoint import CHECKPOINT_FOLDER, STATE_FILE
from jobs.storage import FolderMirror
from jobs.training import TRIAL_OUTCOME, AttemptSuperseded  # Keras is imported only once a job runs
from worker.queues import enqueue_trial_helpers
from worker.recovery import send_again

log = logging.getLogger(__name__)

TRACEBACK_TAIL_CHARS = 8000


class DatabaseReporter:
    """What jobs/ reports to: epoch rows, phases, the cancel flag and who holds which trial, all in the database.

    `worker` names this worker when it shares the job's trials with others (claim_trial), and `offer` sends
    the messages that ask idle workers to help (offer_trials); without them, this worker trains every trial.
    """

    def __init__(self, database: Database, job_id: int, attempt: int, worker: str | None = None,
                 silent_after_seconds: float = Liveness.job_lost_after_seconds,
                 offer: Callable[[int], None] | None = None, keep_checkpoint: Callable[[], None] | None = None):
        self.database, self.job_id, self.attempt = database, job_id, attempt
        self.worker, self.silent_after, self.offer = worker, timedelta(seconds=silent_after_seconds), offer
        # Called once an epoch's checkpoint is written, before the epoch is recorded: where the storage is not
        # the home, it stores the job's folder (every so often) for a worker on another host to resume from.
        self.keep_checkpoint = keep_checkpoint or (lambda: None)
        self.lost_ownership = False

    def resume_from(self, rows: dict) -> None:
        """Record the job's trials; keep the epochs the checkpoint has of each (none for a fresh start), drop the rest."""
        with self.database.transaction() as session:
            owned = ops.resume_epochs(session, self.job_id, self.attempt, rows)
        self._stop_unless(owned)

    def record_epochs(self, epoch: int, rows: dict[int, dict]) -> None:
        """Write the epoch's row of each trial named (one short transaction per epoch), once its checkpoint is kept."""
        self.keep_checkpoint()
        with self.database.transaction() as session:
            owned = ops.record_epochs(session, self.job_id, self.attempt, epoch, rows)
        self._stop_unless(owned)

    def record_trials(self, results: list[dict]) -> None:
        """Store the trials' results, once the files they name are kept."""
        self.keep_checkpoint()
        with self.database.transaction() as session:
            owned = ops.record_trials(session, self.job_id, self.attempt, results)
        self._stop_unless(owned)

    def _stop_unless(self, owned: bool) -> None:
        """Stop this attempt at once when another one owns the job now."""
        if not owned or self.lost_ownership:
            self.lost_ownership = True
            raise AttemptSuperseded(f"job {self.job_id}: attempt {self.attempt} no longer owns the job")

    def progress(self, message: str) -> None:
        """Show what the job is doing now."""
        log.info("job %s: %s", self.job_id, message)
        self.beat(phase=message)

    def should_stop(self) -> bool:
        """Stop when cancelled; raise when another attempt owns the job now (its heartbeat found out)."""
        self._stop_unless(True)
        with self.database.transaction() as session:
            return ops.cancel_requested(session, self.job_id)

    def offer_trials(self, count: int) -> None:
        """Ask up to `count` idle workers of the job's pool to take trials of it too."""
        if self.offer is not None and count > 0:
            self.offer(count)

    def claim_trial(self, trial) -> bool:
        """Hold the trial for this worker, unless it finished or a live worker holds it."""
        if self.worker is None:
            return True
        with self.database.transaction() as session:
            claimed = ops.claim_trial(session, self.job_id, self.attempt, trial.number, self.worker, self.silent_after)
        self._stop_unless(claimed is not None)
        return claimed

    def restart_trial(self, trial, rows: list[dict]) -> None:
        """Keep the trial's epochs its checkpoint has; a worker that went silent may have recorded one more."""
        with self.database.transaction() as session:
            owned = ops.resume_epochs(session, self.job_id, self.attempt, {trial: rows}, keep_other_trials=True)
        self._stop_unless(owned)

    def beat(self, phase: str | None = None) -> None:
        """Refresh the heartbeat (the job's, and the trials this worker holds); remember if this attempt lost the job."""
        with self.database.transaction() as session:
            if not ops.heartbeat(session, self.job_id, self.attempt, phase, self.worker):
                self.lost_ownership = True


class HelperReporter(DatabaseReporter):
    """The reporter of a worker that trains trials of a job another worker owns: it beats for its trials
    only, so the job is found lost when its owner dies, whoever still helps."""

    def progress(self, message: str) -> None:
        """The owner's phase is the job's: log this worker's own."""
        log.info("job %s (trials on %s): %s", self.job_id, self.worker, message)

    def beat(self, phase: str | None = None) -> None:
        """Refresh the heartbeat of the trials this worker holds; remember if the attempt lost the job."""
        with self.database.transaction() as session:
            if not ops.trial_heartbeat(session, self.job_id, self.attempt, self.worker):
                self.lost_ownership = True

    def release_trials(self) -> None:
        """Let other workers take at once the trials this one holds and did not finish."""
        with self.database.transaction() as session:
            ops.release_trials(session, self.job_id, self.attempt, self.worker)


@contextmanager
def heartbeat_thread(reporter: DatabaseReporter, interval: float):
    """Beat in the background while a long epoch runs, so the job never looks dead."""
    stopped = threading.Event()

    def beat_until_stopped() -> None:
        while not stopped.wait(interval):
            try:
                reporter.beat()
            except Exception:  # a missed beat is not worth killing the job for
                log.exception("heartbeat of job %s failed", reporter.job_id)

    thread = threading.Thread(target=beat_until_stopped, name=f"heartbeat-{reporter.job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        thread.join()


def run_job_by_id(job_id: int, worker_name: str, app: Celery, settings: Settings) -> None:
    """Claim and run one job; any error ends it `failed` with its traceback, never the worker.

    Jobs still running under this worker's name died with an earlier process of it (a killed pool
    child, say): they go back to the queue first, and this job, if it was one of them, is taken again.
    """
    database = Database(settings.database_url)
    try:
        with database.transaction() as session:
            orphans = ops.requeue_jobs_held_by(session, worker_name)
            attempt = ops.claim_job(session, job_id, worker_name)
            resumes = attempt is not None and ops.may_resume(session, job_id)
        send_again(app, [orphan for orphan in orphans if orphan.id != job_id], f"its process on {worker_name} died")
        if attempt is None:
            log.info("job %s is not queued any more; skipping", job_id)
            return
        _run_attempt(database, settings, job_id, attempt, resumes, worker_name, app)
    finally:
        database.dispose()


def _run_attempt(database: Database, settings: Settings, job_id: int, attempt: int, resumes: bool,
                 worker_name: str, app: Celery) -> None:
    """Train one claimed attempt (carrying on from the checkpoint only when `resumes`) and record how it ended."""
    with database.transaction() as session:
        pool = session.get(Job, job_id).pool

    def offer(count: int) -> None:
        enqueue_trial_helpers(app, job_id, attempt, pool, count)

    mirror = None
    try:
        if not resumes:
            remove_earlier_attempts(settings.job_artifact_dir(job_id), attempt)
        mirror = _mirror_in_storage(settings, job_id, resumes)
        # Idle workers help with the trials only where they share the job's folder (the storage is the home):
        # with another storage each host has a folder of its own, so the owner trains every trial itself.
        reporter = DatabaseReporter(database, job_id, attempt, worker_name, settings.liveness.job_lost_after_seconds,
                                    offer=offer if mirror is None else None,
                                    keep_checkpoint=mirror.sync_if_due if mirror is not None else None)
        with heartbeat_thread(reporter, settings.liveness.job_beat_seconds):
            summary = _train(database, settings, job_id, reporter)
            store_artifacts(mirror)
    except AttemptSuperseded:
        log.warning("job %s: attempt %s was superseded by a newer one; it stopped", job_id, attempt)
        return
    except Exception as error:
        log.exception("job %s failed", job_id)
        _store_what_a_failed_job_left(mirror, job_id)
        with database.transaction() as session:
            ops.finish_job(session, job_id, attempt, JobStatus.FAILED, error=_describe(error),
                           traceback=traceback.format_exc()[-TRACEBACK_TAIL_CHARS:])
        return
    status = JobStatus.CANCELLED if summary.get("cancelled") else JobStatus.SUCCEEDED
    with database.transaction() as session:
        ops.finish_job(session, job_id, attempt, status, summary=summary)


def _mirror_in_storage(settings: Settings, job_id: int, resumes: bool) -> FolderMirror | None:
    """Where the storage is not the home, the job's folder as its storage copy has it (for a resumed attempt,
    which may run on another host than the one that died), kept in step from now on; None otherwise."""
    if settings.storage_is_home:
        return None
    storage, folder, key = settings.storage(), settings.job_artifact_dir(job_id), job_artifact_key(job_id)
    if resumes:  # the stored copy is the one that matches the recorded epochs, whichever host wrote it
        shutil.rmtree(folder, ignore_errors=True)
        storage.get_tree(key, folder)
    else:
        storage.delete(key)  # an earlier attempt's files: nothing of them may be resumed
    return FolderMirror(storage, folder, key, state_names=(STATE_FILE, TRIAL_OUTCOME),
                        every_seconds=settings.checkpoint_store_seconds)


def store_artifacts(mirror: FolderMirror | None) -> None:
    """Bring a finished job's copy in the storage (when it is not the home) to exactly its artifacts, before the
    job is recorded as finished: the API lists a job's files from there, so none is listed before it is stored.
    This host's copy goes once it is stored."""
    if mirror is not None:
        mirror.sync(prune=True)
        shutil.rmtree(mirror.folder)


def _store_what_a_failed_job_left(mirror: FolderMirror | None, job_id: int) -> None:
    """Make the store hold what a failed job's folder holds (its checkpoint is gone: a retry starts over), as
    this host's folder does where the storage is the home; the store may be what failed, so only log."""
    try:
        store_artifacts(mirror)
    except Exception:
        log.exception("job %s: the files it left could not be stored", job_id)


def remove_earlier_attempts(folder: Path, attempt: int) -> None:
    """Before an attempt that starts from epoch 1: no checkpoint to resume, and for a retry no file of earlier attempts.

    A file that cannot be removed fails the attempt: a stale checkpoint must never be resumed.
    """
    try:
        shutil.rmtree(folder / CHECKPOINT_FOLDER if attempt == 1 else folder)
    except FileNotFoundError:
        pass  # nothing earlier to remove


def _describe(error: BaseException) -> str:
    """One line for the dashboard: the exception's type and message."""
    message = str(error).strip()
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _train(database: Database, settings: Settings, job_id: int, reporter: DatabaseReporter) -> dict:
    """Load the job and its dataset, then hand them to jobs/ (which imports Keras)."""
    from jobs.training import run_job

    spec, scanned = _load_job(database, settings, job_id)
    return run_job(spec, scanned, settings.job_artifact_dir(job_id), settings.cache_root, reporter)


def _load_job(database: Database, settings: Settings, job_id: int):
    """The job's spec and its dataset as jobs/ takes them (jobs.spec.JobSpec, jobs.datasets.ScannedDataset); the
    dataset's folder is this host's copy when the storage is not the home."""
    from jobs.datasets import ImageFile, ScannedDataset, fetch_dataset
    from jobs.spec import JobSpec

    with database.transaction() as session:
        job = session.get(Job, job_id)
        dataset = session.get(Dataset, job.benchmark.dataset_id)
        spec, scanned = JobSpec.model_validate(job.spec), ScannedDataset(
            root=Path(dataset.root), classes=list(dataset.classes),
            files=[ImageFile(*entry) for entry in dataset.manifest],
            counts=dict(dataset.counts), skipped=list(dataset.skipped), sha256=dataset.sha256,
        )
    if not settings.storage_is_home:
        scanned.root = fetch_dataset(settings.storage(), scanned, settings.cache_root)
    return spec, scanned


def help_with_trials(job_id: int, attempt: int, worker_name: str, settings: Settings) -> None:
    """Train trials of a running job another worker owns, as long as it has some nobody holds.

    A message for an attempt that has ended, or a job with no trial left to take, costs a query. An
    error ends this worker's help, never the job: its trial is released and the owner trains it.
    """
    from jobs.training import run_trials

    database = Database(settings.database_url)
    reporter = HelperReporter(database, job_id, attempt, worker_name, settings.liveness.job_lost_after_seconds)
    try:
        with database.transaction() as session:
            if not ops.has_trials_to_take(session, job_id, attempt):
                log.info("job %s: attempt %s has no trial left to take; skipping", job_id, attempt)
                return
        spec, scanned = _load_job(database, settings, job_id)
        with heartbeat_thread(reporter, settings.liveness.job_beat_seconds):
            run_trials(spec, scanned, settings.job_artifact_dir(job_id), settings.cache_root, reporter)
    except AttemptSuperseded:
        log.warning("job %s: attempt %s ended or was superseded; this worker stopped helping", job_id, attempt)
    except Exception:
        log.exception("job %s: training a trial on %s failed; its owner will train it", job_id, worker_name)
    finally:
        try:
            reporter.release_trials()
        finally:
            database.dispose()
