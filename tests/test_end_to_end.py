"""The whole stack as a user runs it: `tlbench up` (embedded Redis, a real worker, gunicorn),
a dataset uploaded over HTTP, a benchmark submitted with the CLI, results read back over HTTP.

Each test sets up what it needs (its own dataset, benchmark or stack) and runs alone or in any order;
`stack` is shared by the tests of this module, so none of them may stop it."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from dbutil import BACKENDS, empty_database_url
from testsupport.images import make_image_folder
from testsupport.stack import (JOB_SECONDS, finished_benchmark, free_port, healthy, running_stack, upload_dataset,
                               wait_until)

EXPECTED_ARTIFACTS = {"model.keras", "model.json", "model.weights.h5", "history.csv", "labels.json", "summary.json"}


@pytest.fixture(scope="module")
def two_backbone_benchmark(stack, tmp_path_factory) -> dict:
    """A three-class dataset and a VGG16 + ResNet50 benchmark on it, submitted with `tlbench submit --wait`:
    {"submitted": the finished CLI run, "benchmark": the benchmark as the API shows it at the end}."""
    url = stack["url"]
    folder = make_image_folder(tmp_path_factory.mktemp("images") / "shapes", classes=3, per_class=8, size=32)
    dataset = upload_dataset(url, folder)
    submitted = subprocess.run(
        [sys.executable, "-m", "tlbench", "submit", "--url", url, "--dataset", str(dataset["id"]),
         "--backbones", "VGG16,ResNet50", "--epochs", "2", "--image-size", "32", "--weights", "none",
         "--batch-size", "8", "--patience", "5", "--wait"],
        capture_output=True, text=True, timeout=JOB_SECONDS)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    benchmark_id = int(submitted.stdout.split()[1].rstrip(":"))
    return {"submitted": submitted, "benchmark": requests.get(f"{url}/api/v1/benchmarks/{benchmark_id}").json()}


@pytest.fixture(params=BACKENDS)
def own_stack(request, tmp_path):
    """A stack for one test alone, on each database: for a test that stops it."""
    home = tmp_path / "own-home"
    home.mkdir()
    database_url = None if request.param == "sqlite" else empty_database_url(request, request.param, home)
    with running_stack(home, database_url=database_url) as running:
        yield running


def test_a_failing_job_is_recorded_and_the_worker_keeps_serving(stack, tmp_path):
    url = stack["url"]
    dataset = upload_dataset(url, make_image_folder(tmp_path / "shapes", classes=2, per_class=6, size=32))
    # A weights file must lie under the data roots: by default TLBENCH_HOME/data.
    broken_weights = stack["home"] / "data" / f"broken-{tmp_path.name}.weights.h5"
    broken_weights.parent.mkdir(exist_ok=True)
    broken_weights.write_bytes(b"not an HDF5 file")
    created = requests.post(f"{url}/api/v1/benchmarks", json={
        "dataset": dataset["id"], "backbones": ["VGG16"], "epochs": 1, "image_size": 32,
        "weights": str(broken_weights)}).json()
    benchmark = wait_until(lambda: finished_benchmark(url, created["id"]), JOB_SECONDS, "the failing job")
    job = requests.get(f"{url}/api/v1/jobs/{benchmark['jobs'][0]['id']}").json()
    assert job["status"] == "failed" and job["error"] and "Traceback" in job["traceback"]
    assert job["worker"].startswith("cpu1@") and job["attempt"] == 1


def test_benchmark_of_two_backbones_runs_end_to_end(stack, two_backbone_benchmark):
    url = stack["url"]
    assert "Final comparison" in two_backbone_benchmark["submitted"].stdout
    benchmark = two_backbone_benchmark["benchmark"]
    assert benchmark["status"] == "succeeded" and benchmark["leader"]["backbone"] in ("VGG16", "ResNet50")
    for job in benchmark["jobs"]:
        check_job_results(url, job, stack["home"], classes=3)


def check_job_results(url: str, job: dict, home: Path, classes: int) -> None:
    """Two epoch rows, every artifact, and a model.keras that loads and predicts."""
    assert job["status"] == "succeeded", job
    epochs = requests.get(f"{url}/api/v1/jobs/{job['id']}/epochs").json()["epochs"]
    assert [row["epoch"] for row in epochs] == [1, 2]
    assert all(row["val_accuracy"] is not None and row["seconds"] > 0 for row in epochs)
    summary = job["summary"]
    assert summary["epochs_run"] == 2 and summary["best_val_accuracy"] == max(row["val_accuracy"] for row in epochs)
    assert summary["params_total"] > summary["params_trainable"] > 0 and summary["latency_ms_per_image"] > 0

    artifacts = requests.get(f"{url}/api/v1/jobs/{job['id']}/artifacts").json()["artifacts"]
    names = {artifact["name"] for artifact in artifacts}
    assert EXPECTED_ARTIFACTS <= names and any(name.startswith("tensorboard/") for name in names)
    model_file = home / f"downloaded-{job['id']}.keras"
    model_file.write_bytes(requests.get(f"{url}/api/v1/jobs/{job['id']}/artifacts/model.keras").content)
    probabilities = predict_in_fresh_process(model_file, size=32)
    assert len(probabilities) == classes and abs(sum(probabilities) - 1) < 1e-4


def predict_in_fresh_process(model_file: Path, size: int) -> list[float]:
    """Load a downloaded model.keras in safe mode in a new process and predict one uint8 image."""
    code = ("import sys, numpy as np, keras; "
            "model = keras.saving.load_model(sys.argv[1]); "
            f"image = np.random.default_rng(0).integers(0, 256, (1, {size}, {size}, 3), dtype=np.uint8); "
            "print(' '.join(str(float(p)) for p in model.predict(image, verbose=0)[0]))")
    result = subprocess.run([sys.executable, "-c", code, str(model_file)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return [float(value) for value in result.stdout.split()[-100:] if _is_number(value)]


def _is_number(text: str) -> bool:
    """Whether a printed token is a float."""
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_workers_register_with_their_device_and_current_job(stack):
    url = stack["url"]
    workers = wait_until(lambda: len(requests.get(f"{url}/api/v1/workers").json()["workers"]) == 2 and
                         requests.get(f"{url}/api/v1/workers").json()["workers"], 30, "both workers to register")
    by_queue = {tuple(worker["queues"]): worker for worker in workers}
    assert set(by_queue) == {("default",), ("predict",)}
    training = by_queue[("default",)]
    assert training["name"].startswith("cpu1@") and training["device"].startswith("CPU")
    assert training["status"] == "online" and training["memory_bytes"] > 0
    assert (training["role"], training["pools"]) == ("training", ["default"])
    assert by_queue[("predict",)]["name"].startswith("predict1@") and by_queue[("predict",)]["pools"] == []


def test_predict_answers_probabilities_for_every_succeeded_job(stack, two_backbone_benchmark, tmp_path):
    url = stack["url"]
    benchmark = two_backbone_benchmark["benchmark"]
    image = make_image_folder(tmp_path / "one", classes=1, per_class=1, size=48) / "blue" / "image_0.png"
    response = requests.post(f"{url}/api/v1/benchmarks/{benchmark['id']}/predict",
                             files={"file": ("query.png", image.read_bytes())}, timeout=180)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert sorted(p["backbone"] for p in predictions) == ["ResNet50", "VGG16"]
    for prediction in predictions:
        assert set(prediction["probabilities"]) == {"blue", "green", "red"}
        assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-4 and prediction["ms"] > 0
        assert prediction["top"] == max(prediction["probabilities"], key=prediction["probabilities"].get)
    refused = requests.post(f"{url}/api/v1/benchmarks/{benchmark['id']}/predict",
                            files={"file": ("notes.png", b"not an image")})
    assert refused.status_code == 400 and refused.json()["field"] == "file"
    assert list((stack["home"] / "predictions").iterdir()) == []


def job_state(url: str, job_id: int) -> dict:
    """One job as the API shows it."""
    return requests.get(f"{url}/api/v1/jobs/{job_id}").json()


def start_long_job(url: str, dataset_id: int) -> int:
    """Submit a 500-epoch job and wait until it runs: the worker is then busy for minutes."""
    created = requests.post(f"{url}/api/v1/benchmarks", json={
        "dataset": dataset_id, "backbones": ["VGG16"], "epochs": 500, "patience": 500, "image_size": 32,
        "weights": "none", "batch_size": 4}).json()
    job_id = created["jobs"][0]["id"]
    wait_until(lambda: job_state(url, job_id)["epochs_done"] >= 1, JOB_SECONDS, "the long job's first epoch")
    return job_id


def cancel_and_wait(url: str, job_id: int) -> dict:
    """Cancel a running job and wait until it has stopped."""
    assert requests.post(f"{url}/api/v1/jobs/{job_id}/cancel").status_code == 202
    return wait_until(lambda: job_state(url, job_id)["status"] == "cancelled" and job_state(url, job_id),
                      120, f"job {job_id} to stop")


def test_cancel_stops_a_running_job_within_an_epoch_and_retry_runs_it_again(stack, tmp_path):
    url = stack["url"]
    dataset = upload_dataset(url, make_image_folder(tmp_path / "shapes", classes=2, per_class=6, size=32))
    job_id = start_long_job(url, dataset["id"])
    cancelled = cancel_and_wait(url, job_id)
    assert cancelled["epochs_done"] < 500 and cancelled["summary"]["cancelled"]
    names = {a["name"] for a in requests.get(f"{url}/api/v1/jobs/{job_id}/artifacts").json()["artifacts"]}
    assert "model.keras" in names  # what it learned so far is kept

    retried = requests.post(f"{url}/api/v1/jobs/{job_id}/retry").json()
    assert retried["status"] == "queued" and retried["epochs_done"] == 0
    wait_until(lambda: job_state(url, job_id)["epochs_done"] >= 1, JOB_SECONDS, "the retry's first epoch")
    assert job_state(url, job_id)["attempt"] == 2
    cancel_and_wait(url, job_id)


def test_cancelled_queued_jobs_never_start(stack, tmp_path):
    url = stack["url"]
    dataset = upload_dataset(url, make_image_folder(tmp_path / "shapes", classes=2, per_class=6, size=32))
    busy = start_long_job(url, dataset["id"])
    created = requests.post(f"{url}/api/v1/benchmarks/sample").json()
    assert len(created["jobs"]) == 5
    for job in created["jobs"]:
        assert requests.post(f"{url}/api/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    cancel_and_wait(url, busy)
    marker = requests.post(f"{url}/api/v1/benchmarks", json={
        "dataset": dataset["id"], "backbones": ["VGG16"], "epochs": 1, "image_size": 32, "weights": "none"}).json()
    wait_until(lambda: finished_benchmark(url, marker["id"]), JOB_SECONDS, "a job queued after them to finish")
    for job in created["jobs"]:
        state = job_state(url, job["id"])
        assert (state["status"], state["attempt"], state["started_at"]) == ("cancelled", 0, None)


def test_a_second_stack_on_the_same_home_refuses_to_start(stack):
    result = subprocess.run([sys.executable, "-m", "tlbench", "up", "--home", str(stack["home"]),
                             "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "already running" in result.stderr


def test_sigterm_stops_every_process_and_exits_zero(own_stack):
    process = own_stack["process"]
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) >= 3  # redis, a worker, the web server
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    still_alive = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    assert still_alive == []
    assert not healthy(own_stack["url"])
