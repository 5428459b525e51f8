"""The API against an outside fuzzer: Schemathesis runs all its checks against a live stack that holds a
dataset and a finished benchmark. First, fast checks of what it found: ids too large for the database,
405 answers without `Allow`, and an OpenAPI document that accepted what the server refuses."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from jsonschema import Draft202012Validator

from dashboard.converters import LARGEST_ROW_ID, RowIdConverter
from dbutil import BACKENDS, empty_database_url
from jobs.backbones import BACKBONES
from testsupport.images import make_image_folder
from testsupport.stack import running_stack, wait_until
from tlbench.client import zip_folder

# Far beyond any database integer: it reached the database and came back as a 500.
HUGE_ID = 10**37
ID_ROUTES = [
    ("GET", "/api/v1/datasets/{id}"),
    ("GET", "/api/v1/datasets/{id}/images/0"),
    ("GET", "/api/v1/benchmarks/{id}"),
    ("GET", "/api/v1/benchmarks/{id}/epochs"),
    ("GET", "/api/v1/benchmarks/{id}/report"),
    ("GET", "/api/v1/benchmarks/{id}/report.csv"),
    ("GET", "/api/v1/benchmarks/{id}/report.md"),
    ("POST", "/api/v1/benchmarks/{id}/predict"),
    ("GET", "/api/v1/jobs/{id}"),
    ("GET", "/api/v1/jobs/{id}/epochs"),
    ("GET", "/api/v1/jobs/{id}/trials"),
    ("GET", "/api/v1/jobs/{id}/predictions"),
    ("GET", "/api/v1/jobs/{id}/artifacts"),
    ("GET", "/api/v1/jobs/{id}/artifacts/model.keras"),
    ("POST", "/api/v1/jobs/{id}/cancel"),
    ("POST", "/api/v1/jobs/{id}/retry"),
]


@pytest.mark.parametrize("method, route", ID_ROUTES, ids=[f"{m} {r}" for m, r in ID_ROUTES])
@pytest.mark.parametrize("row_id", [HUGE_ID, LARGEST_ROW_ID + 1, LARGEST_ROW_ID])
def test_an_id_no_row_can_have_is_not_found(client, method, route, row_id):
    response = client.open(route.format(id=row_id), method=method)
    assert response.status_code == 404, response.get_data(as_text=True)[:500]
    assert response.json["error"]


def test_the_document_bounds_every_id_as_the_routes_do(client):
    document = client.get("/api/v1/openapi.json").json
    ids = [parameter for operations in document["paths"].values() for operation in operations.values()
           for parameter in operation["parameters"] if parameter["name"].endswith("_id")]
    assert len(ids) == len(ID_ROUTES)
    assert all(parameter["schema"] == RowIdConverter.openapi_schema for parameter in ids), ids
    benchmark = document["components"]["schemas"]["BenchmarkRequest"]
    assert benchmark["properties"]["dataset"]["maximum"] == LARGEST_ROW_ID


WRONG_METHODS = [
    ("DELETE", "/api/v1/benchmarks", {"GET", "POST"}),
    ("TRACE", "/api/v1/health", {"GET"}),
    ("PUT", "/api/v1/jobs/1/cancel", {"POST"}),
    ("PATCH", "/api/v1/jobs/1/artifacts/model.keras", {"GET"}),
]


@pytest.mark.parametrize("method, route, allowed", WRONG_METHODS, ids=[f"{m} {r}" for m, r, _ in WRONG_METHODS])
def test_a_405_says_which_methods_the_route_has(client, method, route, allowed):
    response = client.open(route, method=method)
    assert response.status_code == 405
    assert response.json["error"]  # still the API's error shape
    # RFC 9110 section 15.5.6: a 405 must list the target's methods in Allow.
    listed = {name.strip() for name in response.headers.get("Allow", "").split(",") if name.strip()}
    assert listed - {"HEAD", "OPTIONS"} == allowed


# (change to a good benchmark, whether the server takes it): the document must say the same.
BENCHMARK_BODIES = [
    ({}, True),
    ({"backbones": [""]}, False),
    ({"backbones": ["NoSuchNet"]}, False),
    ({"backbones": ["VGG16", "VGG16"]}, False),
    ({"backbones": list(BACKBONES)}, True),
    ({"image_size": 31}, False),
    ({"image_size": 32}, True),
    ({"image_size": 2049}, False),
    ({"backbones": ["InceptionV3"], "image_size": 74}, False),
    ({"backbones": ["VGG16", "InceptionV3"], "image_size": 75}, True),
    ({"backbones": ["Xception"], "image_size": {"Xception": 70}}, False),
    ({"backbones": ["Xception"], "image_size": {"Xception": 71}}, True),
    ({"backbones": ["Xception"], "image_size": {}}, True),
    ({"image_size": {"NoSuchNet": 64}}, False),
    ({"dataset": LARGEST_ROW_ID + 1}, False),
    ({"dataset": HUGE_ID}, False),
    ({"epochs": 10_001}, False),
    ({"patience": 1160.0, "image_size": 64.0}, True),  # JSON's 1160.0 is the integer 1160
    ({"epochs": 2.5}, False),
    ({"epochs": "5"}, False),
    ({"augment": 1}, False),
    ({"pool": "predict"}, False),
]


@pytest.fixture
def dataset_id(client, settings) -> int:
    """A registered two-class dataset."""
    folder = make_image_folder(settings.data_roots[0] / "colours", classes=2, per_class=3, size=32)
    response = client.post("/api/v1/datasets", json={"path": str(folder)})
    assert response.status_code == 201, response.json
    return response.json["id"]


def request_validator(document: dict, model: str) -> Draft202012Validator:
    """A JSON Schema validator of one request body the document describes."""
    return Draft202012Validator({"$ref": f"#/components/schemas/{model}", "components": document["components"]})


@pytest.mark.parametrize("change, taken", BENCHMARK_BODIES, ids=[str(change) for change, _ in BENCHMARK_BODIES])
def test_the_document_accepts_a_benchmark_exactly_when_the_server_does(client, dataset_id, change, taken):
    # A pool no worker serves: nothing trains, and an accepted benchmark just waits.
    body = {"dataset": dataset_id, "backbones": ["VGG16"], "weights": "none", "pool": "nobody", **change}
    validator = request_validator(client.get("/api/v1/openapi.json").json, "BenchmarkRequest")
    response = client.post("/api/v1/benchmarks", json=body)
    assert response.status_code == (201 if taken else 400), response.json
    assert validator.is_valid(body) == taken, [error.message for error in validator.iter_errors(body)]


# --- The fuzzer against a live stack ---------------------------------------------------------------------

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Test cases per operation and phase, and a fixed seed: the run takes about a minute on two cores and
# finds the same cases each time (schemathesis prints the seed; change it here to explore further).
FUZZ_EXAMPLES = 20
FUZZ_SEED = 20261201
FUZZ_SECONDS = 300
JOB_SECONDS = 300
# One small benchmark that trains to the end within a minute on a CPU.
SMALL_BENCHMARK = {"backbones": ["MobileNetV2"], "epochs": 1, "image_size": 32, "weights": "none"}

# The run's configuration. Why each entry is there (docs/api.md says the same, under "the fuzz test"):
# - dictionaries with the real ids feed half the path ids, so the routes behind them are reached;
# - POST /benchmarks gets a registered dataset, weights without a file, and a size every backbone takes,
#   because what the server checks there depends on its state (which datasets and files exist) and, for
#   per-backbone sizes, on another field: things a JSON Schema cannot say. Left free, nearly every valid
#   body would be refused, and positive_data_acceptance would report the document, not the server;
# - positive_data_acceptance does not apply to uploads (a zip of class folders, a decodable image, an HDF5 file)
#   nor to a folder path (it must exist under the data roots): the document can say "a file" or "a string",
#   not that. Uploads are the operations whose body may be multipart/form-data.
FUZZ_CONFIG = """\
[dictionaries.datasets]
values = [{dataset}]
[dictionaries.benchmarks]
values = [{benchmark}]
[dictionaries.jobs]
values = [{job}]
[dictionaries.artifacts]
values = ["model.keras", "labels.json", "summary.json"]
[dictionaries.weights]
values = ["none", "imagenet"]
[dictionaries.sizes]
values = [75, 96]

[parameters]
"path.dataset_id" = {{ dictionary = "datasets", probability = 0.5 }}
"path.benchmark_id" = {{ dictionary = "benchmarks", probability = 0.5 }}
"path.job_id" = {{ dictionary = "jobs", probability = 0.5 }}
"path.name" = {{ dictionary = "artifacts", probability = 0.5 }}

[[operations]]
include-operation-id = "create_benchmark"
parameters = {{ "body.dataset" = {{ dictionary = "datasets" }}, "body.weights" = {{ dictionary = "weights" }}, \
"body.image_size" = {{ dictionary = "sizes" }} }}

[[operations]]
include-operation-id-regex = "^({uploads})$"
checks.positive_data_acceptance.expected-statuses = [{refused_upload}]
"""
# positive_data_acceptance's own list, plus 400: for uploads (and a folder path), schema-valid is not enough.
# (`--checks all` on the command line turns every check on for every operation, so the exception is made
# in what the check expects, not by turning it off.)
REFUSED_UPLOAD_STATUSES = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]


def training_worker(home: Path, database_url: str | None, log: Path) -> subprocess.Popen:
    """`tlbench worker --gpus none` on the stack's home (its embedded Redis) and database, in its own process."""
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
    env.update(TLBENCH_HOME=str(home), **({"DATABASE_URL": database_url} if database_url else {}))
    with log.open("w") as output:
        return subprocess.Popen([sys.executable, "-m", "tlbench", "worker", "--gpus", "none"],
                                env=env, stdout=output, stderr=subprocess.STDOUT)


def upload_dataset(url: str, folder: Path) -> int:
    """Upload a folder of class folders as a zip; its dataset id."""
    response = requests.post(f"{url}/api/v1/datasets", files={"file": ("colours.zip", io.BytesIO(zip_folder(folder)))},
                             timeout=60)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def finished_benchmark(url: str, dataset: int, home: Path, database_url: str | None, log: Path) -> dict:
    """Run SMALL_BENCHMARK to the end on a worker that stops afterwards; the benchmark."""
    response = requests.post(f"{url}/api/v1/benchmarks", json={"dataset": dataset, **SMALL_BENCHMARK}, timeout=30)
    assert response.status_code == 201, response.text
    benchmark_url = f"{url}/api/v1/benchmarks/{response.json()['id']}"
    worker = training_worker(home, database_url, log)
    try:
        wait_until(lambda: worker.poll() is not None or requests.get(benchmark_url, timeout=10).json()["status"]
                   not in ("queued", "running"), JOB_SECONDS, "the small benchmark to finish")
        assert worker.poll() is None, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
    benchmark = requests.get(benchmark_url, timeout=10).json()
    assert benchmark["status"] == "succeeded", benchmark
    return benchmark


@pytest.fixture(params=BACKENDS)
def stocked_stack(request, tmp_path):
    """A live stack with a dataset and a finished benchmark, and no training worker: the fuzzer submits
    many valid benchmarks (up to 40 backbones, 2048 px, 10000 epochs), which must wait, queued, rather
    than train on this machine for the rest of the run. Once on SQLite, once on PostgreSQL."""
    home = tmp_path / "home"
    database_url = empty_database_url(request, request.param, tmp_path)
    with running_stack(home, "--gpus", "none", "--workers", "0", database_url=database_url) as stack:
        folder = make_image_folder(tmp_path / "colours", classes=2, per_class=8, size=32)
        dataset = upload_dataset(stack["url"], folder)
        benchmark = finished_benchmark(stack["url"], dataset, home, database_url, tmp_path / "worker.log")
        yield {**stack, "dataset": dataset, "benchmark": benchmark["id"], "job": benchmark["jobs"][0]["id"]}


def upload_operations(document: dict) -> list[str]:
    """The ids of the operations that take a multipart/form-data body (a file)."""
    return sorted(operation["operationId"] for operations in document["paths"].values()
                  for operation in operations.values()
                  if "multipart/form-data" in operation.get("requestBody", {}).get("content", {}))


def test_schemathesis_finds_nothing_against_a_live_stack(stocked_stack, tmp_path):
    document = requests.get(f"{stocked_stack['url']}/api/v1/openapi.json", timeout=10).json()
    config = tmp_path / "schemathesis.toml"
    config.write_text(FUZZ_CONFIG.format(
        dataset=stocked_stack["dataset"], benchmark=stocked_stack["benchmark"], job=stocked_stack["job"],
        uploads="|".join(upload_operations(document)),
        refused_upload=", ".join(f'"{status}"' for status in REFUSED_UPLOAD_STATUSES)))
    result = subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(config), "run", f"{stocked_stack['url']}/api/v1/openapi.json",
         "--checks", "all", "--max-examples", str(FUZZ_EXAMPLES), "--seed", str(FUZZ_SEED),
         "--generation-database", "none", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=FUZZ_SECONDS)
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-3000:]
