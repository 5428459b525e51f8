"""The home page offers the sample benchmark only where the sample dataset exists, so the button never
answers 409: the web app's gunicorn settings write it (tests/test_packaging.py runs that under the Procfile)."""
from __future__ import annotations

from tlbench.stack import ensure_sample_dataset

BUTTON = "Run the sample benchmark"


def test_without_the_sample_dataset_the_home_page_offers_only_the_upload(client):
    page = client.get("/").get_data(as_text=True)
    assert BUTTON not in page and "Upload your own images" in page
    assert client.post("/api/v1/benchmarks/sample").status_code == 409  # what the button would have met


def test_with_the_sample_dataset_the_home_page_offers_the_button_that_works(client, app, settings):
    ensure_sample_dataset(settings, app.extensions["tlbench.database"])
    assert BUTTON in client.get("/").get_data(as_text=True)
    assert client.post("/api/v1/benchmarks/sample").status_code == 201
