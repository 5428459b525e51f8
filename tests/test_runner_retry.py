"""A retry, and a job cancelled while queued, start from epoch 1 with no file of an earlier attempt, even
when an earlier attempt left a checkpoint behind (issue 10, item 7); a trial whose worker died is taken
over from its checkpoint. The worker's runner trains for real (Keras, a tiny VGG16) on a real database
and Redis; only the death of a worker is simulated."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from config.settings import ensure_folders
from dashboard.dataset_registry import dataset_fields
from db import operations as ops
from db.models import Epoch, Job, JobStatus
from db.migrate import upgrade
from db.session import Database
from jobs.checkpoint import CHECKPOINT_FOLDER
from jobs.datasets import scan_dataset
from jobs.spec import JobSpec
from testsupport.images import make_image_folder
from worker.queues import make_celery
from worker.runner import DatabaseReporter, HelperReporter, run_job_by_id

WORKER = "cpu1@test"
EPOCHS = 4
KILLED_AT_EPOCH = 3
# A file TensorFlow's TensorBoard callback leaves in an attempt's artifacts, named per attempt.
EARLIER_LOG = Path("tensorboard") / "events.out.tfevents.attempt-1"


class ProcessKilled(BaseException):
    """Stands for SIGKILL: no `except Exception` sees it, so nothing is cleaned up."""


class DyingReporter(DatabaseReporter):
    """The runner's reporter, in a worker that is killed while it reports epoch KILLED_AT_EPOCH."""

    def record_epochs(self, epoch: int, rows: dict[int, dict]) -> None:
        if epoch == KILLED_AT_EPOCH:
            raise ProcessKilled
        super().record_epochs(epoch, rows)


@pytest.fixture
def database(settings):
    """The home's own SQLite database, as `tlbench up` makes it."""
    ensure_folders(settings)
    upgrade(settings.database_url)
    database = Database(settings.database_url)
    yield database
    database.dispose()


@pytest.fixture
def celery(settings):
    """A Celery client of the test Redis (the runner sends a job of a dead process back through it)."""
    app = make_celery(settings.redis_url)
    yield app
    app.close()


SPEC = JobSpec(backbone="VGG16", image_size=32, epochs=EPOCHS, batch_size=8, learning_rate=1e-3, patience=EPOCHS,
               weights="none", seed=3)


@pytest.fixture
def scanned(tmp_path):
    """A 2-class dataset of 32 px images."""
    return scan_dataset(make_image_folder(tmp_path / "images", classes=2, per_class=8, size=32))


def queued_job(database, scanned, spec: JobSpec) -> int:
    """The id of a new queued job of `spec` on the dataset."""
    with database.transaction() as session:
        dataset = ops.add_dataset(session, **dataset_fields("shapes", scanned.root, False, scanned))
        benchmark = ops.create_benchmark(session, name="b", dataset_id=dataset.id, config={},
                                         specs=[spec.model_dump()])
        return benchmark.jobs[0].id


@pytest.fixture
def job_id(database, scanned) -> int:
    """A queued job of a tiny VGG16 on the dataset."""
    return queued_job(database, scanned, SPEC)


def killed_mid_training(database, settings, job_id: int, scanned, tmp_path) -> None:
    """Attempt 1 trains until epoch KILLED_AT_EPOCH is checkpointed; its worker dies and, restarting, puts it back."""
    from jobs.training import run_job

    with database.transaction() as session:
        attempt = ops.claim_job(session, job_id, WORKER)
    artifacts = settings.job_artifact_dir(job_id)
    with pytest.raises(ProcessKilled):
        run_job(SPEC, scanned, artifacts, tmp_path / "other-host-cache", DyingReporter(database, job_id, attempt))
    (artifacts / EARLIER_LOG).parent.mkdir(exist_ok=True)
    (artifacts / EARLIER_LOG).write_text("attempt 1")
    assert list((artifacts / CHECKPOINT_FOLDER).rglob("state.json"))  # the killed attempt left a checkpoint
    with database.transaction() as session:
        assert [queued.id for queued in ops.requeue_jobs_held_by(session, WORKER)] == [job_id]


def run(database, settings, celery, job_id: int) -> Job:
    """What the worker does with the job's message; the job as it then stands."""
    run_job_by_id(job_id, WORKER, celery, settings)
    with database.transaction() as session:
        return session.get(Job, job_id)


def retry(database, job_id: int) -> None:
    with database.transaction() as session:
        ops.reset_for_retry(session, job_id)


def assert_started_afresh(database, settings, job: Job, attempt: int, retried_at: float) -> None:
    """The attempt ran epochs 1..EPOCHS itself, and every file in the job's folder is its own."""
    assert (job.status, job.attempt) == (JobStatus.SUCCEEDED, attempt), job.error
    assert job.summary["resumed_after_epoch"] is None
    with database.transaction() as session:
        epochs = session.query(Epoch).filter_by(job_id=job.id).order_by(Epoch.epoch).all()
        assert [row.epoch for row in epochs] == list(range(1, EPOCHS + 1))
    folder = settings.job_artifact_dir(job.id)
    assert not (folder / CHECKPOINT_FOLDER).exists() and not (folder / EARLIER_LOG).exists()
    assert all(path.stat().st_mtime >= retried_at for path in folder.rglob("*") if path.is_file())


def test_a_job_requeued_by_recovery_then_cancelled_while_queued_is_retried_from_epoch_1(
        database, settings, celery, job_id, scanned, tmp_path):
    killed_mid_training(database, settings, job_id, scanned, tmp_path)
    with database.transaction() as session:
        assert ops.request_cancel(session, job_id).status is JobStatus.CANCELLED
    retried_at = time.time()
    retry(database, job_id)
    assert_started_afresh(database, settings, run(database, settings, celery, job_id), 2, retried_at)


def test_a_resumed_attempt_that_fails_before_training_is_retried_from_epoch_1(
        database, settings, celery, job_id, scanned, tmp_path):
    killed_mid_training(database, settings, job_id, scanned, tmp_path)
    with database.transaction() as session:
        images = Path(session.get(Job, job_id).benchmark.dataset.root)
    hidden = images.rename(images.with_name("moved-away"))  # attempt 2 fails while decoding the images
    failed = run(database, settings, celery, job_id)
    assert (failed.status, failed.attempt, failed.phase) == (JobStatus.FAILED, 2, None)
    hidden.rename(images)
    retried_at = time.time()
    retry(database, job_id)
    assert_started_afresh(database, settings, run(database, settings, celery, job_id), 3, retried_at)


# Trials that cannot share features (augmentation here) are taken one at a time by any worker of the pool.
SHARED_SPEC = SPEC.model_copy(update={"augment": True, "learning_rate": (1e-3, 3e-4)})
HELPER = "cpu2@test"


class DyingHelper(HelperReporter):
    """A worker helping with the job's trials, killed while it reports epoch KILLED_AT_EPOCH of its trial
    (the epoch is checkpointed by then, as a real kill after the checkpoint's write would leave it)."""

    def record_epochs(self, epoch: int, rows: dict[int, dict]) -> None:
        if epoch == KILLED_AT_EPOCH:
            raise ProcessKilled
        super().record_epochs(epoch, rows)


class CountingReporter(DatabaseReporter):
    """The job's own worker's reporter, remembering which epochs of which trial it trained itself."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trained: list[tuple[int, int]] = []

    def record_epochs(self, epoch: int, rows: dict[int, dict]) -> None:
        self.trained.extend((trial, epoch) for trial in rows)
        super().record_epochs(epoch, rows)


@pytest.fixture
def shared_job_id(database, scanned) -> int:
    """A queued job whose two trials (two learning rates, with augmentation) train one at a time."""
    return queued_job(database, scanned, SHARED_SPEC)


def test_a_trial_whose_helper_died_is_taken_over_from_its_checkpoint_and_loses_no_reported_epoch(
        database, settings, shared_job_id, scanned, tmp_path):
    from jobs.spec import plan_trials
    from jobs.training import run_job, run_trials

    job_id, artifacts = shared_job_id, settings.job_artifact_dir(shared_job_id)
    with database.transaction() as session:
        attempt = ops.claim_job(session, job_id, WORKER)
    owner = CountingReporter(database, job_id, attempt, WORKER, silent_after_seconds=1)
    owner.resume_from({trial: [] for trial in plan_trials(SHARED_SPEC)})  # as the owner starts: the trials exist
    with pytest.raises(ProcessKilled):  # the helper takes trial 0 and dies in its epoch KILLED_AT_EPOCH
        run_trials(SHARED_SPEC, scanned, artifacts, tmp_path / "cache", DyingHelper(database, job_id, attempt, HELPER))

    summary = run_job(SHARED_SPEC, scanned, artifacts, tmp_path / "cache", owner)
    # The owner trained trial 1 whole, and trial 0 from the helper's last checkpoint on: nothing twice.
    assert sorted(owner.trained) == sorted([(1, epoch) for epoch in range(1, EPOCHS + 1)]
                                           + [(0, epoch) for epoch in range(KILLED_AT_EPOCH + 1, EPOCHS + 1)])
    assert (summary["trials_run"], summary["resumed_after_epoch"]) == (2, KILLED_AT_EPOCH)
    with database.transaction() as session:
        trials = ops.job_trials(session, [job_id])[job_id]
        assert [(trial.finished, trial.worker, trial.epochs_run) for trial in trials] == [
            ("completed", WORKER, EPOCHS), ("completed", WORKER, EPOCHS)]
        for number in (0, 1):
            assert [row.epoch for row in ops.job_epochs(session, job_id, trial=number)] == list(range(1, EPOCHS + 1))
