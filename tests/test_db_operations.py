"""Database operations: claiming, idempotent epoch rows, attempt ownership, derived status.

Each test runs on SQLite and on PostgreSQL (the `database` fixture of conftest.py)."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
import time_machine

from config.settings import Liveness
from db import operations as ops
from db.models import Benchmark, Epoch, Job, JobStatus
from testsupport.stack import wait_until

OFFLINE_AFTER = Liveness().worker_offline_after


@pytest.fixture
def job_ids(database) -> list[int]:
    """Two queued jobs of one benchmark."""
    with database.transaction() as session:
        dataset = ops.add_dataset(session, name="d", root="/d", classes=["a", "b"], counts={"a": 1, "b": 1},
                                  skipped=[], sha256="0" * 64, manifest=[])
        benchmark = ops.create_benchmark(session, name="b", dataset_id=dataset.id, config={},
                                         specs=[{"backbone": "VGG16"}, {"backbone": "ResNet50"}])
        return [job.id for job in benchmark.jobs]


def claim(database, job_id, worker="w1"):
    """Claim in its own transaction."""
    with database.transaction() as session:
        return ops.claim_job(session, job_id, worker)


def test_a_job_is_claimed_once(database, job_ids):
    assert claim(database, job_ids[0]) == 1
    assert claim(database, job_ids[0], "w2") is None
    with database.transaction() as session:
        job = session.get(Job, job_ids[0])
        assert (job.status, job.worker, job.attempt) == (JobStatus.RUNNING, "w1", 1)
        assert job.started_at.tzinfo is not None


def test_recording_an_epoch_twice_keeps_one_row_with_the_latest_values(database, job_ids):
    attempt = claim(database, job_ids[0])
    for loss in (0.9, 0.5):
        with database.transaction() as session:
            assert ops.record_epochs(session, job_ids[0], attempt, 1, {0: {"loss": loss, "val_accuracy": float("nan")}})
    with database.transaction() as session:
        rows = ops.job_epochs(session, job_ids[0])
        assert [(row.epoch, row.loss, row.val_accuracy) for row in rows] == [(1, 0.5, None)]


def test_a_stale_attempt_can_no_longer_write(database, job_ids):
    attempt = claim(database, job_ids[0])
    with database.transaction() as session:  # as a retry would: back to the queue, claimed again
        session.get(Job, job_ids[0]).status = JobStatus.QUEUED
    newer = claim(database, job_ids[0], "w2")
    assert newer == attempt + 1
    with database.transaction() as session:
        assert not ops.record_epochs(session, job_ids[0], attempt, 1, {0: {"loss": 1.0}})
        assert not ops.heartbeat(session, job_ids[0], attempt)
        assert not ops.finish_job(session, job_ids[0], attempt, JobStatus.SUCCEEDED, summary={})
        assert ops.heartbeat(session, job_ids[0], newer, phase="training")
    with database.transaction() as session:
        assert session.query(Epoch).count() == 0
        assert session.get(Job, job_ids[0]).status is JobStatus.RUNNING


def test_benchmark_status_follows_its_jobs(database, job_ids):
    def status():
        with database.transaction() as session:
            return ops.list_benchmarks(session)[0].status

    assert status() is JobStatus.QUEUED
    first = claim(database, job_ids[0])
    assert status() is JobStatus.RUNNING
    with database.transaction() as session:
        ops.finish_job(session, job_ids[0], first, JobStatus.SUCCEEDED, summary={"best_val_accuracy": 0.9})
    assert status() is JobStatus.RUNNING  # one job still queued
    second = claim(database, job_ids[1])
    with database.transaction() as session:
        ops.finish_job(session, job_ids[1], second, JobStatus.FAILED, error="boom")
    assert status() is JobStatus.FAILED


def test_epochs_done_counts_the_highest_epoch(database, job_ids):
    attempt = claim(database, job_ids[0])
    for epoch in (1, 2, 3):
        with database.transaction() as session:
            ops.record_epochs(session, job_ids[0], attempt, epoch, {0: {"loss": 1.0}})
    with database.transaction() as session:
        assert ops.epochs_done(session, job_ids) == {job_ids[0]: 3, job_ids[1]: 0}


def test_two_workers_claiming_one_job_at_once_get_one_attempt(database, job_ids):
    # Each claim runs in its own thread and transaction, and each waits (up to hold_seconds) for the
    # other to have claimed too before committing. Unless the claim locks the row it reads, both read
    # "queued" and both commit an attempt; with the lock the second waits, then finds the job running.
    hold_seconds = 1.0
    both_claimed = threading.Barrier(2)
    attempts: dict[str, int | None] = {}

    def claim_and_hold(worker: str) -> None:
        with database.transaction() as session:
            attempts[worker] = ops.claim_job(session, job_ids[0], worker)
            try:
                both_claimed.wait(timeout=hold_seconds)
            except threading.BrokenBarrierError:
                pass  # the other claim is waiting for this transaction's lock

    threads = [threading.Thread(target=claim_and_hold, args=(worker,)) for worker in ("w1", "w2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(attempts.values(), key=str) == [1, None], attempts
    winner = next(worker for worker, attempt in attempts.items() if attempt == 1)
    with database.transaction() as session:
        job = session.get(Job, job_ids[0])
        assert (job.status, job.worker, job.attempt) == (JobStatus.RUNNING, winner, 1)


def test_json_columns_store_nan_and_infinity_as_null(database, job_ids):
    attempt = claim(database, job_ids[0])
    summary = {"best_val_accuracy": float("nan"), "history": [1.0, float("inf")], "epochs_run": 2}
    with database.transaction() as session:
        assert ops.finish_job(session, job_ids[0], attempt, JobStatus.SUCCEEDED, summary=summary)
    with database.transaction() as session:
        assert session.get(Job, job_ids[0]).summary == {"best_val_accuracy": None, "history": [1.0, None],
                                                        "epochs_run": 2}


# A cancelled job never trains again (issue 10, item 8)

LONG_AGO = datetime(2000, 1, 1, tzinfo=timezone.utc)


def status_of(database, job_id) -> JobStatus:
    with database.transaction() as session:
        return session.get(Job, job_id).status


def test_a_job_cancelled_while_running_whose_worker_restarts_ends_cancelled_and_is_never_claimed(database, job_ids):
    claim(database, job_ids[0])
    with database.transaction() as session:
        ops.request_cancel(session, job_ids[0])  # running: the flag is set, the epoch callback would stop it
    with database.transaction() as session:  # the worker died before its callback read the flag, and restarts
        assert ops.requeue_jobs_held_by(session, "w1") == []
    assert status_of(database, job_ids[0]) is JobStatus.CANCELLED
    assert claim(database, job_ids[0]) is None  # the message Celery hands back finds nothing to run


def test_a_job_cancelled_while_running_whose_worker_goes_silent_ends_cancelled(database, job_ids):
    claim(database, job_ids[0])
    with database.transaction() as session:
        ops.request_cancel(session, job_ids[0])
        session.get(Job, job_ids[0]).heartbeat_at = LONG_AGO  # its process went silent long ago
    with database.transaction() as session:
        assert ops.requeue_lost_jobs(session, timedelta(seconds=60)) == []
    with database.transaction() as session:
        job = session.get(Job, job_ids[0])
        assert (job.status, job.finished_at is not None) == (JobStatus.CANCELLED, True)
    assert claim(database, job_ids[0]) is None


def test_a_queued_job_that_was_asked_to_stop_is_not_claimed(database, job_ids):
    with database.transaction() as session:  # as an earlier tlbench left it: re-queued after a cancel
        session.get(Job, job_ids[0]).cancel_requested = True
    assert claim(database, job_ids[0]) is None
    assert status_of(database, job_ids[0]) is JobStatus.CANCELLED


# Only a job that recovery put back may resume its checkpoint (item 7)

def may_resume(database, job_id) -> bool:
    with database.transaction() as session:
        return ops.may_resume(session, job_id)


def test_only_a_job_put_back_by_recovery_resumes_its_checkpoint(database, job_ids):
    claim(database, job_ids[0])
    assert not may_resume(database, job_ids[0])  # a first attempt starts afresh
    with database.transaction() as session:
        ops.requeue_jobs_held_by(session, "w1")
    claim(database, job_ids[0])
    assert may_resume(database, job_ids[0])  # the worker died: the next attempt carries on
    with database.transaction() as session:
        ops.requeue_jobs_held_by(session, "w1")
        ops.request_cancel(session, job_ids[0])  # cancelled while queued...
        ops.reset_for_retry(session, job_ids[0])  # ...then retried: from epoch 1
    assert claim(database, job_ids[0]) == 3
    assert not may_resume(database, job_ids[0])


def test_a_retried_job_that_failed_after_a_resume_starts_afresh(database, job_ids):
    claim(database, job_ids[0])
    with database.transaction() as session:
        ops.requeue_jobs_held_by(session, "w1")
    attempt = claim(database, job_ids[0])
    with database.transaction() as session:  # the resumed attempt fails while decoding the images
        ops.finish_job(session, job_ids[0], attempt, JobStatus.FAILED, error="OSError: gone")
        ops.reset_for_retry(session, job_ids[0])
    claim(database, job_ids[0])
    assert not may_resume(database, job_ids[0])


# A queued job whose message was lost is sent again (item 6)

def sent_at(database, job_id) -> datetime:
    with database.transaction() as session:
        return session.get(Job, job_id).sent_at


def test_a_new_job_records_when_it_was_sent_on_the_database_clock(database, job_ids):
    with database.transaction() as session:
        database_now = ops.database_now(session)
    assert abs(database_now - sent_at(database, job_ids[0])) < timedelta(seconds=5)


def test_a_queued_job_not_claimed_in_time_is_sent_again_at_most_once_per_interval(database, job_ids):
    with database.transaction() as session:
        assert ops.jobs_to_send_again(session, timedelta(seconds=60)) == []  # both just sent
        for job_id in job_ids:
            session.get(Job, job_id).sent_at = LONG_AGO  # their messages were lost long ago
    claim(database, job_ids[1])  # one of them was claimed after all
    with database.transaction() as session:
        assert ops.jobs_to_send_again(session, timedelta(seconds=60)) == [ops.QueuedJob(job_ids[0], "default")]
    with database.transaction() as session:  # the next check, a moment later, sends nothing more
        assert ops.jobs_to_send_again(session, timedelta(seconds=60)) == []
    assert sent_at(database, job_ids[0]) > LONG_AGO


def test_deleting_a_benchmark_removes_its_jobs_and_epochs(database, job_ids):
    attempt = claim(database, job_ids[0])
    with database.transaction() as session:
        ops.record_epochs(session, job_ids[0], attempt, 1, {0: {"loss": 1.0}})
        benchmark_id = session.get(Job, job_ids[0]).benchmark_id
    with database.transaction() as session:
        ops.delete_benchmark(session, benchmark_id)
    with database.transaction() as session:
        assert (session.query(Benchmark).count(), session.query(Job).count(), session.query(Epoch).count()) == (0, 0, 0)


# Liveness is judged on the database's clock, whatever the clock of the host that asks (item 9)

SKEW = timedelta(minutes=5)


class ProcessClock:
    """This process's clock, set minutes off as on a host whose clock is wrong; the database server's stays right."""

    def __init__(self):
        self.traveller = None

    def skew(self, offset: timedelta) -> None:
        """From now on this process's time is `offset` away from the real one (and keeps ticking)."""
        self.right()
        self.traveller = time_machine.travel(datetime.now(timezone.utc) + offset, tick=True)
        self.traveller.start()

    def right(self) -> None:
        """Back to the real time: another host, whose clock is right."""
        if self.traveller is not None:
            self.traveller.stop()
            self.traveller = None


@pytest.fixture
def process_clock():
    clock = ProcessClock()
    yield clock
    clock.right()


@pytest.mark.parametrize("offset", [-SKEW, SKEW], ids=["worker-behind", "worker-ahead"])
def test_a_live_job_on_a_skewed_worker_is_kept_and_a_dead_one_is_requeued(database, job_ids, process_clock, offset):
    process_clock.skew(offset)  # the worker's host: claims and beats
    attempt = claim(database, job_ids[0])
    with database.transaction() as session:
        assert ops.heartbeat(session, job_ids[0], attempt)
    process_clock.right()  # another host, whose clock is right, checks for silent jobs
    with database.transaction() as session:
        assert ops.requeue_lost_jobs(session, timedelta(seconds=60)) == []  # alive: not lost
    # Then the worker dies: its job is re-queued once it has been silent for the limit (1 s here).
    wait_until(lambda: requeued(database, timedelta(seconds=1)), 10, "the dead job to be re-queued", 0.1)


def requeued(database, lost_after: timedelta) -> list:
    with database.transaction() as session:
        return ops.requeue_lost_jobs(session, lost_after)


@pytest.mark.parametrize("offset", [-SKEW, SKEW], ids=["checker-behind", "checker-ahead"])
def test_a_skewed_host_neither_requeues_a_live_job_nor_keeps_a_dead_one(database, job_ids, process_clock, offset):
    attempt = claim(database, job_ids[0])
    with database.transaction() as session:
        assert ops.heartbeat(session, job_ids[0], attempt)
    process_clock.skew(offset)  # the host that checks has the wrong time
    with database.transaction() as session:
        assert ops.requeue_lost_jobs(session, timedelta(seconds=60)) == []
    wait_until(lambda: requeued(database, timedelta(seconds=1)), 10, "the dead job to be re-queued", 0.1)


def worker_statuses(database) -> list[str]:
    with database.transaction() as session:
        return [ops.worker_status(worker) for worker, _ in ops.list_workers(session, OFFLINE_AFTER)]


@pytest.mark.parametrize("offset", [-SKEW, SKEW], ids=["behind", "ahead"])
def test_a_worker_on_a_skewed_host_shows_online_while_it_beats(database, process_clock, offset):
    process_clock.skew(offset)
    with database.transaction() as session:
        ops.register_worker(session, "cpu1@skewed", "skewed", "CPU", None, ["default"])
    assert worker_statuses(database) == ["online"]  # as the worker itself sees it
    process_clock.right()
    assert worker_statuses(database) == ["online"]  # as the web app on another host sees it
    process_clock.skew(-offset)
    assert worker_statuses(database) == ["online"]  # a web host skewed the other way


# Trials that cannot share features are trained by several workers, each holding one trial at a time.
SILENT_AFTER = timedelta(seconds=60)


def started_with_trials(database, job_id: int, count: int) -> int:
    """Claim the job for w1 and start its attempt with `count` trials; the attempt."""
    from jobs.spec import Trial

    attempt = claim(database, job_id)
    with database.transaction() as session:
        ops.resume_epochs(session, job_id, attempt, {Trial(n, 1e-3, n, n): [] for n in range(count)})
    return attempt


def claim_trial(database, job_id: int, attempt: int, number: int, worker: str):
    with database.transaction() as session:
        return ops.claim_trial(session, job_id, attempt, number, worker, SILENT_AFTER)


def fall_silent(database, job_id: int, number: int) -> None:
    """As if the trial's holder last beat an hour ago (it died)."""
    with database.transaction() as session:
        trial = next(trial for trial in ops.job_trials(session, [job_id])[job_id] if trial.number == number)
        trial.heartbeat_at = ops.database_now(session) - timedelta(hours=1)


def test_a_trial_is_held_by_one_worker_until_it_falls_silent_releases_it_or_finishes(database, job_ids):
    attempt = started_with_trials(database, job_ids[0], 2)
    assert claim_trial(database, job_ids[0], attempt, 0, "w1") is True
    assert claim_trial(database, job_ids[0], attempt, 0, "w2") is False  # w1 holds it and beats
    assert claim_trial(database, job_ids[0], attempt, 1, "w2") is True
    fall_silent(database, job_ids[0], 0)
    assert claim_trial(database, job_ids[0], attempt, 0, "w2") is True  # taken over from a silent w1
    with database.transaction() as session:
        ops.release_trials(session, job_ids[0], attempt, "w2")
    assert claim_trial(database, job_ids[0], attempt, 1, "w1") is True  # released: anyone may take it
    with database.transaction() as session:
        ops.record_trials(session, job_ids[0], attempt, [{
            "number": 1, "cancelled": False, "selected": False, "best_val_accuracy": 0.5, "best_epoch": 1,
            "epochs_run": 1, "test_accuracy": None, "test_correct": None}])
    assert claim_trial(database, job_ids[0], attempt, 1, "w1") is False  # finished: nobody trains it again
    with database.transaction() as session:
        assert not ops.has_trials_to_take(session, job_ids[0], attempt + 1)
        assert ops.has_trials_to_take(session, job_ids[0], attempt)


def test_a_newer_attempt_takes_the_trials_of_the_one_it_replaced(database, job_ids):
    attempt = started_with_trials(database, job_ids[0], 1)
    assert claim_trial(database, job_ids[0], attempt, 0, "w2") is True
    with database.transaction() as session:
        assert [queued.id for queued in ops.requeue_jobs_held_by(session, "w1")] == [job_ids[0]]
    newer = claim(database, job_ids[0], "w3")
    assert claim_trial(database, job_ids[0], attempt, 0, "w2") is None  # the old attempt lost the job
    assert claim_trial(database, job_ids[0], newer, 0, "w3") is True  # w2's hold was the old attempt's
    with database.transaction() as session:
        assert not ops.trial_heartbeat(session, job_ids[0], attempt, "w2")
        assert ops.trial_heartbeat(session, job_ids[0], newer, "w3")


def test_heartbeats_keep_held_trials_and_a_helper_shows_the_job_it_trains(database, job_ids):
    attempt = started_with_trials(database, job_ids[0], 2)
    with database.transaction() as session:
        for name in ("w1", "w2"):
            ops.register_worker(session, name, "host", "CPU", None, ["default"])
    assert claim_trial(database, job_ids[0], attempt, 0, "w1") and claim_trial(database, job_ids[0], attempt, 1, "w2")
    for number in (0, 1):
        fall_silent(database, job_ids[0], number)
    with database.transaction() as session:
        assert ops.heartbeat(session, job_ids[0], attempt, worker="w1")  # the owner beats for its trial too
        assert ops.trial_heartbeat(session, job_ids[0], attempt, "w2")
    assert claim_trial(database, job_ids[0], attempt, 0, "w2") is False
    assert claim_trial(database, job_ids[0], attempt, 1, "w1") is False
    with database.transaction() as session:
        assert {worker.name: job and job.id for worker, job in ops.list_workers(session, OFFLINE_AFTER)} == {
            "w1": job_ids[0], "w2": job_ids[0]}
