"""The whole stack as a user runs it: `tlbench up` (embedded Redis, a real worker, gunicorn),
a dataset uploaded over HTTP, a benchmark submitted with the CLI, results read back over HTTP."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import requests

from imagegen import make_image_folder
from stackutil import free_port, healthy, wait_until

JOB_SECONDS = 300
EXPECTED_ARTIFACTS = {"model.keras", "model.json", "model.weights.h5", "history.csv", "labels.json", "summary.json"}


def upload_dataset(url: str, folder: Path) -> dict:
    """Upload a folder as a zip with the CLI's own zipping."""
    from tlbench.client import zip_folder

    response = requests.post(f"{url}/api/v1/datasets", files={"file": ("shapes.zip", zip_folder(folder))})
    assert response.status_code == 201, response.text
    return response.json()


def finished_benchmark(url: str, benchmark_id: int) -> dict | None:
    """The benchmark once none of its jobs is queued or running."""
    benchmark = requests.get(f"{url}/api/v1/benchmarks/{benchmark_id}").json()
    return benchmark if benchmark["status"] not in ("queued", "running") else None


def test_a_failing_job_is_recorded_and_the_worker_keeps_serving(stack, tmp_path):
    url = stack["url"]
    dataset = upload_dataset(url, make_image_folder(tmp_path / "shapes", classes=2, per_class=6, size=32))
    broken_weights = tmp_path / "broken.weights.h5"
    broken_weights.write_bytes(b"not an HDF5 file")
    created = requests.post(f"{url}/api/v1/benchmarks", json={
        "dataset": dataset["id"], "backbones": ["VGG16"], "epochs": 1, "image_size": 32,
        "weights": str(broken_weights)}).json()
    benchmark = wait_until(lambda: finished_benchmark(url, created["id"]), JOB_SECONDS, "the failing job")
    job = requests.get(f"{url}/api/v1/jobs/{benchmark['jobs'][0]['id']}").json()
    assert job["status"] == "failed" and job["error"] and "Traceback" in job["traceback"]
    assert job["worker"].startswith("cpu1@") and job["attempt"] == 1


def test_benchmark_of_two_backbones_runs_end_to_end(stack, tmp_path):
    url = stack["url"]
    dataset = upload_dataset(url, make_image_folder(tmp_path / "shapes", classes=3, per_class=8, size=32))
    submitted = subprocess.run(
        [sys.executable, "-m", "tlbench", "submit", "--url", url, "--dataset", str(dataset["id"]),
         "--backbones", "VGG16,ResNet50", "--epochs", "2", "--image-size", "32", "--weights", "none",
         "--batch-size", "8", "--patience", "5", "--wait"],
        capture_output=True, text=True, timeout=JOB_SECONDS)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "Final comparison" in submitted.stdout

    benchmark_id = int(submitted.stdout.split()[1].rstrip(":"))
    benchmark = requests.get(f"{url}/api/v1/benchmarks/{benchmark_id}").json()
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
    assert summary["epochs_run"] == 2 and 0 <= summary["best_val_accuracy"] <= 1
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


def test_a_second_stack_on_the_same_home_refuses_to_start(stack):
    result = subprocess.run([sys.executable, "-m", "tlbench", "up", "--home", str(stack["home"]),
                             "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "already running" in result.stderr


def test_sigterm_stops_every_process_and_exits_zero(stack):
    process = stack["process"]
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) >= 3  # redis, a worker, the web server
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    still_alive = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    assert still_alive == []
    assert not healthy(stack["url"])
