"""The JSON API: datasets, benchmark submission, artifacts, OpenAPI. Refusals: test_bad_input.py."""
from __future__ import annotations

import io

import pytest
from openapi_spec_validator import validate

from testsupport.broker import queued_job_ids
from testsupport.images import make_image_folder
from tlbench.client import zip_folder
from worker.queues import TRAIN_QUEUE


def upload(client, payload: bytes, filename: str = "faces.zip"):
    """POST a zip to /api/v1/datasets."""
    return client.post("/api/v1/datasets", data={"file": (io.BytesIO(payload), filename)},
                       content_type="multipart/form-data")


@pytest.fixture
def dataset_id(client, tmp_path) -> int:
    """A registered 3-class dataset."""
    folder = make_image_folder(tmp_path / "src", classes=3, per_class=4, size=32)
    response = upload(client, zip_folder(folder))
    assert response.status_code == 201, response.json
    return response.json["id"]


def test_upload_scans_classes_counts_and_skipped_files(client, tmp_path, settings):
    folder = make_image_folder(tmp_path / "src", classes=3, per_class=4, size=32, extras=True)
    response = upload(client, zip_folder(folder))
    assert response.status_code == 201, response.json
    body = response.json
    assert body["classes"] == ["blue", "green", "red"]
    assert body["counts"]["green"] == 4 and body["counts"]["red"] == 4
    assert body["counts"]["blue"] > 4  # the odd formats (grey, CMYK, 16-bit...) count as images
    skipped = {entry["file"] for entry in body["skipped"]}
    assert any(name.endswith("broken.jpg") for name in skipped)
    assert len(body["sha256"]) == 64
    assert client.get(f"/api/v1/datasets/{body['id']}").json == body


def test_register_folder_under_allowed_root(client, tmp_path):
    folder = make_image_folder(tmp_path / "data" / "pets", classes=2, per_class=3, size=32)
    response = client.post("/api/v1/datasets", json={"path": str(folder)})
    assert response.status_code == 201, response.json
    assert response.json["name"] == "pets" and response.json["source"] == "path"


def test_a_folder_name_longer_than_the_name_column_is_cut_on_every_database(settings, database_url, tmp_path):
    from dataclasses import replace

    from dashboard import create_app

    app = create_app({"TESTING": True, "TLBENCH_SETTINGS": replace(settings, database_url=database_url)})
    try:
        folder = make_image_folder(tmp_path / "data" / ("p" * 230), classes=2, per_class=3, size=32)
        response = app.test_client().post("/api/v1/datasets", json={"path": str(folder)})
        assert response.status_code == 201, response.json
        assert response.json["name"] == "p" * 200
    finally:
        app.extensions["tlbench.database"].dispose()


def test_submit_creates_queued_jobs_and_enqueues_only_their_ids(client, dataset_id, redis_client):
    response = client.post("/api/v1/benchmarks", json={
        "dataset": dataset_id, "backbones": ["VGG16", "ResNet50"], "epochs": 2, "weights": "none",
        "image_size": {"VGG16": 32, "ResNet50": 40}})
    assert response.status_code == 201, response.json
    jobs = response.json["jobs"]
    assert [(job["backbone"], job["status"]) for job in jobs] == [("VGG16", "queued"), ("ResNet50", "queued")]
    assert queued_job_ids(redis_client, TRAIN_QUEUE) == sorted(job["id"] for job in jobs)  # only their ids
    benchmark = client.get(f"/api/v1/benchmarks/{response.json['id']}").json
    assert benchmark["status"] == "queued"
    assert {job["backbone"]: job["image_size"] for job in benchmark["jobs"]} == {"VGG16": 32, "ResNet50": 40}


def test_each_backbone_gets_its_default_size_without_image_size(client, dataset_id):
    response = client.post("/api/v1/benchmarks", json={
        "dataset": dataset_id, "backbones": ["InceptionV3", "VGG19"], "weights": "none"})
    assert response.status_code == 201, response.json
    benchmark = client.get(f"/api/v1/benchmarks/{response.json['id']}").json
    assert {job["backbone"]: job["image_size"] for job in benchmark["jobs"]} == {"InceptionV3": 299, "VGG19": 224}


GOOD = {"backbones": ["VGG16"], "epochs": 2, "image_size": 32, "weights": "none"}


def test_artifacts_are_listed_and_served_from_the_job_folder_only(client, dataset_id, settings):
    # Names that leave the folder are refused in test_bad_input.py; a link out of it is neither listed nor served.
    created = client.post("/api/v1/benchmarks", json={"dataset": dataset_id, **GOOD}).json
    job_id = created["jobs"][0]["id"]
    folder = settings.job_artifact_dir(job_id)
    (folder / "tensorboard").mkdir(parents=True)
    (folder / "labels.json").write_text('["a"]')
    (folder / "tensorboard" / "events").write_bytes(b"123")
    (settings.home / "secret.txt").write_text("secret")
    (folder / "leak.txt").symlink_to(settings.home / "secret.txt")
    assert client.get(f"/api/v1/jobs/{job_id}/artifacts").json == {"artifacts": [
        {"name": "labels.json", "bytes": 5}, {"name": "tensorboard/events", "bytes": 3}]}
    assert client.get(f"/api/v1/jobs/{job_id}/artifacts/labels.json").data == b'["a"]'
    assert client.get(f"/api/v1/jobs/{job_id}/artifacts/tensorboard/events").data == b"123"
    assert client.get(f"/api/v1/jobs/{job_id}/artifacts/leak.txt").status_code == 404


def test_a_dataset_image_is_served_by_its_index_upright_and_shrunk_to_the_size_asked(client, tmp_path):
    from PIL import Image

    from jobs.datasets import scan_dataset

    folder = tmp_path / "wide"
    colours = {"cats/a.png": (200, 30, 30), "cats/b.png": (30, 200, 30), "dogs/c.png": (30, 30, 200),
               "dogs/d.png": (200, 200, 30)}
    for relative, colour in colours.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (200, 100), colour).save(folder / relative)
    dataset_id = upload(client, zip_folder(folder)).json["id"]
    for index, image_file in enumerate(scan_dataset(folder).files):  # the order jobs and predictions.npz use
        response = client.get(f"/api/v1/datasets/{dataset_id}/images/{index}")
        assert response.status_code == 200 and response.mimetype == "image/jpeg"
        thumbnail = Image.open(io.BytesIO(response.data))
        assert thumbnail.size == (128, 64)  # the default longest side, the aspect kept
        assert all(abs(a - b) <= 8 for a, b in zip(thumbnail.getpixel((64, 32)), colours[image_file.path]))
    small = client.get(f"/api/v1/datasets/{dataset_id}/images/0?size=32")
    assert Image.open(io.BytesIO(small.data)).size == (32, 16)
    larger = client.get(f"/api/v1/datasets/{dataset_id}/images/0?size=512")
    assert Image.open(io.BytesIO(larger.data)).size == (200, 100)  # never enlarged


def test_backbone_registry_lists_sizes(client):
    backbones = {b["name"]: b for b in client.get("/api/v1/backbones").json["backbones"]}
    assert backbones["InceptionV3"]["min_size"] == 75 and backbones["Xception"]["min_size"] == 71
    assert backbones["VGG16"]["seed"] and not backbones["DenseNet121"]["seed"]


def test_health_reports_database_and_broker(client):
    assert client.get("/api/v1/health").json == {"status": "ok", "database": "ok", "broker": "ok"}


def test_openapi_describes_every_api_route_and_is_valid(client, app):
    document = client.get("/api/v1/openapi.json").json
    validate(document)
    api_rules = {rule.rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1")}
    assert len(document["paths"]) == len(api_rules)
    assert "BenchmarkRequest" in document["components"]["schemas"]
    pool = document["components"]["schemas"]["BenchmarkRequest"]["properties"]["pool"]
    assert (pool["default"], pool["pattern"], pool["not"]) == ("default", "^[a-z0-9][a-z0-9_-]{0,39}$",
                                                              {"const": "predict"})
    assert document["paths"]["/api/v1/jobs/{job_id}"]["get"]["parameters"][0]["schema"]["type"] == "integer"


def submit(client, dataset_id: int, **change) -> dict:
    """Submit a tiny benchmark and return the answer."""
    response = client.post("/api/v1/benchmarks", json={"dataset": dataset_id, **GOOD, **change})
    assert response.status_code == 201, response.json
    return response.json


def test_cancelling_a_queued_job_cancels_it_at_once_and_only_once(client, dataset_id):
    job_id = submit(client, dataset_id)["jobs"][0]["id"]
    response = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202 and response.json["status"] == "cancelled"
    again = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json["error"]


def test_retry_requeues_a_cancelled_job_and_enqueues_it(client, dataset_id, redis_client):
    job_id = submit(client, dataset_id)["jobs"][0]["id"]
    assert client.post(f"/api/v1/jobs/{job_id}/retry").status_code == 409  # still queued
    client.post(f"/api/v1/jobs/{job_id}/cancel")
    redis_client.delete(TRAIN_QUEUE)
    response = client.post(f"/api/v1/jobs/{job_id}/retry")
    assert response.status_code == 202
    assert (response.json["status"], response.json["cancel_requested"]) == ("queued", False)
    assert redis_client.llen(TRAIN_QUEUE) == 1


def test_a_benchmark_for_a_pool_queues_its_jobs_there_and_retries_go_back_to_it(client, dataset_id, redis_client):
    created = submit(client, dataset_id, backbones=["VGG16", "VGG19"], pool="a100")
    job_ids = [job["id"] for job in created["jobs"]]
    assert created["pool"] == "a100"
    assert queued_job_ids(redis_client, "a100") == job_ids and redis_client.llen(TRAIN_QUEUE) == 0
    benchmark = client.get(f"/api/v1/benchmarks/{created['id']}").json
    assert benchmark["pool"] == benchmark["config"]["pool"] == "a100"
    assert [job["pool"] for job in benchmark["jobs"]] == ["a100", "a100"]
    assert client.get(f"/api/v1/jobs/{job_ids[0]}").json["pool"] == "a100"
    assert "pool" not in client.get(f"/api/v1/jobs/{job_ids[0]}").json["spec"]  # not a training setting

    redis_client.delete("a100")
    client.post(f"/api/v1/jobs/{job_ids[0]}/cancel")
    assert client.post(f"/api/v1/jobs/{job_ids[0]}/retry").status_code == 202
    assert queued_job_ids(redis_client, "a100") == [job_ids[0]]


def test_without_a_pool_jobs_go_to_the_default_pool(client, dataset_id, redis_client):
    created = submit(client, dataset_id)
    assert created["pool"] == "default" and TRAIN_QUEUE == "default"
    assert queued_job_ids(redis_client, "default") == [created["jobs"][0]["id"]]


def test_workers_show_their_pools_status_current_job_and_metrics(client, app, dataset_id):
    from db import operations as ops
    from db.models import Job, JobStatus

    created = submit(client, dataset_id, name="pets")
    metrics = {"measured_at": "2026-11-28T08:00:00+00:00", "cpu_percent": 12.5, "cpu_count": 16,
               "memory_used_bytes": 2**33, "memory_total_bytes": 2**36,
               "gpu": {"index": 0, "name": "NVIDIA H200", "utilization_percent": 97.0,
                       "memory_used_bytes": 2**36, "memory_total_bytes": 150 * 2**30}}
    with app.extensions["tlbench.database"].transaction() as session:
        ops.register_worker(session, "gpu0@a", "a", "GPU 0: NVIDIA H200", 150 * 2**30, ["default", "h200"], metrics)
        ops.register_worker(session, "predict1@a", "a", "CPU (16 cores)", 2**36, ["predict"])
        ops.register_worker(session, "cpu1@b", "b", "CPU (4 cores)", 2**34, ["default"])
        ops.worker_stopped(session, "cpu1@b")
        job = session.get(Job, created["jobs"][0]["id"])
        job.status, job.worker = JobStatus.RUNNING, "gpu0@a"
    with app.extensions["tlbench.database"].transaction() as session:
        ops.worker_heartbeat(session, "predict1@a", {**metrics, "gpu": None})
    workers = {worker["name"]: worker for worker in client.get("/api/v1/workers").json["workers"]}
    gpu, predict, stopped = workers["gpu0@a"], workers["predict1@a"], workers["cpu1@b"]
    assert (gpu["role"], gpu["pools"], gpu["status"], gpu["metrics"]) == ("training", ["default", "h200"], "online",
                                                                        metrics)
    assert gpu["current_job"] == {"id": job.id, "backbone": "VGG16", "benchmark_id": created["id"],
                                  "benchmark": "pets"}
    assert (predict["role"], predict["pools"], predict["current_job"]) == ("predict", [], None)
    assert predict["metrics"]["cpu_percent"] == 12.5 and predict["metrics"]["gpu"] is None
    assert (stopped["status"], stopped["metrics"]) == ("stopped", None) and stopped["stopped_at"]


def test_benchmark_epochs_give_one_series_per_job(client, dataset_id):
    created = submit(client, dataset_id, backbones=["VGG16", "VGG19"])
    series = client.get(f"/api/v1/benchmarks/{created['id']}/epochs").json["series"]
    assert [(s["backbone"], s["epochs"]) for s in series] == [("VGG16", []), ("VGG19", [])]


def test_predict_needs_a_succeeded_job(client, dataset_id):
    created = submit(client, dataset_id)
    response = client.post(f"/api/v1/benchmarks/{created['id']}/predict",
                           data={"file": (io.BytesIO(b"x"), "x.png")}, content_type="multipart/form-data")
    assert response.status_code == 409 and "no succeeded job" in response.json["error"]


def test_sample_benchmark_needs_the_sample_dataset(client):
    response = client.post("/api/v1/benchmarks/sample")
    assert response.status_code == 409 and "sample dataset" in response.json["error"]


def test_sample_benchmark_runs_the_seed_backbones_at_their_smallest_sizes(client, app, settings):
    from jobs.datasets import scan_dataset
    from jobs.sample import write_sample_dataset
    from tlbench.stack import ensure_sample_dataset

    ensure_sample_dataset(settings, app.extensions["tlbench.database"])
    ensure_sample_dataset(settings, app.extensions["tlbench.database"])  # a second start adds nothing
    datasets = client.get("/api/v1/datasets").json["datasets"]
    assert [(d["sample"], d["classes"]) for d in datasets] == [(True, ["circle", "square", "triangle"])]
    assert scan_dataset(settings.home / "sample").sha256 == \
        scan_dataset(write_sample_dataset(settings.home / "again")).sha256  # deterministic
    created = client.post("/api/v1/benchmarks/sample").json
    benchmark = client.get(f"/api/v1/benchmarks/{created['id']}").json
    assert {job["backbone"]: job["image_size"] for job in benchmark["jobs"]} == \
        {"VGG16": 32, "VGG19": 32, "InceptionV3": 75, "Xception": 71, "ResNet50": 32}


def test_no_worker_is_listed_before_one_starts(client):
    assert client.get("/api/v1/workers").json == {"workers": []}


def test_the_report_of_a_benchmark_still_queued_shows_its_jobs_with_nothing_measured(client, dataset_id):
    created = submit(client, dataset_id, backbones=["VGG16", "ResNet50"], learning_rate=[1e-3, 3e-4])
    page = client.get(f"/api/v1/benchmarks/{created['id']}/report")
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_data(as_text=True)
    assert text.count("<td>queued</td>") == 2 and "VGG16" in text and "ResNet50" in text
    rows = client.get(f"/api/v1/benchmarks/{created['id']}/report.csv").get_data(as_text=True).splitlines()
    assert len(rows) == 1 + 2 * 2  # the heading, then every planned trial of both jobs
    assert all(",queued," in row for row in rows[1:])
    summary = client.get(f"/api/v1/benchmarks/{created['id']}/report.md").get_data(as_text=True)
    assert "No backbone has a test result yet." in summary and "| VGG16 | – | – | – |" in summary
