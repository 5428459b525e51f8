"""The JSON API under /api/v1: the one path to the data, for pages, scripts and the CLI."""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, jsonify, request, send_from_directory
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException, NotFound as HttpNotFound
from werkzeug.exceptions import UnsupportedMediaType

from dashboard.dataset_registry import (
    DatasetRejected,
    dataset_fields,
    resolve_allowed_folder,
    store_upload,
    usable_scan,
)
from dashboard.openapi import build_openapi, documented
from dashboard.presenters import benchmark_json, dataset_json, epoch_json, job_json
from dashboard.schemas import BenchmarkRequest, DatasetPathRequest, describe_validation_error
from db import operations as ops
from db.models import Benchmark, Dataset, Job
from jobs.backbones import BACKBONES, SEED_BACKBONES
from worker.celery_app import enqueue_training

api = Blueprint("api", __name__, url_prefix="/api/v1")


class BadRequest(Exception):
    """A 4xx answer with a message naming the field and the problem."""

    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.field, self.status = message, field, status


def error_response(message: str, status: int, field: str | None = None):
    """The API's one error shape: {"error": message, "field": name-or-null}."""
    return jsonify(error=message, field=field), status


@api.errorhandler(BadRequest)
def bad_request(error: BadRequest):
    """Answer a refused request."""
    return error_response(error.message, error.status, error.field)


@api.errorhandler(ops.NotFound)
def row_not_found(error: ops.NotFound):
    """Answer a request for an id that does not exist."""
    return error_response(str(error), 404)


def http_error(error: HTTPException):
    """Answer Werkzeug's errors (404, 405, 413...) in JSON under /api/, as HTML elsewhere."""
    if not request.path.startswith(api.url_prefix + "/"):
        return error
    return error_response(error.description or error.name, error.code or 500)


def database():
    """The app's Database."""
    return current_app.extensions["tlbench.database"]


def settings():
    """The app's Settings."""
    return current_app.extensions["tlbench.settings"]


def json_body(model: type[BaseModel]):
    """Parse and validate the JSON body into `model`, or refuse it naming the problem."""
    if not request.is_json:
        raise BadRequest(f"expected Content-Type application/json, got {request.mimetype or 'none'!r}",
                         status=UnsupportedMediaType.code)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as error:
        message, field = describe_validation_error(error)
        raise BadRequest(message, field) from None


@api.get("/health")
@documented(responses={200: "Database and broker reachable", 503: "Something is down"})
def health():
    """Say whether the database and the broker answer."""
    checks = {"database": _check(lambda: database().ping()), "broker": _check(_ping_broker)}
    healthy = all(state == "ok" for state in checks.values())
    return jsonify(status="ok" if healthy else "degraded", **checks), 200 if healthy else 503


def _check(probe) -> str:
    """Run one probe: "ok", or the error it raised."""
    try:
        probe()
        return "ok"
    except Exception as error:  # any failure is the answer here, not a crash
        return f"error: {error}"


def _ping_broker() -> None:
    """Open a connection to the broker once, without retrying for long."""
    with current_app.extensions["tlbench.celery"].connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)


@api.get("/backbones")
@documented(responses={200: "Every backbone with its default and minimum input size"})
def list_backbones():
    """List the backbone registry."""
    return jsonify(backbones=[
        {"name": b.name, "family": b.family, "default_size": b.default_size, "min_size": b.min_size,
         "seed": b.name in SEED_BACKBONES}
        for b in BACKBONES.values()
    ])


@api.post("/datasets")
@documented(body=DatasetPathRequest, multipart_file=True, responses={201: "The scanned dataset"})
def create_dataset():
    """Register a dataset: a zip upload (multipart field `file`) or a folder under the allowed roots."""
    try:
        root, scanned, name, uploaded = _receive_dataset()
    except DatasetRejected as refusal:
        raise BadRequest(str(refusal), refusal.field) from None
    with database().transaction() as session:
        dataset = ops.add_dataset(session, **dataset_fields(name, root, uploaded, scanned))
        return jsonify(dataset_json(dataset)), 201


def _receive_dataset():
    """Read either kind of dataset request; returns (root, scan, name, uploaded)."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            raise BadRequest("file: is required (a zip of class folders)", "file")
        name = request.form.get("name") or Path(upload.filename).stem
        root, scanned = store_upload(settings(), upload)
        return root, scanned, name[:200], True
    body = json_body(DatasetPathRequest)
    folder = resolve_allowed_folder(settings(), body.path)
    return folder, usable_scan(folder, "path"), body.name or folder.name, False


@api.get("/datasets")
@documented(responses={200: "Every dataset, newest first"})
def list_datasets():
    """List the registered datasets."""
    with database().transaction() as session:
        return jsonify(datasets=[dataset_json(d) for d in ops.list_datasets(session)])


@api.get("/datasets/<int:dataset_id>")
@documented(responses={200: "The dataset", 404: "No such dataset"})
def get_dataset(dataset_id: int):
    """Show one dataset."""
    with database().transaction() as session:
        return jsonify(dataset_json(ops.get_existing(session, Dataset, dataset_id)))


@api.post("/benchmarks")
@documented(body=BenchmarkRequest, responses={201: "The benchmark and its queued jobs"})
def create_benchmark():
    """Submit a benchmark: one queued training job per backbone."""
    body = json_body(BenchmarkRequest)
    with database().transaction() as session:
        dataset = session.get(Dataset, body.dataset)
        if dataset is None:
            raise BadRequest(f"dataset: dataset {body.dataset} not found", "dataset")
        name = body.name or f"{dataset.name}: {', '.join(body.backbones)}"
        benchmark = ops.create_benchmark(session, name=name, dataset_id=dataset.id,
                                         config=body.model_dump(), specs=body.job_specs())
        jobs = [{"id": job.id, "backbone": job.backbone, "status": job.status.value} for job in benchmark.jobs]
    # Enqueue only after the commit, so a worker never looks for a row that isn't there yet.
    for job in jobs:
        enqueue_training(current_app.extensions["tlbench.celery"], job["id"])
    return jsonify(id=benchmark.id, jobs=jobs), 201


@api.get("/benchmarks")
@documented(responses={200: "Every benchmark with its jobs, newest first"})
def list_benchmarks():
    """List the benchmarks."""
    with database().transaction() as session:
        benchmarks = ops.list_benchmarks(session)
        done = ops.epochs_done(session, [job.id for b in benchmarks for job in b.jobs])
        return jsonify(benchmarks=[benchmark_json(b, done) for b in benchmarks])


@api.get("/benchmarks/<int:benchmark_id>")
@documented(responses={200: "The benchmark, its configuration and every job's summary", 404: "No such benchmark"})
def get_benchmark(benchmark_id: int):
    """Show one benchmark."""
    with database().transaction() as session:
        benchmark = ops.get_existing(session, Benchmark, benchmark_id)
        done = ops.epochs_done(session, [job.id for job in benchmark.jobs])
        return jsonify(benchmark_json(benchmark, done, detail=True))


@api.get("/jobs/<int:job_id>")
@documented(responses={200: "The job with its spec, summary and error", 404: "No such job"})
def get_job(job_id: int):
    """Show one job."""
    with database().transaction() as session:
        job = ops.get_existing(session, Job, job_id)
        return jsonify(job_json(job, ops.epochs_done(session, [job_id])[job_id], detail=True))


@api.get("/jobs/<int:job_id>/epochs")
@documented(responses={200: "The job's epoch metrics in order", 404: "No such job"})
def get_job_epochs(job_id: int):
    """List a job's epochs."""
    with database().transaction() as session:
        return jsonify(epochs=[epoch_json(e) for e in ops.job_epochs(session, job_id)])


def _artifact_dir(job_id: int) -> Path:
    """The job's artifact folder, after checking the job exists."""
    with database().transaction() as session:
        ops.get_existing(session, Job, job_id)
    return settings().job_artifact_dir(job_id)


@api.get("/jobs/<int:job_id>/artifacts")
@documented(responses={200: "Every file in the job's artifact folder", 404: "No such job"})
def list_artifacts(job_id: int):
    """List a job's artifact files with their sizes."""
    folder = _artifact_dir(job_id)
    files = sorted(path for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else []
    return jsonify(artifacts=[{"name": path.relative_to(folder).as_posix(), "bytes": path.stat().st_size}
                              for path in files])


@api.get("/jobs/<int:job_id>/artifacts/<path:name>")
@documented(responses={200: "The file", 404: "No such job or file"})
def download_artifact(job_id: int, name: str):
    """Download one artifact; names outside the job's folder are not found."""
    folder = _artifact_dir(job_id)
    if not folder.is_dir():
        raise HttpNotFound(f"job {job_id} has no artifacts yet")
    return send_from_directory(folder, name, as_attachment=True)


@api.get("/openapi.json")
@documented(responses={200: "This document"})
def openapi_document():
    """The OpenAPI 3.1 description of every route."""
    return jsonify(build_openapi(current_app))
