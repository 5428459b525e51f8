"""The JSON API under /api/v1: the one path to the data, for pages, scripts and the CLI."""
from __future__ import annotations

import io
import os
from datetime import timedelta
from pathlib import Path, PurePosixPath

from flask import Blueprint, current_app, jsonify, render_template, request, send_file, send_from_directory
from kombu.exceptions import OperationalError as BrokerUnreachable
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException, NotFound as HttpNotFound
from werkzeug.exceptions import RequestEntityTooLarge, ServiceUnavailable, UnsupportedMediaType

from config.settings import job_artifact_key
from dashboard.converters import IndexConverter, RowIdConverter
from dashboard.errors import ApiError, error_response
from dashboard.eta import Estimator
from dashboard.dataset_registry import (
    DatasetRejected,
    DatasetUnstored,
    dataset_fields,
    keep_in_storage,
    removed_unless_registered,
    resolve_allowed_folder,
    store_upload,
    usable_scan,
)
from dashboard.gallery import ImageUnavailable, dataset_image_path, jpeg_thumbnail, trial_predictions
from dashboard.openapi import build_openapi, documented
from dashboard.pages import PLOTLY_BUNDLE
from dashboard.prediction import (
    PREDICT_TIMEOUT_SECONDS,
    ImageRejected,
    PredictionTimeout,
    PredictionUnavailable,
    require_prediction_worker,
    run_prediction,
    shared_image,
    store_prediction_image,
)
from dashboard.presenters import (
    benchmark_json,
    dataset_json,
    epoch_json,
    epoch_series_json,
    job_json,
    trials_json,
    worker_json,
)
from dashboard.report import Report, csv_text, gather, html_context, markdown
from dashboard.schemas import SAMPLE_BENCHMARK, BenchmarkRequest, DatasetPathRequest, describe_validation_error
from dashboard.weights import WeightsRejected, store_weights_upload
from db import operations as ops
from db.models import Benchmark, Dataset, Job, JobStatus
from jobs.backbones import BACKBONES, SEED_BACKBONES
from jobs.datasets import ImageFile
from jobs.splits import split_indices, split_problem
from jobs.storage import scrubbed
from worker.queues import enqueue_training

api = Blueprint("api", __name__, url_prefix="/api/v1")
# `<id:...>` in the routes below: row ids bounded as the database stores them (larger ones are not found).
api.record_once(lambda state: state.app.url_map.converters.setdefault("id", RowIdConverter))
api.record_once(lambda state: state.app.url_map.converters.setdefault("index", IndexConverter))
# The datasets.name column's length.
DATASET_NAME_CHARS = 200
# Dataset images served as thumbnails (the error gallery): longest side by default, the range a request may
# ask for, and how long a browser may keep one.
TRIAL_NUMBERS = (0, 999)
THUMBNAIL_SIDE = 128
THUMBNAIL_SIDES = (16, 512)
THUMBNAIL_CACHE_SECONDS = 3600


@api.errorhandler(ApiError)
def refused(error: ApiError):
    """Answer a refused (or failed) request."""
    return error_response(error.message, error.status, error.field)


@api.errorhandler(ops.Conflict)
def state_conflict(error: ops.Conflict):
    """Answer a request that does not fit the row's current state."""
    return error_response(str(error), 409)


@api.errorhandler(ops.NotFound)
def row_not_found(error: ops.NotFound):
    """Answer a request for an id that does not exist."""
    return error_response(str(error), 404)


def http_error(error: HTTPException):
    """Answer Werkzeug's errors (404, 405, 413...) in JSON under /api/, as HTML elsewhere."""
    if not request.path.startswith(api.url_prefix + "/"):
        return error
    if isinstance(error, RequestEntityTooLarge):
        limit_mb = current_app.config["MAX_CONTENT_LENGTH"] / 2**20
        message = f"the request body is over the limit of {limit_mb:g} MB (TLBENCH_MAX_UPLOAD_MB)"
    else:
        message = error.description or error.name
    body, status = error_response(message, error.code or 500)
    # The error's own headers stay (a 405's Allow, which RFC 9110 requires); its HTML Content-Type does not.
    headers = [(name, value) for name, value in error.get_headers() if name.lower() != "content-type"]
    return body, status, headers


def database():
    """The app's Database."""
    return current_app.extensions["tlbench.database"]


def settings():
    """The app's Settings."""
    return current_app.extensions["tlbench.settings"]


def celery():
    """The app's Celery client."""
    return current_app.extensions["tlbench.celery"]


def offline_after() -> timedelta:
    """How long a silent worker still counts as online (the settings' Liveness)."""
    return settings().liveness.worker_offline_after


def json_body(model: type[BaseModel]):
    """Parse and validate the JSON body into `model`, or refuse it naming the problem."""
    if not request.is_json:
        raise ApiError(f"expected Content-Type application/json, got {request.mimetype or 'none'!r}",
                         status=UnsupportedMediaType.code)
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError("the body is not valid JSON")
    if not isinstance(body, dict):
        raise ApiError(f"the body must be a JSON object, not a JSON {type(body).__name__}")
    try:
        # The settings let validators check files against the data roots (weights).
        return model.model_validate(body, context={"settings": settings()})
    except ValidationError as error:
        message, field = describe_validation_error(error)
        raise ApiError(message, field) from None


@api.get("/health")
@documented(responses={200: "Database and broker reachable", 503: "Something is down"}, public=True)
def health():
    """Say whether the database and the broker answer: "ok" or "down" each, the details only in the log."""
    checks = {"database": _check("database", lambda: database().ping()), "broker": _check("broker", _ping_broker)}
    healthy = all(state == "ok" for state in checks.values())
    return jsonify(status="ok" if healthy else "degraded", **checks), 200 if healthy else 503


def _check(part: str, probe) -> str:
    """Run one probe: "ok" or "down"; an error's text may name a host or a user, so it goes to the log only."""
    try:
        probe()
        return "ok"
    except Exception:  # any failure is the answer here, not a crash
        current_app.logger.warning("health check: the %s does not answer", part, exc_info=True)
        return "down"


def _ping_broker() -> None:
    """Open a connection to the broker once, without retrying for long."""
    with celery().connection_for_write() as connection:
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
@documented(body=DatasetPathRequest, multipart_file=True,
            responses={201: "The scanned dataset", 503: "The storage did not take the dataset"})
def create_dataset():
    """Register a dataset: a zip upload (multipart field `file`) or a folder under the allowed roots."""
    try:
        root, scanned, name, uploaded = _receive_dataset()
    except DatasetRejected as refusal:
        raise ApiError(str(refusal), refusal.field) from None
    with removed_unless_registered(settings(), root, uploaded):
        try:
            keep_in_storage(settings(), scanned)
        except DatasetUnstored as unstored:
            raise ApiError(str(unstored), status=503) from None
        with database().transaction() as session:
            dataset = ops.add_dataset(session, **dataset_fields(name, root, uploaded, scanned))
            created = dataset_json(dataset)
    return jsonify(created), 201


def _receive_dataset():
    """Read either kind of dataset request; returns (root, scan, name, uploaded)."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            raise ApiError("file: is required (a zip of class folders)", "file")
        name = request.form.get("name") or Path(upload.filename).stem
        root, scanned = store_upload(settings(), upload)
        return root, scanned, name[:DATASET_NAME_CHARS], True
    body = json_body(DatasetPathRequest)
    folder = resolve_allowed_folder(settings(), body.path)
    # A folder's own name may be longer than the column (PostgreSQL refuses what SQLite would keep).
    return folder, usable_scan(folder, "path"), (body.name or folder.name)[:DATASET_NAME_CHARS], False


@api.get("/datasets")
@documented(responses={200: "Every dataset, newest first"})
def list_datasets():
    """List the registered datasets."""
    with database().transaction() as session:
        return jsonify(datasets=[dataset_json(d) for d in ops.list_datasets(session)])


@api.get("/datasets/<id:dataset_id>")
@documented(responses={200: "The dataset", 404: "No such dataset"})
def get_dataset(dataset_id: int):
    """Show one dataset."""
    with database().transaction() as session:
        return jsonify(dataset_json(ops.get_existing(session, Dataset, dataset_id)))


@api.get("/datasets/<id:dataset_id>/images/<index:index>")
@documented(responses={200: "The image as a JPEG, shrunk to fit `size` pixels a side", 404: "No such dataset or image"},
            query={"size": (f"The longest side in pixels (default {THUMBNAIL_SIDE})", *THUMBNAIL_SIDES)})
def get_dataset_image(dataset_id: int, index: int):
    """One image of a dataset, by its index in the dataset's file list (as a trial's predictions.npz names it)."""
    side = _query_number("size", THUMBNAIL_SIDES) or THUMBNAIL_SIDE
    with database().transaction() as session:
        dataset = ops.get_existing(session, Dataset, dataset_id)
        root, manifest = Path(dataset.root), list(dataset.manifest)
    try:
        jpeg = jpeg_thumbnail(dataset_image_path(root, manifest, index), side)
    except ImageUnavailable as error:  # past the end, gone, moved out, or no longer an image
        raise ApiError(f"index: dataset {dataset_id}: {error}", "index", status=HttpNotFound.code) from None
    # A dataset's files never change under its id (its sha256 was taken at registration): browsers may keep it.
    return send_file(io.BytesIO(jpeg), mimetype="image/jpeg", max_age=THUMBNAIL_CACHE_SECONDS)


def _query_number(name: str, bounds: tuple[int, int]) -> int | None:
    """A whole-number query parameter within bounds (inclusive), or None when absent."""
    value = request.args.get(name)
    if value is None:
        return None
    low, high = bounds
    if not (value.isdigit() and low <= int(value) <= high):
        raise ApiError(f"{name}: must be a whole number from {low} to {high}, not {value[:20]!r}", name)
    return int(value)


@api.post("/benchmarks")
@documented(body=BenchmarkRequest, responses={201: "The benchmark and its queued jobs",
                                             503: "The broker did not take the jobs; nothing was kept"})
def create_benchmark():
    """Submit a benchmark: one queued training job per backbone."""
    return submit_benchmark(json_body(BenchmarkRequest))


@api.post("/benchmarks/sample")
@documented(responses={201: "The sample benchmark and its queued jobs", 409: "No sample dataset",
                        503: "The broker did not take the jobs; nothing was kept"})
def create_sample_benchmark():
    """Run the built-in sample benchmark on the sample dataset `tlbench up` created."""
    with database().transaction() as session:
        sample = ops.sample_dataset(session)
    if sample is None:
        raise ApiError("there is no sample dataset; `tlbench up` creates it on first start", status=409)
    return submit_benchmark(BenchmarkRequest.model_validate({**SAMPLE_BENCHMARK, "dataset": sample.id}))


def submit_benchmark(body: BenchmarkRequest):
    """Write the benchmark and its jobs, then enqueue each job; answers 201, or 503 (and keeps nothing) when
    the broker does not take them."""
    with database().transaction() as session:
        dataset = session.get(Dataset, body.dataset)
        if dataset is None:
            raise ApiError(f"dataset: dataset {body.dataset} not found", "dataset")
        problem = _split_problem(dataset, body)
        if problem:
            raise ApiError(f"dataset: {problem}", "dataset")
        name = body.name or f"{dataset.name}: {', '.join(body.backbones)}"
        benchmark = ops.create_benchmark(session, name=name, dataset_id=dataset.id,
                                         config=body.model_dump(), specs=body.job_specs(), pool=body.pool)
        jobs = [{"id": job.id, "backbone": job.backbone, "status": job.status.value} for job in benchmark.jobs]
    # Enqueue only after the commit, so a worker never looks for a row that isn't there yet.
    try:
        for job in jobs:
            enqueue_training(celery(), job["id"], body.pool)
    except Exception as error:
        _withdraw(benchmark.id, error)
    return jsonify(id=benchmark.id, pool=body.pool, jobs=jobs), 201


def _split_problem(dataset: Dataset, body: BenchmarkRequest) -> str | None:
    """Why the benchmark's split of this dataset cannot be trained and tested on (a class too small), or None."""
    files = [ImageFile(*entry) for entry in dataset.manifest]
    split = split_indices(files, body.validation_split, body.seed, body.test_split)
    return split_problem(files, dataset.classes, split)


def _withdraw(benchmark_id: int, error: Exception):
    """Remove a benchmark whose jobs could not all be sent, then refuse the submit: 503 when the broker is down.

    A message that did go out finds its job gone and is dropped (claim_job).
    """
    with database().transaction() as session:
        ops.delete_benchmark(session, benchmark_id)
    if isinstance(error, BrokerUnreachable):
        current_app.logger.warning("benchmark %s withdrawn: the broker did not take its jobs: %s", benchmark_id, error)
        raise ApiError("the job queue (broker) did not answer, so nothing was submitted; try again shortly",
                         status=ServiceUnavailable.code) from None
    raise error


@api.get("/benchmarks")
@documented(responses={200: "Every benchmark with its jobs, newest first"})
def list_benchmarks():
    """List the benchmarks."""
    with database().transaction() as session:
        benchmarks = ops.list_benchmarks(session)
        job_ids = [job.id for b in benchmarks for job in b.jobs]
        done, trials = ops.epochs_done(session, job_ids), ops.job_trials(session, job_ids)
        estimator = Estimator(session, offline_after())
        return jsonify(benchmarks=[benchmark_json(b, done, trials, estimator=estimator) for b in benchmarks])


@api.get("/benchmarks/<id:benchmark_id>")
@documented(responses={200: "The benchmark, its configuration, splits, every job's summary and the comparison "
                             "against the leader", 404: "No such benchmark"})
def get_benchmark(benchmark_id: int):
    """Show one benchmark, with which backbones are statistically tied with the leader."""
    with database().transaction() as session:
        benchmark = ops.get_existing(session, Benchmark, benchmark_id)
        job_ids = [job.id for job in benchmark.jobs]
        done, trials = ops.epochs_done(session, job_ids), ops.job_trials(session, job_ids, with_correctness=True)
        estimator = Estimator(session, offline_after())
        return jsonify(benchmark_json(benchmark, done, trials, detail=True, estimator=estimator))


@api.get("/benchmarks/<id:benchmark_id>/epochs")
@documented(responses={200: "One series per backbone: its shown trial's epochs and the band across its repeats",
                        404: "No such benchmark"})
def get_benchmark_epochs(benchmark_id: int):
    """The curves of a benchmark in one call, for its charts: each job's selected trial (trial 0 until one is)."""
    with database().transaction() as session:
        return jsonify(series=[epoch_series_json(job, epochs) for job, epochs in ops.benchmark_epochs(session, benchmark_id)])


@api.get("/benchmarks/<id:benchmark_id>/report")
@documented(responses={200: "The report as one HTML file that opens from disk, offline", 404: "No such benchmark"})
def get_benchmark_report(benchmark_id: int):
    """The benchmark as one self-contained HTML file: data, configuration, leaderboard, charts, errors, record."""
    report = _report(benchmark_id)
    page = render_template("report.html", plotly_js=PLOTLY_BUNDLE.read_text(), **html_context(report))
    return _download(page, "text/html", f"tlbench-benchmark-{benchmark_id}.html")


@api.get("/benchmarks/<id:benchmark_id>/report.csv")
@documented(responses={200: "One CSV row per trial of every job", 404: "No such benchmark"})
def get_benchmark_report_csv(benchmark_id: int):
    """Every trial of the benchmark as a CSV row, with its job's result beside it."""
    return _download(csv_text(_report(benchmark_id)), "text/csv", f"tlbench-benchmark-{benchmark_id}.csv")


@api.get("/benchmarks/<id:benchmark_id>/report.md")
@documented(responses={200: "A short markdown summary", 404: "No such benchmark"})
def get_benchmark_report_markdown(benchmark_id: int):
    """The leaderboard and its verdict in markdown, to paste into a pull request or a chat."""
    return _download(markdown(_report(benchmark_id)), "text/markdown", f"tlbench-benchmark-{benchmark_id}.md")


def _report(benchmark_id: int) -> Report:
    with database().transaction() as session:
        return gather(session, settings(), benchmark_id)


def _download(text: str, mimetype: str, filename: str):
    """Answer text as a file to save under `filename`."""
    response = current_app.response_class(text, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@api.post("/benchmarks/<id:benchmark_id>/predict")
@documented(multipart_file="image/*", responses={200: "Class probabilities per succeeded job",
                                                 409: "No job succeeded yet",
                                                 503: "No prediction worker is running",
                                                 504: "No prediction worker answered in time"})
def predict_benchmark(benchmark_id: int):
    """Predict one uploaded image with every succeeded job of the benchmark."""
    with database().transaction() as session:
        benchmark = ops.get_existing(session, Benchmark, benchmark_id)
        jobs = [{"job_id": job.id, "attempt": job.attempt, "backbone": job.backbone} for job in benchmark.jobs
                if job.status is JobStatus.SUCCEEDED]
    if not jobs:
        raise ApiError(f"benchmark {benchmark_id} has no succeeded job to predict with yet", status=409)
    try:
        image_path = store_prediction_image(settings(), request.files.get("file"))
    except ImageRejected as refusal:
        raise ApiError(str(refusal), "file") from None
    try:
        with shared_image(settings(), image_path) as image_key:  # whatever happens, the upload goes
            require_prediction_worker(celery(), database(), offline_after())
            timeout = current_app.config.get("TLBENCH_PREDICT_TIMEOUT", PREDICT_TIMEOUT_SECONDS)
            return jsonify(predictions=run_prediction(celery(), image_key, jobs, timeout))
    except PredictionUnavailable as unavailable:
        raise ApiError(str(unavailable), status=503) from None
    except PredictionTimeout as timed_out:
        raise ApiError(str(timed_out), status=504) from None


@api.post("/weights")
@documented(multipart_file="application/x-hdf5",
            responses={201: "The id a benchmark's `weights` names the file by"})
def upload_weights():
    """Keep an uploaded weights file (HDF5, .h5 or .weights.h5) for benchmarks to start from."""
    try:
        weights_id, size = store_weights_upload(settings(), request.files.get("file"))
    except WeightsRejected as refusal:
        raise ApiError(str(refusal), "file") from None
    return jsonify(weights=weights_id, bytes=size), 201


@api.get("/jobs/<id:job_id>")
@documented(responses={200: "The job with its spec, summary and error", 404: "No such job"})
def get_job(job_id: int):
    """Show one job."""
    with database().transaction() as session:
        job = ops.get_existing(session, Job, job_id)
        eta = Estimator(session, offline_after()).job(job)
        return jsonify(job_json(job, ops.epochs_done(session, [job_id])[job_id], detail=True,
                                trials=ops.job_trials(session, [job_id])[job_id], eta=eta))


@api.post("/jobs/<id:job_id>/cancel")
@documented(responses={202: "The job, cancelled or asked to stop after its epoch", 409: "Already finished"})
def cancel_job(job_id: int):
    """Cancel a job: a queued one never starts, a running one stops within one epoch."""
    with database().transaction() as session:
        job = ops.request_cancel(session, job_id)
        return jsonify(job_json(job, ops.epochs_done(session, [job_id])[job_id], detail=True,
                                trials=ops.job_trials(session, [job_id])[job_id])), 202


@api.post("/jobs/<id:job_id>/retry")
@documented(responses={202: "The job, queued again for a new attempt", 409: "Not failed or cancelled"})
def retry_job(job_id: int):
    """Run a failed or cancelled job again from the start."""
    with database().transaction() as session:
        job = ops.reset_for_retry(session, job_id)
        shown = job_json(job, 0, detail=True)
    try:
        enqueue_training(celery(), job_id, job.pool)
    except BrokerUnreachable as error:  # the job is queued in the database: recovery sends it again
        current_app.logger.warning("job %s: the broker did not take its retry (%s); a worker sends it later",
                                   job_id, error)
    return jsonify(shown), 202


@api.get("/workers")
@documented(responses={200: "Every worker that registered: pools, status, current job and metrics"})
def list_workers():
    """List the workers: name, host, device, pools, status, current job, metrics, last heartbeat."""
    with database().transaction() as session:
        return jsonify(workers=[worker_json(worker, job) for worker, job in ops.list_workers(session, offline_after())])


@api.get("/jobs/<id:job_id>/epochs")
@documented(responses={200: "The job's epoch metrics, by trial then epoch", 404: "No such job"},
            query={"trial": "Only this trial's epochs (its number, from GET /jobs/{job_id}/trials)"})
def get_job_epochs(job_id: int):
    """List a job's epochs, every trial's or one trial's."""
    trial = _query_number("trial", TRIAL_NUMBERS)
    with database().transaction() as session:
        epochs = ops.job_epochs(session, job_id, trial)
        return jsonify(epochs=[epoch_json(e) for e in epochs])


@api.get("/jobs/<id:job_id>/trials")
@documented(responses={200: "The job's trials (learning rate x repeat) with their progress and results",
                        404: "No such job"})
def get_job_trials(job_id: int):
    """List a job's trials: learning rate, repeat, seed, status, best validation and test accuracy, selected."""
    with database().transaction() as session:
        job = ops.get_existing(session, Job, job_id)
        rows = ops.job_trials(session, [job_id])[job_id]
        return jsonify(trials_json(job, rows, ops.trial_epochs_done(session, job_id)))


@api.get("/jobs/<id:job_id>/predictions")
@documented(responses={200: "Per test image of the trial: its dataset index, true and predicted class, confidence",
                        404: "No such job, or no test predictions (yet)"},
            query={"trial": "This trial's predictions (default: the selected trial)"})
def get_job_predictions(job_id: int):
    """List a trial's test predictions, the selected trial's by default: where it is right and where it goes wrong."""
    asked = _query_number("trial", TRIAL_NUMBERS)
    with database().transaction() as session:
        job = ops.get_existing(session, Job, job_id)
        trial = asked if asked is not None else (job.summary or {}).get("selected_trial")
        dataset = job.benchmark.dataset
        labels = [ImageFile(*entry).label for entry in dataset.manifest]
        classes, dataset_id = list(dataset.classes), dataset.id
    shown = None if trial is None else trial_predictions(settings().storage(), job_id, trial, labels)
    if shown is None:
        which = "" if asked is None else f" for trial {asked}"
        raise ApiError(f"job {job_id} has no test predictions{which} (not finished, or no test set held out)",
                         status=HttpNotFound.code)
    return jsonify(job_id=job_id, trial=trial, dataset_id=dataset_id, classes=classes, predictions=shown)


def _artifact_dir(job_id: int) -> Path:
    """The job's artifact folder, after checking the job exists."""
    with database().transaction() as session:
        ops.get_existing(session, Job, job_id)
    return settings().job_artifact_dir(job_id)


@api.get("/jobs/<id:job_id>/artifacts")
@documented(responses={200: "Every file in the job's artifact folder", 404: "No such job",
                       503: "The storage did not answer"})
def list_artifacts(job_id: int):
    """List a job's artifact files with their sizes; one that goes while listed (a checkpoint rotating) is left out."""
    folder = _artifact_dir(job_id)
    if not settings().storage_is_home:  # the files a finished job stored there
        stored = _from_storage(lambda storage: storage.files(job_artifact_key(job_id)))
        return jsonify(artifacts=[{"name": name, "bytes": size} for name, size in sorted(stored.items())])
    found = []
    # os.walk skips a folder that vanishes under it (its default ignores listing errors); links are not followed.
    for parent, _, names in os.walk(folder):
        for path in (Path(parent, name) for name in names):
            size = _size_if_artifact(folder, path)
            if size is not None:
                found.append({"name": path.relative_to(folder).as_posix(), "bytes": size})
    return jsonify(artifacts=sorted(found, key=lambda artifact: artifact["name"]))


def _size_if_artifact(folder: Path, path: Path) -> int | None:
    """The file's size if it is an artifact and still there; None otherwise."""
    try:
        return path.stat().st_size if _is_artifact(folder, path) else None
    except FileNotFoundError:
        return None


def _is_artifact(folder: Path, path: Path) -> bool:
    """A regular file whose real location is inside the job's folder: links out of it don't count."""
    return path.is_file() and path.resolve().is_relative_to(folder.resolve())


@api.get("/jobs/<id:job_id>/artifacts/<path:name>")
@documented(responses={200: "The file", 404: "No such job or file", 503: "The storage did not answer"})
def download_artifact(job_id: int, name: str):
    """Download one artifact; names outside the job's folder are not found."""
    folder = _artifact_dir(job_id)
    if not settings().storage_is_home:
        return _download_stored_artifact(job_id, name)
    if not folder.is_dir():
        raise HttpNotFound(f"job {job_id} has no artifacts yet")
    # send_from_directory refuses "../" names itself; resolving also catches a link that leads out.
    if not _is_artifact(folder, folder / name):
        raise ApiError(f"name: {name!r} is not an artifact of job {job_id}", "name", status=HttpNotFound.code)
    return send_from_directory(folder, name, as_attachment=True)


def _download_stored_artifact(job_id: int, name: str):
    """Stream one of the files a finished job stored in the storage; only names it lists are found."""
    key = job_artifact_key(job_id)
    stored = _from_storage(lambda storage: storage.files(key))
    if not stored:
        raise HttpNotFound(f"job {job_id} has no artifacts yet")
    if name not in stored:
        raise ApiError(f"name: {name!r} is not an artifact of job {job_id}", "name", status=HttpNotFound.code)
    stream = _from_storage(lambda storage: storage.open(f"{key}/{name}"))
    return send_file(stream, download_name=PurePosixPath(name).name, as_attachment=True)


def _from_storage(read):
    """What `read` gets from the storage; a 503 naming the storage when it does not answer."""
    storage = settings().storage()
    try:
        return read(storage)
    except Exception as error:  # each store's client raises its own errors
        raise ApiError(f"the storage {storage.shown} did not answer: {scrubbed(' '.join(str(error).split()))}",
                       status=503) from None


@api.get("/openapi.json")
@documented(responses={200: "This document"})
def openapi_document():
    """The OpenAPI 3.1 description of every route."""
    return jsonify(build_openapi(current_app))
