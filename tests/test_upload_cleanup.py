"""An uploaded dataset that is not registered, for whatever reason, leaves nothing on disk."""
from __future__ import annotations

import io
import sqlite3

import pytest

from testsupport.images import make_image_folder
from tlbench.client import zip_folder


def upload(client, payload: bytes):
    """POST a zip to /api/v1/datasets."""
    return client.post("/api/v1/datasets", data={"file": (io.BytesIO(payload), "faces.zip")},
                       content_type="multipart/form-data")


def refuse_dataset_inserts(database_url: str) -> None:
    """Make the database itself refuse every new dataset row, as a full disk or a broken server would."""
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
        connection.execute("CREATE TRIGGER refuse_datasets BEFORE INSERT ON datasets "
                           "BEGIN SELECT RAISE(ABORT, 'the database refuses new datasets'); END")


def test_an_upload_whose_database_insert_fails_leaves_nothing_on_disk(app, client, settings, tmp_path):
    refuse_dataset_inserts(settings.database_url)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # answer 500 as the served app does, instead of raising here
    response = upload(client, zip_folder(make_image_folder(tmp_path / "src", classes=2, per_class=2, size=8)))
    assert response.status_code == 500
    assert list(settings.upload_root.iterdir()) == []
    assert client.get("/api/v1/datasets").json["datasets"] == []


@pytest.mark.parametrize("classes, payload", [(None, b"not a zip"), (1, None)], ids=["not a zip", "one class"])
def test_a_refused_upload_leaves_nothing_on_disk(client, settings, tmp_path, classes, payload):
    payload = payload or zip_folder(make_image_folder(tmp_path / "src", classes=classes, per_class=2, size=8))
    response = upload(client, payload)
    assert response.status_code == 400
    assert response.json["field"] == "file"
    assert list(settings.upload_root.iterdir()) == []


def test_a_registered_upload_stays(client, settings, tmp_path):
    response = upload(client, zip_folder(make_image_folder(tmp_path / "src", classes=2, per_class=2, size=8)))
    assert response.status_code == 201, response.json
    assert len(list(settings.upload_root.iterdir())) == 1
