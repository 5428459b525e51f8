"""Malformed requests, in one table: each is refused with a 4xx JSON error naming the problem
(and the field, where there is one), and none of them writes a row, a file or a queue message."""
from __future__ import annotations

import dataclasses
import functools
import io
import stat
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image
from sqlalchemy import func, select

from db.models import Benchmark, Dataset, Epoch, Job, JobStatus, Trial
from jobs.datasets import ImageFile
from testsupport.api_errors import WEIGHTS_REFUSED
from testsupport.images import class_names, make_image_folder, small_png, two_class_zip, zip_of
from worker.queues import PREDICT_QUEUE, TRAIN_QUEUE

# What TLBENCH_MAX_UPLOAD_MB=1 gives; small, so that an oversized body is cheap to send.
UPLOAD_LIMIT_MB = 1
MISSING = object()  # a field left out of the request body
GOOD_BENCHMARK = {"backbones": ["VGG16"], "epochs": 2, "image_size": 32, "weights": "none"}
COUNTED_TABLES = (Dataset, Benchmark, Job, Trial, Epoch)


@pytest.fixture
def settings(settings):
    """The shared test settings with a 1 MiB upload limit (MAX_CONTENT_LENGTH follows it)."""
    return dataclasses.replace(settings, max_upload_bytes=UPLOAD_LIMIT_MB * 2**20)


def zip_with_link() -> bytes:
    """A zip whose entry is a symbolic link to /etc/passwd."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cats/a.png", small_png())
        link = zipfile.ZipInfo("dogs/b.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


class Scene:
    """What a case may need, built on first use and before the 'nothing written' snapshot is taken."""

    def __init__(self, client, app, settings, tmp_path: Path):
        self.client, self.app, self.settings, self.tmp = client, app, settings, tmp_path
        self.data_root = settings.data_roots[0]

    @cached_property
    def dataset_id(self) -> int:
        """A registered two-class dataset."""
        response = self.client.post("/api/v1/datasets", data={"file": (io.BytesIO(two_class_zip()), "ok.zip")},
                                    content_type="multipart/form-data")
        assert response.status_code == 201, response.json
        return response.json["id"]

    @cached_property
    def job_id(self) -> int:
        """A queued job with one artifact, a secret beside the artifacts and a link to it among them."""
        created = self.client.post("/api/v1/benchmarks", json={"dataset": self.dataset_id, **GOOD_BENCHMARK})
        job_id = created.json["jobs"][0]["id"]
        folder = self.settings.job_artifact_dir(job_id)
        folder.mkdir(parents=True)
        (folder / "labels.json").write_text('["cats", "dogs"]')
        secret = self.settings.home / "secret.txt"
        secret.write_text("secret")
        (folder / "leak.txt").symlink_to(secret)
        return job_id

    @cached_property
    def image_linked_out_dataset_id(self) -> int:
        """A registered dataset whose first image was replaced, after its scan, by a link to a file outside it."""
        response = self.client.post("/api/v1/datasets", data={"file": (io.BytesIO(two_class_zip()), "linked.zip")},
                                    content_type="multipart/form-data")
        assert response.status_code == 201, response.json
        with self.app.extensions["tlbench.database"].transaction() as session:
            dataset = session.get(Dataset, response.json["id"])
            first = Path(dataset.root) / ImageFile(*dataset.manifest[0]).path
        secret = self.settings.home / "secret.png"
        secret.write_bytes(small_png("green"))
        first.unlink()
        first.symlink_to(secret)
        return response.json["id"]

    @cached_property
    def succeeded_benchmark_id(self) -> int:
        """A benchmark whose one job is marked succeeded, so that predictions are accepted."""
        with self.app.extensions["tlbench.database"].transaction() as session:
            job = session.get(Job, self.job_id)
            job.status = JobStatus.SUCCEEDED
            return job.benchmark_id

    @cached_property
    def outside_folder(self) -> Path:
        """A good two-class dataset outside the allowed data roots."""
        return make_image_folder(self.tmp / "elsewhere" / "pets", classes=2, per_class=2, size=16)

    def data_folder(self, name: str, files: dict[str, bytes] | None = None,
                    links: dict[str, Path] | None = None) -> str:
        """A folder under the allowed data root with these files and symbolic links; returns its path."""
        folder = self.data_root / name
        for relative, content in (files or {}).items():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_bytes(content)
        for relative, target in (links or {}).items():
            assert target.exists(), target  # a dangling link would prove nothing
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).symlink_to(target, target_is_directory=target.is_dir())
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)


def benchmark(**change) -> Callable[[Scene], dict]:
    """POST /benchmarks with a good body changed by `change` (MISSING removes a field)."""
    def build(scene: Scene) -> dict:
        body = {"dataset": scene.dataset_id, **GOOD_BENCHMARK, **change}
        return {"method": "POST", "path": "/api/v1/benchmarks",
                "json": {key: value for key, value in body.items() if value is not MISSING}}
    return build


def raw_body(data: bytes | str, content_type: str, path: str = "/api/v1/benchmarks") -> Callable[[Scene], dict]:
    """POST these bytes with this content type."""
    return lambda scene: {"method": "POST", "path": path, "data": data, "content_type": content_type}


def upload(payload: Callable[[], bytes], filename: str = "data.zip", path: str = "/api/v1/datasets"):
    """POST a multipart upload; `payload` is built only when the case runs."""
    return lambda scene: {"method": "POST", "path": path(scene) if callable(path) else path,
                          "data": {"file": (io.BytesIO(payload()), filename)}, "content_type": "multipart/form-data"}


def register_path(make_path: Callable[[Scene], object]) -> Callable[[Scene], dict]:
    """POST /datasets with JSON {"path": ...}."""
    return lambda scene: {"method": "POST", "path": "/api/v1/datasets", "json": {"path": make_path(scene)}}


def call(method: str, make_path: Callable[[Scene], str] | str, **options) -> Callable[[Scene], dict]:
    """A request without a body."""
    return lambda scene: {"method": method, "path": make_path(scene) if callable(make_path) else make_path, **options}


@functools.cache
def bilevel_png(width: int, height: int) -> bytes:
    """A blank one-bit PNG: a few kilobytes on the wire, width x height pixels once decoded."""
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def decompression_bomb() -> bytes:
    """400 megapixels, over twice Pillow's own limit: Pillow refuses to open it."""
    return bilevel_png(20_000, 20_000)


def over_the_pixel_cap() -> bytes:
    """48 megapixels: Pillow would decode it (6 MB), but it is over tlbench's cap."""
    return bilevel_png(8_000, 6_000)


def with_host(host: str, build: Callable[[Scene], dict]) -> Callable[[Scene], dict]:
    """The same request with this Host header."""
    return lambda scene: {**build(scene), "headers": {"Host": host}}


def predict_path(scene: Scene) -> str:
    """The predict route of a benchmark that has a succeeded job."""
    return f"/api/v1/benchmarks/{scene.succeeded_benchmark_id}/predict"


def no_file(scene: Scene) -> dict:
    """A multipart predict request without its file."""
    return {"method": "POST", "path": predict_path(scene), "data": {"name": "x"}, "content_type": "multipart/form-data"}


@dataclass(frozen=True)
class Case:
    """One malformed request, the status it gets, a telling part of its message and the field named."""

    name: str
    request: Callable[[Scene], dict]
    status: int
    says: str
    field: str | None = None


CASES = [
    # Benchmarks: wrong types
    Case("dataset is a string", benchmark(dataset="1"), 400, "valid integer", "dataset"),
    Case("dataset is a boolean", benchmark(dataset=True), 400, "valid integer", "dataset"),
    Case("backbones is a string", benchmark(backbones="VGG16"), 400, "valid list", "backbones"),
    Case("backbone is a number", benchmark(backbones=[16]), 400, "valid string", "backbones"),
    Case("epochs is a string", benchmark(epochs="5"), 400, "valid integer", "epochs"),
    Case("epochs is a fraction", benchmark(epochs=2.5), 400, "valid integer", "epochs"),
    Case("augment is a string", benchmark(augment="yes"), 400, "valid boolean", "augment"),
    Case("mixed_precision is a string", benchmark(mixed_precision="yes"), 400, "valid boolean", "mixed_precision"),
    # Benchmarks: missing and unknown fields
    Case("dataset missing", benchmark(dataset=MISSING), 400, "is required", "dataset"),
    Case("backbones missing", benchmark(backbones=MISSING), 400, "is required", "backbones"),
    Case("unknown field", benchmark(colour="blue"), 400, "not a known field", "colour"),
    # Benchmarks: backbones
    Case("unknown backbone", benchmark(backbones=["NoSuchNet"]), 400, "unknown backbone 'NoSuchNet'", "backbones"),
    Case("duplicate backbones", benchmark(backbones=["VGG16", "VGG16"]), 400, "more than once: VGG16", "backbones"),
    Case("empty backbone list", benchmark(backbones=[]), 400, "at least 1", "backbones"),
    # Benchmarks: ranges
    Case("image_size below the minimum", benchmark(backbones=["InceptionV3"], image_size=32), 400,
         "below InceptionV3's minimum of 75", "image_size"),
    Case("per-backbone size below the minimum", benchmark(backbones=["Xception"], image_size={"Xception": 70}), 400,
         "below Xception's minimum of 71", "image_size"),
    Case("size for a backbone not listed", benchmark(image_size={"ResNet50": 64}), 400, "not in backbones",
         "image_size"),
    Case("epochs 0", benchmark(epochs=0), 400, "greater than or equal to 1", "epochs"),
    Case("epochs 10^9", benchmark(epochs=10**9), 400, "less than or equal to 10000", "epochs"),
    Case("batch_size 0", benchmark(batch_size=0), 400, "greater than or equal to 1", "batch_size"),
    Case("negative learning rate", benchmark(learning_rate=-0.001), 400, "greater than 0", "learning_rate"),
    Case("learning rate 0", benchmark(learning_rate=0), 400, "greater than 0", "learning_rate"),
    Case("six learning rates", benchmark(learning_rate=[1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6]), 400,
         "lists 6 learning rates; give 1 to 5", "learning_rate"),
    Case("empty learning-rate list", benchmark(learning_rate=[]), 400, "lists 0 learning rates", "learning_rate"),
    Case("a learning rate listed twice", benchmark(learning_rate=[1e-3, 1e-3]), 400,
         "lists a learning rate more than once", "learning_rate"),
    Case("a learning rate of 0 in a list", benchmark(learning_rate=[1e-3, 0]), 400, "greater than 0", "learning_rate"),
    Case("repeats 0", benchmark(repeats=0), 400, "greater than or equal to 1", "repeats"),
    Case("repeats 11", benchmark(repeats=11), 400, "less than or equal to 10", "repeats"),
    Case("test_split 0", benchmark(test_split=0), 400, "greater than 0", "test_split"),
    Case("validation and test leave no training images", benchmark(validation_split=0.5, test_split=0.5), 400,
         "validation_split and test_split together must be below 1", "test_split"),
    Case("negative patience", benchmark(patience=-1), 400, "greater than or equal to 0", "patience"),
    Case("negative seed", benchmark(seed=-1), 400, "greater than or equal to 0", "seed"),
    Case("validation_split 1", benchmark(validation_split=1.0), 400, "less than 1", "validation_split"),
    Case("validation_split 0", benchmark(validation_split=0), 400, "greater than 0", "validation_split"),
    Case("negative fine_tune_layers", benchmark(fine_tune_layers=-2), 400, "greater than or equal to 0",
         "fine_tune_layers"),
    # Weights: one message whether or not the file exists, so the API tells nothing about the server's files.
    Case("weights outside the data roots, missing", benchmark(weights="/no/such/weights.h5"), 400,
         WEIGHTS_REFUSED, "weights"),
    Case("weights outside the data roots, existing", benchmark(weights="/etc/passwd"), 400, WEIGHTS_REFUSED,
         "weights"),
    Case("weights climbing out, existing", benchmark(weights="../../../../../../../../etc/passwd"), 400,
         WEIGHTS_REFUSED, "weights"),
    Case("weights climbing out, missing", benchmark(weights="../../../../../../../../no/such.h5"), 400,
         WEIGHTS_REFUSED, "weights"),
    Case("weights climbing out of a data root",
         lambda scene: benchmark(weights=str(scene.data_root / ".." / "home" / "tlbench.db"))(scene), 400,
         WEIGHTS_REFUSED, "weights"),
    Case("weights that is a folder under a data root",
         lambda scene: benchmark(weights=scene.data_folder("folder.h5"))(scene), 400, WEIGHTS_REFUSED, "weights"),
    Case("weights upload id that was never uploaded", benchmark(weights="upload:" + "0" * 32 + ".h5"), 400,
         WEIGHTS_REFUSED, "weights"),
    Case("weights upload id that climbs out", benchmark(weights="upload:../tlbench.db"), 400, WEIGHTS_REFUSED,
         "weights"),
    Case("empty name", benchmark(name=""), 400, "at least 1 character", "name"),
    Case("unknown dataset id", benchmark(dataset=999), 400, "dataset 999 not found", "dataset"),
    # Benchmarks: pools (each a Celery queue)
    Case("pool with capitals", benchmark(pool="A100"), 400, "'A100' is not a pool name", "pool"),
    Case("pool with a slash", benchmark(pool="gpu/a100"), 400, "is not a pool name", "pool"),
    Case("pool with a space", benchmark(pool="big gpus"), 400, "is not a pool name", "pool"),
    Case("pool starting with a dash", benchmark(pool="-a100"), 400, "starting with a letter or a digit", "pool"),
    Case("empty pool", benchmark(pool=""), 400, "'' is not a pool name", "pool"),
    Case("pool of 41 characters", benchmark(pool="p" * 41), 400, "1 to 40", "pool"),
    Case("pool is the prediction queue", benchmark(pool="predict"), 400, "prediction workers' queue", "pool"),
    Case("pool is a number", benchmark(pool=100), 400, "valid string", "pool"),
    Case("pool is a list", benchmark(pool=["a100"]), 400, "valid string", "pool"),
    # Bodies that are not a JSON object
    Case("body is not JSON", raw_body("{not json", "application/json"), 400, "not valid JSON"),
    Case("body is a JSON list", raw_body("[1, 2]", "application/json"), 400, "must be a JSON object, not a JSON list"),
    Case("text/plain content type", raw_body("{}", "text/plain"), 415, "expected Content-Type application/json"),
    Case("form content type", raw_body("dataset=1", "application/x-www-form-urlencoded"), 415,
         "got 'application/x-www-form-urlencoded'"),
    Case("oversized JSON body", raw_body(b'{"name": "' + b"x" * (2 * 2**20) + b'"}', "application/json"), 413,
         f"over the limit of {UPLOAD_LIMIT_MB} MB"),
    # Dataset uploads
    Case("oversized upload", upload(lambda: b"x" * (2 * 2**20)), 413, "TLBENCH_MAX_UPLOAD_MB"),
    Case("upload that is not a zip", upload(lambda: b"this is not a zip"), 400, "not a zip file", "file"),
    Case("upload without a file", lambda scene: {"method": "POST", "path": "/api/v1/datasets", "data": {"name": "x"},
                                                 "content_type": "multipart/form-data"}, 400, "is required", "file"),
    # Refused by the declared sizes, before a byte is extracted (the limit is 8 x the upload limit).
    Case("zip bomb: declared size", upload(lambda: two_class_zip(**{"cats/big.png": bytes(10 * 2**20)})), 400,
         "more than the limit", "file"),
    Case("zip bomb: compression ratio", upload(lambda: two_class_zip(**{"cats/big.png": bytes(3 * 2**20)})), 400,
         "compression ratio", "file"),
    Case("zip entry climbs out", upload(lambda: two_class_zip(**{"../x.png": small_png()})), 400,
         "'../x.png': path climbs out", "file"),
    Case("zip entry with an absolute path", upload(lambda: two_class_zip(**{"/tmp/x.png": small_png()})), 400,
         "absolute path", "file"),
    Case("zip entry that is a link", upload(zip_with_link), 400, "symbolic link", "file"),
    Case("zip with one class",
         upload(lambda: zip_of({"cats/a.png": small_png(), "cats/b.png": small_png("blue")})), 400,
         "has one class (cats)", "file"),
    Case("zip with no images", upload(lambda: zip_of({"cats/a.txt": b"text", "dogs/b.txt": b"text"})), 400,
         "no decodable images", "file"),
    # Datasets registered by path
    Case("path outside the data roots", register_path(lambda scene: str(scene.outside_folder)), 400,
         "not under an allowed data root", "path"),
    Case("path that does not exist", register_path(lambda scene: str(scene.data_root / "nothing")), 400,
         "does not exist", "path"),
    Case("path that is a file", register_path(lambda scene: scene.data_folder("f", {"a.png": small_png()}) + "/a.png"),
         400, "is not a folder", "path"),
    Case("path is a number", register_path(lambda scene: 5), 400, "valid string", "path"),
    Case("path is a link out of the data roots",
         register_path(lambda scene: scene.data_folder("top", links={"pets": scene.outside_folder}) + "/pets"),
         400, "not under an allowed data root", "path"),
    # Links are never followed: class folders that lead out of the data roots are skipped, leaving nothing.
    Case("class folders are links out of the data roots",
         register_path(lambda scene: scene.data_folder("linked", links={
             name: scene.outside_folder / name for name in class_names(2)})),
         400, "no decodable images", "path"),
    Case("folder with one class",
         register_path(lambda scene: scene.data_folder("solo", {"cats/a.png": small_png()})), 400,
         "has one class (cats)", "path"),
    Case("folder with no images",
         register_path(lambda scene: scene.data_folder("bare", {"cats/a.txt": b"x", "dogs/b.txt": b"x"})), 400,
         "no decodable images", "path"),
    # Artifacts
    Case("artifact name with ../", call("GET", lambda scene: f"/api/v1/jobs/{scene.job_id}/artifacts/..%2Fsecret.txt"),
         404, "'../secret.txt' is not an artifact", "name"),
    # Werkzeug merges the doubled slash and redirects to artifacts/etc/passwd, inside the job's folder.
    Case("absolute artifact name", call("GET", lambda scene: f"/api/v1/jobs/{scene.job_id}/artifacts//etc/passwd",
                                        follow_redirects=True), 404, "'etc/passwd' is not an artifact", "name"),
    Case("artifact that links out of the job folder",
         call("GET", lambda scene: f"/api/v1/jobs/{scene.job_id}/artifacts/leak.txt"), 404, "is not an artifact",
         "name"),
    # Unknown ids and routes
    Case("unknown job", call("GET", "/api/v1/jobs/999"), 404, "job 999 not found"),
    Case("unknown job's epochs", call("GET", "/api/v1/jobs/999/epochs"), 404, "job 999 not found"),
    Case("unknown job's trials", call("GET", "/api/v1/jobs/999/trials"), 404, "job 999 not found"),
    Case("epochs of a trial that is not a number",
         call("GET", lambda scene: f"/api/v1/jobs/{scene.job_id}/epochs?trial=one"), 400, "must be a whole number",
         "trial"),
    Case("unknown job's predictions", call("GET", "/api/v1/jobs/999/predictions"), 404, "job 999 not found"),
    Case("predictions of a job that has not finished",
         call("GET", lambda scene: f"/api/v1/jobs/{scene.job_id}/predictions"), 404, "has no test predictions"),
    Case("predictions of a trial that is not a number",
         call("GET", lambda scene: f"/api/v1/jobs/{scene.job_id}/predictions?trial=x"), 400, "must be a whole number",
         "trial"),
    Case("unknown job's artifacts", call("GET", "/api/v1/jobs/999/artifacts"), 404, "job 999 not found"),
    Case("unknown job's artifact", call("GET", "/api/v1/jobs/999/artifacts/model.keras"), 404, "job 999 not found"),
    Case("cancel an unknown job", call("POST", "/api/v1/jobs/999/cancel"), 404, "job 999 not found"),
    Case("retry an unknown job", call("POST", "/api/v1/jobs/999/retry"), 404, "job 999 not found"),
    Case("unknown benchmark", call("GET", "/api/v1/benchmarks/999"), 404, "benchmark 999 not found"),
    Case("unknown benchmark's epochs", call("GET", "/api/v1/benchmarks/999/epochs"), 404, "benchmark 999 not found"),
    Case("unknown benchmark's report", call("GET", "/api/v1/benchmarks/999/report"), 404, "benchmark 999 not found"),
    Case("unknown benchmark's CSV report", call("GET", "/api/v1/benchmarks/999/report.csv"), 404,
         "benchmark 999 not found"),
    Case("unknown benchmark's markdown report", call("GET", "/api/v1/benchmarks/999/report.md"), 404,
         "benchmark 999 not found"),
    Case("unknown dataset", call("GET", "/api/v1/datasets/999"), 404, "dataset 999 not found"),
    # Dataset images (thumbnails)
    Case("unknown dataset's image", call("GET", "/api/v1/datasets/999/images/0"), 404, "dataset 999 not found"),
    Case("image index past the dataset's end", call("GET", lambda scene: f"/api/v1/datasets/{scene.dataset_id}/images/6"),
         404, "has 6 images, numbered 0 to 5", "index"),
    Case("negative image index", call("GET", lambda scene: f"/api/v1/datasets/{scene.dataset_id}/images/-1"), 404,
         "URL was not found"),
    Case("image path instead of an index",
         call("GET", lambda scene: f"/api/v1/datasets/{scene.dataset_id}/images/..%2F..%2Fsecret.txt"), 404,
         "URL was not found"),
    Case("image that became a link out of its dataset",
         call("GET", lambda scene: f"/api/v1/datasets/{scene.image_linked_out_dataset_id}/images/0"), 404,
         "image 0 can no longer be read", "index"),
    Case("thumbnail size too small", call("GET", lambda scene: f"/api/v1/datasets/{scene.dataset_id}/images/0?size=4"),
         400, "must be a whole number from 16 to 512", "size"),
    Case("thumbnail size not a number",
         call("GET", lambda scene: f"/api/v1/datasets/{scene.dataset_id}/images/0?size=big"), 400,
         "must be a whole number from 16 to 512, not 'big'", "size"),
    Case("unknown route", call("GET", "/api/v1/nothing-here"), 404, "URL was not found"),
    Case("wrong method", call("GET", "/api/v1/jobs/1/cancel"), 405, "method is not allowed"),
    # Predictions
    Case("predict upload that is not an image", upload(lambda: b"not an image", "x.png", predict_path), 400,
         "'x.png' is not a decodable image", "file"),
    Case("predict without a file", no_file, 400, "is required", "file"),
    Case("predict with an unknown benchmark", upload(small_png, "x.png", "/api/v1/benchmarks/999/predict"), 404,
         "benchmark 999 not found"),
    Case("decompression bomb", upload(decompression_bomb, "bomb.png", predict_path), 400,
         "'bomb.png' has more than 40 megapixels", "file"),
    Case("image over the pixel cap", upload(over_the_pixel_cap, "big.png", predict_path), 400,
         "'big.png' has more than 40 megapixels", "file"),
    # Weights uploads
    Case("weights upload that is not an .h5 file", upload(lambda: b"weights", "base.bin", "/api/v1/weights"), 400,
         "'base.bin' is not a weights file", "file"),
    Case("weights upload without a file", lambda scene: {"method": "POST", "path": "/api/v1/weights",
                                                         "data": {"name": "x"}, "content_type": "multipart/form-data"},
         400, "is required", "file"),
    # The Host header: a page rebound to 127.0.0.1 (DNS rebinding) sends its own name
    Case("foreign Host header on a read", with_host("evil.example:8000", call("GET", "/api/v1/datasets")), 400,
         "'evil.example:8000' is not a name this server answers to", "Host"),
    Case("foreign Host header on a write", with_host("evil.example", benchmark()), 400,
         "'evil.example' is not a name this server answers to", "Host"),
    Case("foreign Host header on a page", with_host("evil.example", call("GET", "/")), 400,
         "is not a name this server answers to", "Host"),
]


@pytest.fixture
def scene(client, app, settings, tmp_path) -> Scene:
    """The case's surroundings."""
    return Scene(client, app, settings, tmp_path)


def written_state(scene: Scene, redis_client) -> dict:
    """Everything a request could have written: row counts, files under the home, queue messages."""
    with scene.app.extensions["tlbench.database"].transaction() as session:
        rows = {model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in COUNTED_TABLES}
    home = scene.settings.home
    folders = (scene.settings.upload_root, scene.settings.artifact_root, home / "predictions", home / "weights")
    files = sorted(str(path) for folder in folders if folder.exists() for path in folder.rglob("*"))
    queues = {queue: redis_client.llen(queue) for queue in (TRAIN_QUEUE, PREDICT_QUEUE)}
    return {"rows": rows, "files": files, "queues": queues, "redis keys": redis_client.dbsize()}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_malformed_request_is_refused_naming_the_problem_and_writes_nothing(scene, redis_client, case):
    request = case.request(scene)  # builds what the case needs first, so the snapshot includes it
    before = written_state(scene, redis_client)
    response = scene.client.open(request.pop("path"), **request)
    assert response.status_code == case.status, response.get_data(as_text=True)[:500]
    assert response.is_json, response.get_data(as_text=True)[:500]
    error = response.json["error"]
    assert case.says in error, error
    if case.field is not None:
        assert response.json["field"] == case.field and error.startswith(f"{case.field}: "), response.json
    assert written_state(scene, redis_client) == before


def test_the_table_covers_every_kind_of_refusal(scene):
    assert len({case.name for case in CASES}) == len(CASES)
    requests = [case.request(scene) for case in CASES]
    endpoints = {endpoint_of(scene.app, request) for request in requests}
    assert endpoints_taking_input(scene.app) - endpoints == set(), "API routes that no case sends bad input to"
    changed = {field for request in requests if endpoint_of(scene.app, request) == "api.create_benchmark"
               for field in changed_benchmark_fields(request.get("json"))}
    assert benchmark_fields() - changed == set(), "benchmark fields that no case gets wrong"


def endpoints_taking_input(app) -> set[str]:
    """Every API endpoint that reads a body or an id from the request: each can be sent something bad."""
    return {rule.endpoint for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1/")
            and (rule.arguments or "POST" in rule.methods) and rule.endpoint != "api.create_sample_benchmark"}


def endpoint_of(app, request: dict) -> str | None:
    """The endpoint a case's request reaches (after a redirect), or None for a route or method that has none."""
    from urllib.parse import urlsplit

    from werkzeug.exceptions import HTTPException
    from werkzeug.routing import RequestRedirect

    adapter = app.url_map.bind("localhost")
    try:
        return adapter.match(request["path"], method=request["method"])[0]
    except RequestRedirect as redirect:
        return adapter.match(urlsplit(redirect.new_url).path, method=request["method"])[0]
    except HTTPException:
        return None


def changed_benchmark_fields(body) -> set[str]:
    """The fields of a benchmark body that differ from a good one (left out, added or changed)."""
    if not isinstance(body, dict):
        return set()
    good = {"dataset": body.get("dataset"), **GOOD_BENCHMARK}
    return {field for field in good.keys() | body.keys() if body.get(field, MISSING) != good.get(field, MISSING)}


def benchmark_fields() -> set[str]:
    """Every field POST /benchmarks accepts."""
    from dashboard.schemas import BenchmarkRequest

    return set(BenchmarkRequest.model_fields)


def test_a_linked_image_inside_a_registered_folder_is_skipped_not_followed(scene):
    outside = scene.outside_folder / class_names(2)[0]
    folder = scene.data_folder("mixed", {"cats/a.png": small_png("red"), "dogs/b.png": small_png("blue")},
                               links={"cats/stolen.png": next(outside.iterdir())})
    response = scene.client.post("/api/v1/datasets", json={"path": folder})
    assert response.status_code == 201, response.json
    assert response.json["counts"] == {"cats": 1, "dogs": 1}
    assert {"file": "cats/stolen.png", "reason": "symbolic link"} in response.json["skipped"]
