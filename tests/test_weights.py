"""A benchmark's weights file: under the data roots or uploaded through the API, and nothing else."""
from __future__ import annotations

import io

import pytest

from db.models import Benchmark
from testsupport.api_errors import WEIGHTS_REFUSED
from testsupport.images import two_class_zip

HDF5_START = b"\x89HDF\r\n\x1a\n"


@pytest.fixture
def dataset_id(client) -> int:
    """A registered two-class dataset."""
    response = client.post("/api/v1/datasets", data={"file": (io.BytesIO(two_class_zip()), "ok.zip")},
                           content_type="multipart/form-data")
    return response.json["id"]


def submit(client, dataset_id: int, weights: str):
    """POST /benchmarks with these weights."""
    return client.post("/api/v1/benchmarks", json={"dataset": dataset_id, "backbones": ["VGG16"], "epochs": 1,
                                                   "image_size": 32, "weights": weights})


def job_weights(app, benchmark_id: int) -> str:
    """The weights the benchmark's job will load."""
    with app.extensions["tlbench.database"].transaction() as session:
        return session.get(Benchmark, benchmark_id).jobs[0].spec["weights"]


def benchmark_count(app) -> int:
    """How many benchmarks exist."""
    with app.extensions["tlbench.database"].transaction() as session:
        return session.query(Benchmark).count()


def test_a_weights_file_under_a_data_root_is_accepted_by_its_real_path(client, app, settings, dataset_id):
    weights = settings.data_roots[0] / "nets" / "vgg.weights.h5"
    weights.parent.mkdir()
    weights.write_bytes(HDF5_START)
    linked = settings.data_roots[0] / "latest.weights.h5"
    linked.symlink_to(weights)
    for requested in (str(weights), str(linked), str(settings.data_roots[0] / "nets" / ".." / "nets" / weights.name)):
        created = submit(client, dataset_id, requested)
        assert created.status_code == 201, created.json
        assert job_weights(app, created.json["id"]) == str(weights)


def test_a_link_under_a_data_root_to_a_file_outside_is_refused(client, app, settings, dataset_id):
    link = settings.data_roots[0] / "passwd.h5"
    link.symlink_to("/etc/passwd")
    refused = submit(client, dataset_id, str(link))
    assert refused.status_code == 400 and refused.json == {"error": WEIGHTS_REFUSED, "field": "weights"}
    assert benchmark_count(app) == 0


def test_existing_and_missing_files_outside_the_roots_get_the_same_answer(client, app, dataset_id):
    answers = {requested: submit(client, dataset_id, requested) for requested in (
        "/etc/passwd", "/etc/no-such-file", "../../../../../../etc/passwd", "../../../../../../etc/no-such-file",
        "/etc", "~/.bashrc", "upload:../../../../etc/passwd")}
    assert {(r.status_code, r.json["error"], r.json["field"]) for r in answers.values()} == \
        {(400, WEIGHTS_REFUSED, "weights")}
    assert benchmark_count(app) == 0


def test_an_uploaded_weights_file_can_be_named_by_a_benchmark(client, app, settings, dataset_id):
    uploaded = client.post("/api/v1/weights", data={"file": (io.BytesIO(HDF5_START + b"rest"), "Base.weights.h5")},
                           content_type="multipart/form-data")
    assert uploaded.status_code == 201, uploaded.json
    weights_id = uploaded.json["weights"]
    assert weights_id.startswith("upload:") and weights_id.endswith(".weights.h5")
    assert uploaded.json["bytes"] == len(HDF5_START) + 4
    assert str(settings.home) not in str(uploaded.json)
    created = submit(client, dataset_id, weights_id)
    assert created.status_code == 201, created.json
    stored = job_weights(app, created.json["id"])
    assert stored.startswith(str(settings.home / "weights")) and open(stored, "rb").read().startswith(HDF5_START)


def test_a_legacy_h5_upload_keeps_its_suffix_so_keras_reads_it_the_legacy_way(client):
    uploaded = client.post("/api/v1/weights", data={"file": (io.BytesIO(HDF5_START), "resnet_notop.H5")},
                           content_type="multipart/form-data")
    assert uploaded.status_code == 201 and uploaded.json["weights"].endswith(".h5")
    assert not uploaded.json["weights"].endswith(".weights.h5")


def test_a_weights_upload_that_is_not_hdf5_is_refused_and_not_kept(client, settings):
    refused = client.post("/api/v1/weights", data={"file": (io.BytesIO(b"not hdf5"), "base.weights.h5")},
                          content_type="multipart/form-data")
    assert refused.status_code == 400 and refused.json["field"] == "file"
    assert "'base.weights.h5' is not a weights file" in refused.json["error"]
    folder = settings.home / "weights"
    assert not folder.exists() or list(folder.iterdir()) == []
