"""Faults injected into a real stack (`tlbench up`: embedded Redis, Celery workers, gunicorn):
a killed worker or pool child, a worker that goes silent, a broker that restarts empty, a message
that was never sent. Each time the job ends `succeeded` with exactly one epoch row per epoch, and a
job that was cut off resumes after its last finished epoch; a job cancelled before its worker died
ends cancelled."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import redis
import requests

from config.settings import embedded_redis_socket, load_settings
from db import operations as ops
from db.session import Database
from jobs.spec import JobSpec
from testsupport.images import make_image_folder
from testsupport.stack import running_stack, wait_until
from worker.recovery import BROKER_MARKER

EPOCHS = 24
JOB_SECONDS = 300
SHORT_JOB_SECONDS = 120  # two epochs
RESTART_SECONDS = 10
# A silent job is re-queued, and a queued job nobody claimed is sent again, after this long (the workers
# check every 10 s). Longer than the 10 s between a running job's heartbeats: with less, a first epoch
# that traces for a few seconds looked silent, and its job ran again. Jobs waiting their turn get extra
# messages: each is dropped at its claim.
LOST_AFTER_SECONDS = 15
RESEND_AFTER_SECONDS = 3
FAULT_SETTINGS = {"TLBENCH_JOB_LOST_AFTER": str(LOST_AFTER_SECONDS),
                  "TLBENCH_QUEUED_RESEND_AFTER": str(RESEND_AFTER_SECONDS)}


@pytest.fixture(scope="module")
def faulty_stack(tmp_path_factory):
    """A stack of its own (processes get killed here) that declares a job lost after a few seconds."""
    os.environ.update(FAULT_SETTINGS)
    try:
        with running_stack(tmp_path_factory.mktemp("faults-home")) as stack:
            folder = make_image_folder(tmp_path_factory.mktemp("images") / "shapes", classes=2, per_class=10, size=32)
            stack["dataset"] = register_dataset(stack["url"], folder)
            yield stack
    finally:
        for name in FAULT_SETTINGS:
            del os.environ[name]


def register_dataset(url: str, folder: Path) -> int:
    """Upload the folder as a zip; its dataset id."""
    from tlbench.client import zip_folder

    response = requests.post(f"{url}/api/v1/datasets", files={"file": ("shapes.zip", zip_folder(folder))})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def submit(stack: dict, jobs: int = 1) -> list[int]:
    """Queue `jobs` end-to-end jobs (augmentation rules out the feature cache, so every epoch takes a while)."""
    created = requests.post(f"{stack['url']}/api/v1/benchmarks", json={
        "dataset": stack["dataset"], "backbones": ["VGG16", "VGG19", "ResNet50"][:jobs], "epochs": EPOCHS,
        "patience": EPOCHS, "image_size": 32, "weights": "none", "batch_size": 4, "augment": True})
    assert created.status_code == 201, created.text
    return [job["id"] for job in created.json()["jobs"]]


def job(stack: dict, job_id: int) -> dict:
    return requests.get(f"{stack['url']}/api/v1/jobs/{job_id}").json()


def running_with_epochs(stack: dict, job_id: int, epochs: int) -> dict:
    """Wait until the job is running and has finished `epochs` epochs."""
    return wait_until(lambda: (state := job(stack, job_id))["status"] == "running"
                      and state["epochs_done"] >= epochs and state, JOB_SECONDS, f"job {job_id} at epoch {epochs}",
                      interval=0.1)


def finished(stack: dict, job_id: int) -> dict:
    return wait_until(lambda: (state := job(stack, job_id))["status"] not in ("queued", "running") and state,
                      JOB_SECONDS, f"job {job_id} to finish")


def assert_whole(stack: dict, job_id: int, attempts: int) -> dict:
    """The job succeeded after `attempts` attempts with epochs 1..EPOCHS recorded once each."""
    state = finished(stack, job_id)
    assert state["status"] == "succeeded", state.get("error")
    assert state["attempt"] == attempts
    epochs = requests.get(f"{stack['url']}/api/v1/jobs/{job_id}/epochs").json()["epochs"]
    assert [row["epoch"] for row in epochs] == list(range(1, EPOCHS + 1))
    assert not (stack["home"] / "artifacts" / f"job-{job_id}" / "checkpoint").exists()
    return state


def training_worker(stack: dict) -> psutil.Process:
    """The Celery main process of the CPU training worker under `tlbench up`."""
    def find():
        for process in psutil.Process(stack["process"].pid).children(recursive=True):
            command = " ".join(process.cmdline())
            if "celery" in command and "cpu1@" in command and process.parent().pid == stack["process"].pid:
                return process
        return None
    return wait_until(find, RESTART_SECONDS, "the training worker")


def pool_child(worker: psutil.Process) -> psutil.Process:
    """The worker's pool process, the one that runs the job."""
    return wait_until(lambda: worker.children() and worker.children()[0], 30, "the worker's pool child")


def test_a_killed_pool_child_is_replaced_and_its_job_resumes(faulty_stack):
    job_id, = submit(faulty_stack)
    running_with_epochs(faulty_stack, job_id, 2)
    pool_child(training_worker(faulty_stack)).send_signal(signal.SIGKILL)
    state = assert_whole(faulty_stack, job_id, attempts=2)
    assert state["summary"]["resumed_after_epoch"] >= 2


def test_a_killed_worker_is_restarted_within_10_s_and_its_job_resumes(faulty_stack):
    job_id, = submit(faulty_stack)
    running_with_epochs(faulty_stack, job_id, 2)
    worker = training_worker(faulty_stack)
    child = pool_child(worker)
    worker.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    psutil.wait_procs([child], timeout=5)
    assert not child.is_running(), "the pool child outlived its worker"
    replacement = wait_until(lambda: (found := training_worker(faulty_stack)).pid != worker.pid and found,
                             RESTART_SECONDS, "a new training worker")
    assert time.monotonic() - killed_at < RESTART_SECONDS and replacement.is_running()
    state = assert_whole(faulty_stack, job_id, attempts=2)
    assert state["summary"]["resumed_after_epoch"] >= 2


def test_a_silent_job_is_requeued_and_its_old_attempt_can_no_longer_write(faulty_stack):
    job_id, = submit(faulty_stack)
    running_with_epochs(faulty_stack, job_id, 2)
    child = pool_child(training_worker(faulty_stack))
    child.send_signal(signal.SIGSTOP)  # alive, but silent: no heartbeat, no epoch
    try:
        requeued = wait_until(lambda: (state := job(faulty_stack, job_id))["status"] == "queued" and state,
                              LOST_AFTER_SECONDS + 30, "the silent job to be re-queued", interval=0.2)
        assert "re-queued" in requeued["phase"]
    finally:
        child.send_signal(signal.SIGCONT)  # the old attempt wakes up and must stop without writing
    state = assert_whole(faulty_stack, job_id, attempts=2)
    assert state["summary"]["resumed_after_epoch"] >= 2


def test_queued_jobs_survive_a_broker_that_restarts_empty(faulty_stack):
    first, *queued = submit(faulty_stack, jobs=3)
    running_with_epochs(faulty_stack, first, 1)
    broker = next(process for process in psutil.Process(faulty_stack["process"].pid).children()
                  if "redis-server" in " ".join(process.cmdline()))
    broker.send_signal(signal.SIGKILL)  # the embedded Redis keeps nothing: the queued messages are gone
    for job_id in (first, *queued):
        assert_whole(faulty_stack, job_id, attempts=1)  # none lost, none run twice


def test_a_full_disk_fails_the_job_with_a_clear_error_and_keeps_the_database_consistent(faulty_stack):
    created = requests.post(f"{faulty_stack['url']}/api/v1/benchmarks", json={
        "dataset": faulty_stack["dataset"], "backbones": ["VGG16"], "epochs": 3, "image_size": 32,
        "weights": "none", "batch_size": 4}).json()
    job_id = created["jobs"][0]["id"]
    artifacts = faulty_stack["home"] / "artifacts" / f"job-{job_id}"
    artifacts.mkdir(parents=True)
    # Writes to /dev/full fail with ENOSPC, exactly as on a full disk.
    (artifacts / "history.csv").symlink_to("/dev/full")
    state = finished(faulty_stack, job_id)
    assert state["status"] == "failed" and state["attempt"] == 1
    assert "ArtifactWriteError" in state["error"] and "No space left on device" in state["error"]
    assert "history.csv" in state["error"] and state["summary"] is None
    epochs = requests.get(f"{faulty_stack['url']}/api/v1/jobs/{job_id}/epochs").json()["epochs"]
    assert [row["epoch"] for row in epochs] == [1, 2, 3]  # what was trained is still on record
    assert not (artifacts / "checkpoint").exists()
    (artifacts / "history.csv").unlink()  # room again: a retry succeeds
    retried = requests.post(f"{faulty_stack['url']}/api/v1/jobs/{job_id}/retry")
    assert retried.status_code == 202 and retried.json()["status"] == "queued"
    state = finished(faulty_stack, job_id)
    assert (state["status"], state["attempt"]) == ("succeeded", 2)


def test_a_job_cancelled_while_running_whose_worker_dies_ends_cancelled_and_never_trains_again(faulty_stack):
    job_id, = submit(faulty_stack)
    before = running_with_epochs(faulty_stack, job_id, 1)
    worker = training_worker(faulty_stack)
    child = pool_child(worker)
    child.send_signal(signal.SIGSTOP)  # frozen mid-epoch: its callback never reads the cancel flag
    cancelled = requests.post(f"{faulty_stack['url']}/api/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "running"
    worker.send_signal(signal.SIGKILL)  # its child dies with it; the restarted worker finds the job it held
    state = finished(faulty_stack, job_id)
    assert (state["status"], state["attempt"]) == ("cancelled", 1), state
    wait_until(lambda: training_worker(faulty_stack).pid != worker.pid, RESTART_SECONDS, "a new training worker")
    state = job(faulty_stack, job_id)
    assert (state["status"], state["attempt"]) == ("cancelled", 1)
    assert state["epochs_done"] <= before["epochs_done"] + 1  # nothing trained after the kill


def test_a_job_whose_message_was_lost_is_sent_again_and_runs(faulty_stack):
    # As when the broker fails the send right after the commit: the job is queued, and no message exists.
    spec = JobSpec(backbone="VGG16", image_size=32, epochs=2, batch_size=4, learning_rate=1e-3, patience=2,
                   weights="none")
    settings = load_settings({"TLBENCH_HOME": str(faulty_stack["home"])})
    broker = redis.Redis(unix_socket_path=str(embedded_redis_socket(settings.home)))
    # Once a worker has checked the broker, the re-send of a broker that restarted empty is done with.
    wait_until(lambda: broker.exists(BROKER_MARKER), 30, "the workers' first recovery check")
    broker.close()
    database = Database(settings.database_url)
    try:
        with database.transaction() as session:
            job_id = ops.create_benchmark(session, name="lost send", dataset_id=faulty_stack["dataset"], config={},
                                          specs=[spec.model_dump()]).jobs[0].id
    finally:
        database.dispose()
    state = wait_until(lambda: (found := job(faulty_stack, job_id))["status"] not in ("queued", "running") and found,
                       RESEND_AFTER_SECONDS + 10 + SHORT_JOB_SECONDS, f"the lost job {job_id} to run")
    assert (state["status"], state["attempt"]) == ("succeeded", 1), state
