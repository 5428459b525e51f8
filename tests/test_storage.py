"""Datasets and artifacts are kept behind one interface (jobs/storage.py): a local folder, or an object store
(here a real S3-compatible server, started by the tests from a pip package)."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from jobs.storage import FolderMirror, Storage, StorageUnusable, scrubbed, shown_url
from testsupport.s3 import create_bucket, s3_server

BUCKET = "tlbench-test"


@pytest.fixture(scope="module")
def s3_environment():
    """The server's address and credentials, with one bucket made."""
    with s3_server() as server:
        create_bucket(server.environment, BUCKET)
        yield server.environment


@pytest.fixture
def s3_client_environment(s3_environment, monkeypatch):
    """This process's environment pointing the store's client at the test server."""
    for name, value in s3_environment.items():
        monkeypatch.setenv(name, value)
    return s3_environment


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    """A storage of each kind, under a root of its own."""
    if request.param == "local":
        return Storage(str(tmp_path / "storage"))
    request.getfixturevalue("s3_client_environment")
    return Storage(f"s3://{BUCKET}/run-{uuid.uuid4().hex[:8]}")


def test_a_file_stored_under_a_key_reads_back_lists_and_downloads_whole(storage, tmp_path):
    source = tmp_path / "model.keras"
    source.write_bytes(b"weights" * 1000)
    storage.put_file(source, "artifacts/job-3/model.keras")

    assert storage.exists("artifacts/job-3/model.keras") and not storage.exists("artifacts/job-3/other")
    with storage.open("artifacts/job-3/model.keras") as stream:
        assert stream.read() == source.read_bytes()
    assert storage.files("artifacts/job-3") == {"model.keras": 7000}
    storage.get_file("artifacts/job-3/model.keras", tmp_path / "copy" / "model.keras")
    assert (tmp_path / "copy" / "model.keras").read_bytes() == source.read_bytes()
    assert [path.name for path in (tmp_path / "copy").iterdir()] == ["model.keras"]  # no partial file left


def test_a_mirrored_folder_stores_what_changed_state_files_last_and_drops_what_went(storage, tmp_path):
    folder = tmp_path / "job"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "checkpoint" / "epoch-1.weights.h5").write_bytes(b"1" * 10)
    (folder / "checkpoint" / "state.json").write_text('{"latest": "epoch-1.weights.h5"}')
    stored_in_order = []
    original_put = storage.put_file
    storage.put_file = lambda source, key: (stored_in_order.append(key), original_put(source, key))
    mirror = FolderMirror(storage, folder, "artifacts/job-4", state_names=("state.json",))

    mirror.sync()
    (folder / "checkpoint" / "epoch-1.weights.h5").unlink()
    (folder / "checkpoint" / "epoch-2.weights.h5").write_bytes(b"2" * 20)
    (folder / "checkpoint" / "state.json").write_text('{"latest": "epoch-2.weights.h5"}')
    mirror.sync()

    assert stored_in_order == ["artifacts/job-4/checkpoint/epoch-1.weights.h5", "artifacts/job-4/checkpoint/state.json",
                               "artifacts/job-4/checkpoint/epoch-2.weights.h5", "artifacts/job-4/checkpoint/state.json"]
    assert storage.files("artifacts/job-4") == {"checkpoint/epoch-2.weights.h5": 20, "checkpoint/state.json": 32}


def test_a_pruning_sync_leaves_exactly_the_folder_whoever_stored_the_rest(storage, tmp_path):
    storage.put_bytes(b"left by a worker that died", "artifacts/job-6/checkpoint/epoch-9.weights.h5")
    folder = tmp_path / "job"
    (folder / "tensorboard").mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"m" * 5)
    (folder / "tensorboard" / "events").write_bytes(b"e" * 3)

    FolderMirror(storage, folder, "artifacts/job-6", state_names=()).sync(prune=True)

    assert storage.files("artifacts/job-6") == {"model.keras": 5, "tensorboard/events": 3}
    storage.get_tree("artifacts/job-6", tmp_path / "copy")
    assert (tmp_path / "copy" / "tensorboard" / "events").read_bytes() == b"e" * 3
    storage.delete("artifacts/job-6")
    assert storage.files("artifacts/job-6") == {}


def test_a_missing_object_is_not_found(storage):
    with pytest.raises(FileNotFoundError):
        with storage.open("artifacts/job-5/model.keras"):
            pass


def test_a_usable_storage_passes_its_check_and_leaves_nothing_behind(storage):
    storage.check()
    assert storage.files("") == {}


def test_a_missing_bucket_fails_the_check_naming_the_storage(s3_client_environment):
    storage = Storage("s3://no-such-bucket/tlbench")
    with pytest.raises(StorageUnusable, match=r"^cannot read and write the storage s3://no-such-bucket/tlbench: "):
        storage.check()


def test_credentials_in_the_url_are_refused_without_being_repeated():
    with pytest.raises(StorageUnusable) as refused:
        Storage(f"s3://some-key:secret-5f4dcc3b@{BUCKET}/tlbench")
    assert str(refused.value) == (f"cannot use the storage s3://{BUCKET}/tlbench: give its credentials in the "
                                  "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), not in the URL")


def test_a_secret_of_the_environment_never_appears_in_a_storage_message():
    environ = {"AWS_SECRET_ACCESS_KEY": "secret-5f4dcc3b", "AWS_ACCESS_KEY_ID": "AKIA123"}
    assert scrubbed("signature for AKIA123 with secret-5f4dcc3b refused", environ) == "signature for *** with *** refused"


def test_a_url_shown_in_messages_never_carries_its_credentials():
    assert shown_url("s3://key:secret@bucket/prefix") == "s3://bucket/prefix"
    assert shown_url("s3://bucket/prefix") == "s3://bucket/prefix"
    assert shown_url("/var/lib/tlbench") == "/var/lib/tlbench"


def test_an_unknown_kind_of_storage_is_refused_naming_it():
    with pytest.raises(StorageUnusable, match=r"cannot use the storage nosuchfs://x/y: "):
        Storage("nosuchfs://x/y")


def test_a_worker_that_cannot_write_its_storage_stops_at_start_saying_why(tmp_path, s3_environment):
    environment = {**os.environ, **s3_environment, "TLBENCH_HOME": str(tmp_path / "home"),
                   "TLBENCH_STORAGE": "s3://no-such-bucket/tlbench", "REDIS_URL": "redis://127.0.0.1:9/0"}
    result = subprocess.run([sys.executable, "-m", "tlbench", "worker"], env=environment, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("tlbench: cannot read and write the storage s3://no-such-bucket/tlbench: "), \
        result.stderr
    assert "started" not in result.stdout and s3_environment["AWS_SECRET_ACCESS_KEY"] not in result.stderr


@pytest.fixture
def object_store_client(settings, s3_client_environment):
    """The web app with an object store for its storage, whose secret is in the environment."""
    import dataclasses

    from dashboard import create_app

    app = create_app({"TESTING": True, "TLBENCH_SETTINGS": dataclasses.replace(
        settings, storage_url=f"s3://{BUCKET}/web-{uuid.uuid4().hex[:8]}")})
    yield app.test_client()
    app.extensions["tlbench.database"].dispose()


def test_a_storage_named_in_a_request_body_is_refused(object_store_client):
    benchmark = object_store_client.post("/api/v1/benchmarks", json={
        "dataset": 1, "backbones": ["VGG16"], "storage": f"s3://{BUCKET}/elsewhere"})
    assert benchmark.status_code == 400 and benchmark.json["field"] == "storage"
    dataset = object_store_client.post("/api/v1/datasets", json={"path": f"s3://{BUCKET}/faces"})
    assert dataset.status_code == 400 and dataset.json["field"] == "path"


def test_no_answer_of_the_api_carries_the_storage_credentials(object_store_client, s3_client_environment):
    secret, key_id = s3_client_environment["AWS_SECRET_ACCESS_KEY"], s3_client_environment["AWS_ACCESS_KEY_ID"]
    for route in ("/api/v1/health", "/api/v1/workers", "/api/v1/datasets", "/api/v1/benchmarks",
                  "/api/v1/backbones", "/api/v1/openapi.json", "/api/v1/jobs/1/artifacts"):
        body = object_store_client.get(route).get_data(as_text=True)
        assert secret not in body and key_id not in body, route


def test_a_dataset_is_stored_once_and_a_host_trains_from_a_copy_that_hashes_as_registered(storage, tmp_path):
    from jobs.datasets import DatasetCorrupt, fetch_dataset, scan_dataset, store_dataset, stored_dataset_key
    from testsupport.images import make_image_folder

    scanned = scan_dataset(make_image_folder(tmp_path / "faces", classes=2, per_class=3))
    store_dataset(storage, scanned)
    store_dataset(storage, scanned)  # already there: nothing stored again
    assert list(storage.files("datasets")) == [f"{scanned.sha256}.zip"]

    copy = fetch_dataset(storage, scanned, tmp_path / "cache")
    assert scan_dataset(copy).sha256 == scanned.sha256 and copy == tmp_path / "cache" / "datasets" / scanned.sha256
    assert fetch_dataset(storage, scanned, tmp_path / "cache") == copy  # once per host

    other = scan_dataset(make_image_folder(tmp_path / "other", classes=3, per_class=2))
    store_dataset(storage, other)
    with storage.open(stored_dataset_key(other.sha256)) as stream:  # the store's archive replaced by another's
        (tmp_path / "other.zip").write_bytes(stream.read())
    storage.put_file(tmp_path / "other.zip", stored_dataset_key(scanned.sha256))
    with pytest.raises(DatasetCorrupt, match=f"hashes to {other.sha256}, not {scanned.sha256}"):
        fetch_dataset(storage, scanned, tmp_path / "another-host-cache")
    assert not (tmp_path / "another-host-cache" / "datasets" / scanned.sha256).exists()
