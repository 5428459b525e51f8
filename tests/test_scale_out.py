"""Scaling out on one host, with real processes: `tlbench up` plus a second `tlbench worker` in another
process against the same home; pools; names unique per host (lock files); per-worker metrics.

There is no GPU here: GPUs are faked by an `nvidia-smi` script on PATH (NVML finds no driver, so the
launcher falls back to nvidia-smi), and the workers "pinned" to them train on the CPU."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from config.settings import Liveness, load_settings
from db import operations as ops
from db.models import Job, JobStatus
from dbutil import BACKENDS
from testsupport.images import make_image_folder
from testsupport.stack import running_stack, wait_until
from worker import recovery
from worker.queues import make_celery
from worker.devices import Gpu
from worker.launch import worker_processes
from worker.names import LOCK_DIR_ENV, NameLocks, WorkerRefused

JOB_SECONDS = 300
# Settings for building worker command lines only: nothing is created under this home.
SETTINGS = load_settings({"TLBENCH_HOME": "/nonexistent/tlbench-home"})
WORKER_START_SECONDS = 90
# Two jobs of one benchmark, 32 px, random weights: a few seconds each once TensorFlow is loaded.
SMALL_JOBS = {"epochs": 3, "patience": 3, "image_size": 32, "weights": "none", "batch_size": 8}
STARTED = re.compile(r"tlbench: started (\S+@\S+?)[,;]")


@pytest.fixture(scope="module", params=BACKENDS)
def cluster(request, tmp_path_factory):
    """`tlbench up` (embedded Redis, cpu1, the web app) on a fresh home, with a small dataset uploaded; once
    on its SQLite file and once on a fresh PostgreSQL database (what several hosts share)."""
    from tlbench.client import zip_folder

    database_url = None if request.param == "sqlite" else request.getfixturevalue("postgres").create_database()
    with running_stack(tmp_path_factory.mktemp("scale-home"), database_url=database_url) as stack:
        stack["database_url"] = database_url
        folder = make_image_folder(tmp_path_factory.mktemp("images") / "shapes", classes=2, per_class=6, size=32)
        response = requests.post(f"{stack['url']}/api/v1/datasets", files={"file": ("shapes.zip", zip_folder(folder))})
        assert response.status_code == 201, response.text
        stack["dataset"] = response.json()["id"]
        yield stack


def worker_environment(home: Path, database_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a `tlbench worker` on `home`: its embedded Redis socket, and its SQLite file
    unless `database_url` names the database."""
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
    return {**env, "TLBENCH_HOME": str(home), **({"DATABASE_URL": database_url} if database_url else {}), **extra}


@contextmanager
def tlbench_worker(env: dict[str, str], log: Path, *options: str):
    """`tlbench worker --gpus none OPTIONS` in its own process; yields (process, the training worker's name)."""
    with log.open("w") as output:
        process = subprocess.Popen([sys.executable, "-m", "tlbench", "worker", "--gpus", "none", *options],
                                   env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        match = wait_until(lambda: STARTED.search(log.read_text()) or process.poll() is not None,
                           WORKER_START_SECONDS, "tlbench worker to start its workers")
        assert process.poll() is None, log.read_text()[-3000:]
        yield process, match.group(1)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def workers(url: str) -> dict[str, dict]:
    """Every worker the API lists, by name."""
    return {worker["name"]: worker for worker in requests.get(f"{url}/api/v1/workers", timeout=10).json()["workers"]}


def idle(url: str, *names: str) -> bool:
    """Whether these workers are online and run nothing."""
    listed = workers(url)
    return all(name in listed and listed[name]["status"] == "online" and listed[name]["current_job"] is None
               for name in names)


def online(listed: dict[str, dict]) -> set[str]:
    """The names of the listed workers that are online."""
    return {name for name, worker in listed.items() if worker["status"] == "online"}


def job(url: str, job_id: int) -> dict:
    return requests.get(f"{url}/api/v1/jobs/{job_id}", timeout=10).json()


def finished(url: str, job_id: int) -> dict:
    """Wait until the job has ended; the job."""
    return wait_until(lambda: (state := job(url, job_id))["status"] not in ("queued", "running") and state,
                      JOB_SECONDS, f"job {job_id} to finish")


def stack_worker_name(url: str) -> str:
    """The name of the CPU training worker `tlbench up` started (cpu1@<this host>)."""
    return wait_until(lambda: next((name for name, worker in workers(url).items()
                                    if worker["role"] == "training" and worker["status"] == "online"), None),
                      WORKER_START_SECONDS, "the stack's training worker")


def test_a_second_tlbench_worker_on_the_host_gets_its_own_name_and_trains_at_the_same_time(cluster, tmp_path):
    url = cluster["url"]
    first = stack_worker_name(url)
    second_worker = tlbench_worker(worker_environment(cluster["home"], cluster["database_url"]), tmp_path / "worker.log")
    with second_worker as (_, second):
        assert (first.split("@")[0], second.split("@")[0]) == ("cpu1", "cpu2")
        assert first.split("@")[1] == second.split("@")[1]  # same host, different names
        wait_until(lambda: idle(url, first, second), WORKER_START_SECONDS, "both training workers, idle")
        # Each process also starts a prediction worker, which may come online after its training worker.
        listed = wait_until(lambda: len(online(now := workers(url))) >= 4 and now, WORKER_START_SECONDS,
                            "both prediction workers, online")
        assert listed[second]["pools"] == ["default"] and listed[second]["role"] == "training"
        assert len(online(listed)) == 4  # + 2 predict

        created = requests.post(f"{url}/api/v1/benchmarks", json={
            "dataset": cluster["dataset"], "backbones": ["VGG16", "VGG19"], **SMALL_JOBS}).json()
        jobs = [finished(url, created_job["id"]) for created_job in created["jobs"]]

    assert [state["status"] for state in jobs] == ["succeeded", "succeeded"], [state["error"] for state in jobs]
    assert {state["worker"] for state in jobs} == {first, second}
    starts = [datetime.fromisoformat(state["started_at"]) for state in jobs]
    ends = [datetime.fromisoformat(state["finished_at"]) for state in jobs]
    assert max(starts) < min(ends), f"the two jobs ran one after the other: {starts} {ends}"


def test_trials_that_cannot_share_features_are_trained_by_idle_workers_alongside_the_jobs_own(cluster, tmp_path):
    # Augmentation changes the base's input every epoch: no cached features, so no stacked heads. The
    # job's worker takes a trial and asks idle workers of its pool to take the others.
    url = cluster["url"]
    first = stack_worker_name(url)
    with tlbench_worker(worker_environment(cluster["home"], cluster["database_url"]), tmp_path / "worker.log") as (
            _, second):
        wait_until(lambda: idle(url, first, second), WORKER_START_SECONDS, "both training workers, idle")
        created = requests.post(f"{url}/api/v1/benchmarks", json={
            "dataset": cluster["dataset"], "backbones": ["VGG16"], **SMALL_JOBS, "epochs": 2, "augment": True,
            "learning_rate": [1e-3, 3e-4], "repeats": 2}).json()
        job_id = created["jobs"][0]["id"]
        state = finished(url, job_id)
        trials = requests.get(f"{url}/api/v1/jobs/{job_id}/trials", timeout=10).json()["trials"]

    assert state["status"] == "succeeded", state["error"]
    assert [(trial["status"], trial["epochs_done"]) for trial in trials] == [("succeeded", 2)] * 4
    assert {trial["worker"] for trial in trials} == {first, second}, trials
    assert [trial["number"] for trial in trials if trial["selected"]] == [state["summary"]["selected_trial"]]
    assert state["summary"]["trials_run"] == 4


def test_a_job_for_a_pool_waits_for_a_worker_of_that_pool(cluster, tmp_path):
    url = cluster["url"]
    first = stack_worker_name(url)
    submitted = subprocess.run(
        [sys.executable, "-m", "tlbench", "submit", "--url", url, "--dataset", str(cluster["dataset"]),
         "--backbones", "VGG16", "--epochs", "2", "--image-size", "32", "--weights", "none", "--pool", "special"],
        capture_output=True, text=True, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    job_id = int(re.search(r"job (\d+) VGG16", submitted.stdout).group(1))
    assert job(url, job_id)["pool"] == "special"

    wait_until(lambda: idle(url, first), JOB_SECONDS, "the default pool's worker to be idle")
    # The default worker takes and finishes a job sent after the pool's job, which it leaves alone.
    later = requests.post(f"{url}/api/v1/benchmarks", json={
        "dataset": cluster["dataset"], "backbones": ["VGG16"], **SMALL_JOBS, "epochs": 1}).json()
    done = finished(url, later["jobs"][0]["id"])
    assert (done["status"], done["worker"]) == ("succeeded", first), done["error"]
    waiting = job(url, job_id)
    assert (waiting["status"], waiting["worker"], waiting["attempt"]) == ("queued", None, 0)

    special = tlbench_worker(worker_environment(cluster["home"], cluster["database_url"]), tmp_path / "special.log",
                             "--pool", "special")
    with special as (_, name):
        # The name may be listed already, stopped: the previous test's worker had it.
        listed = wait_until(lambda: (now := workers(url)).get(name, {}).get("status") == "online" and now,
                            WORKER_START_SECONDS, f"{name} to register")
        assert listed[name]["pools"] == ["default", "special"]
        state = finished(url, job_id)
    assert (state["status"], state["worker"], state["pool"]) == ("succeeded", name, "special"), state["error"]


def test_every_worker_reports_host_cpu_and_memory_and_refreshes_them_with_its_heartbeat(cluster):
    url = cluster["url"]
    name = stack_worker_name(url)
    metrics = workers(url)[name]["metrics"]
    assert 0 <= metrics["cpu_percent"] <= 100 and metrics["cpu_count"] >= 1
    assert 0 < metrics["memory_used_bytes"] <= metrics["memory_total_bytes"]
    assert metrics["gpu"] is None  # a CPU worker
    first_measured = datetime.fromisoformat(metrics["measured_at"])
    later = wait_until(lambda: (now := workers(url)[name]["metrics"])["measured_at"] != metrics["measured_at"] and now,
                       30, "a heartbeat with new metrics")
    assert datetime.fromisoformat(later["measured_at"]) > first_measured
    assert all(worker["metrics"] for worker in workers(url).values() if worker["status"] == "online")


# Names and GPU locks

def test_names_are_unique_per_cluster_and_free_again_when_their_holder_ends(tmp_path):
    locks = NameLocks("sqlite:///one.db", root=tmp_path)
    first, second = locks.next_free("cpu"), locks.next_free("cpu")
    assert (first.name, second.name) == ("cpu1", "cpu2") and first.full == f"cpu1@{locks.host}"
    assert NameLocks("sqlite:///other.db", root=tmp_path).next_free("cpu").name == "cpu1"  # another cluster
    first.release()
    assert locks.next_free("cpu").name == "cpu1"

    # A process that dies, however it dies, lets its names go.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from worker.names import NameLocks; "
        "from worker.devices import Gpu; "
        f"held = NameLocks('sqlite:///one.db', root=Path({str(tmp_path)!r})).gpu(Gpu('3', 'Fake', 1, 'GPU-c3')); "
        "print(held.name, flush=True); time.sleep(600)")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "gpu3"
    gpu = Gpu("3", "Fake", 1, "GPU-c3")
    assert locks.gpu(gpu) is None and f"process {holder.pid}" in locks.gpu_holder(gpu)
    holder.kill()
    holder.wait()
    assert locks.gpu(gpu).name == "gpu3"


def test_a_gpu_that_has_a_worker_is_refused_and_all_takes_only_free_gpus(tmp_path):
    locks = NameLocks("sqlite:///cluster.db", root=tmp_path)
    gpus = [Gpu("0", "Fake GPU", 2**30, "GPU-0a"), Gpu("1", "Fake GPU", 2**30, "GPU-1b")]
    held = locks.gpu(gpus[0])
    with pytest.raises(WorkerRefused, match=r"GPU 0 already has a tlbench worker on this host"):
        worker_processes(SETTINGS, "0", names=locks, found=gpus)
    specs = worker_processes(SETTINGS, "all", names=locks, found=gpus)
    assert [spec.name.split("@")[0] for spec in specs] == ["gpu1", "predict1"]
    assert specs[0].env["CUDA_VISIBLE_DEVICES"] == "1"
    with pytest.raises(WorkerRefused, match="GPU 0 already has"):
        worker_processes(SETTINGS, "all", names=locks, found=gpus)  # GPU 1 is taken by the specs above now
    for fd in [held.fd, *(fd for spec in specs for fd in spec.pass_fds)]:
        os.close(fd)
    assert [spec.name.split("@")[0] for spec in worker_processes(SETTINGS, "0,1", names=locks, found=gpus)] == \
        ["gpu0", "gpu1", "predict1"]


FAKE_NVIDIA_SMI = """#!/bin/sh
# Two GPUs, as `nvidia-smi --query-gpu=index,uuid,memory.total,name --format=csv,noheader,nounits` lists them.
echo "0, GPU-5d1f0e4a, 81559, Fake GPU"
echo "1, GPU-77c2b9d0, 81559, Fake GPU"
"""


def test_a_second_tlbench_worker_for_a_gpu_that_has_one_is_refused(tmp_path, redis_socket):
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (bin_folder / "nvidia-smi").chmod(0o755)
    (tmp_path / "locks").mkdir(mode=0o700)
    env = worker_environment(tmp_path / "home", PATH=f"{bin_folder}{os.pathsep}{os.environ['PATH']}",
                             REDIS_URL=f"redis+socket://{redis_socket}", **{LOCK_DIR_ENV: str(tmp_path / "locks")})
    log = tmp_path / "gpu0.log"
    with log.open("w") as output:
        first = subprocess.Popen([sys.executable, "-m", "tlbench", "worker", "--gpus", "0"], env=env, stdout=output,
                                 stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "started gpu0@" in log.read_text() or first.poll() is not None, WORKER_START_SECONDS,
                   "the first worker to take GPU 0")
        assert first.poll() is None, log.read_text()[-3000:]
        second = subprocess.run([sys.executable, "-m", "tlbench", "worker", "--gpus", "0"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "GPU 0 already has a tlbench worker on this host" in second.stderr
        assert f"process {first.pid} (tlbench worker --gpus 0)" in second.stderr
        assert "started" not in second.stdout
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0


# Recovery sends each job back to its own pool

def test_recovery_sends_each_job_back_to_its_own_pool(database, settings, redis_client):
    celery = make_celery(settings.redis_url)
    with database.transaction() as session:
        dataset = ops.add_dataset(session, name="d", root="/nowhere", classes=["a", "b"], counts={"a": 1, "b": 1},
                                  skipped=[], sha256="0" * 64, manifest=[])
        for pool in ("big", "default"):
            benchmark = ops.create_benchmark(session, name=pool, dataset_id=dataset.id, config={}, pool=pool,
                                             specs=[{"backbone": "VGG16"}])
            benchmark.jobs[0].status, benchmark.jobs[0].worker = JobStatus.RUNNING, "cpu7@host"
    try:
        assert len(recovery.requeue_held_jobs(celery, database, "cpu7@host")) == 2
        assert (redis_client.llen("big"), redis_client.llen("default")) == (1, 1)
        with database.transaction() as session:
            assert [(row.status, row.pool) for row in session.scalars(select(Job).order_by(Job.id))] == \
                [(JobStatus.QUEUED, "big"), (JobStatus.QUEUED, "default")]

        redis_client.flushall()  # the broker forgot everything: each queued job goes back to its pool
        assert len(recovery.recover_lost_jobs(celery, database, Liveness(job_lost_after_seconds=3600))) == 2
        assert (redis_client.llen("big"), redis_client.llen("default")) == (1, 1)
    finally:
        celery.close()
