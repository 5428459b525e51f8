"""The dashboard in headless Chromium against the real stack (`tlbench up`, one CPU worker), offline.

Every page gets only what the app itself serves (see conftest: remote requests are aborted and fail
the test). Jobs are tiny: 3 classes x 8 images at 32 px, random weights, a few epochs."""
from __future__ import annotations

import re

import numpy as np
import pytest
import requests
from playwright.sync_api import expect

from testsupport.browser import TRAINING_TIMEOUT_MS, chart_data
from testsupport.images import CLASS_COLOURS, coloured_image
from testsupport.stack import finished_benchmark, wait_until

BACKBONES = ["VGG16", "MobileNetV3Small"]


def submit_benchmark(url: str, dataset_id: int, epochs: int, backbones=BACKBONES, patience: int = 10) -> dict:
    """Submit a tiny benchmark (32 px, random weights) over the API."""
    response = requests.post(f"{url}/api/v1/benchmarks", json={
        "dataset": dataset_id, "backbones": backbones, "epochs": epochs, "patience": patience,
        "image_size": 32, "batch_size": 8, "weights": "none"})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def trained(stack, dataset) -> dict:
    """A finished two-backbone benchmark, submitted over the API."""
    created = submit_benchmark(stack["url"], dataset["id"], epochs=2)
    benchmark = wait_until(lambda: finished_benchmark(stack["url"], created["id"]), TRAINING_TIMEOUT_MS / 1000,
                           "the benchmark")
    assert [job["status"] for job in benchmark["jobs"]] == ["succeeded", "succeeded"], benchmark
    return benchmark


def test_a_benchmark_submitted_from_the_form_updates_live(stack, page, dataset_zip, tmp_path):
    page.goto(f"{stack['url']}/benchmarks/new")
    page.get_by_label("Zip file", exact=True).set_input_files(dataset_zip)
    page.get_by_role("button", name="Upload").click()
    summary = page.locator("#dataset-summary")
    expect(summary).to_contain_text("3 classes, 24 images")
    expect(summary).to_contain_text("blue: 8 images")
    expect(page.get_by_label("Use a dataset", exact=True)).to_have_value(re.compile(r"^\d+$"))

    for box in page.locator('input[name="backbones"]').all():
        box.set_checked(box.get_attribute("value") in BACKBONES)
    page.get_by_label("Image size (px)", exact=True).fill("32")
    page.get_by_label("Epochs", exact=True).fill("3")
    page.get_by_label("Batch size", exact=True).fill("8")
    page.get_by_label("None (random initialisation)", exact=True).check()
    page.get_by_role("button", name="Start benchmark").click()

    expect(page).to_have_url(re.compile(r"/benchmarks/\d+$"))
    rows = page.locator("#comparison tbody tr")
    expect(rows).to_have_count(2)
    # One worker: the second backbone waits behind the first, then its epochs arrive without a reload.
    second = rows.filter(has_text=BACKBONES[1]).locator(".epochs-done")
    expect(second).to_have_text("0/3 epochs")
    expect(second).to_have_text(re.compile(r"^[123]/3 epochs$"), timeout=TRAINING_TIMEOUT_MS)
    expect(page.locator("#comparison .status")).to_have_text(["succeeded", "succeeded"], timeout=TRAINING_TIMEOUT_MS)
    expect(page.locator("#live")).to_have_text("All jobs finished")
    expect(page.locator("#comparison tr.best")).to_have_count(1)

    for chart_id in ("chart-accuracy", "chart-loss"):
        traces = chart_data(page, chart_id)
        assert sorted(trace["name"] for trace in traces) == sorted(BACKBONES), chart_id
    tradeoff = sorted(trace["name"] for trace in chart_data(page, "chart-tradeoff"))
    assert tradeoff == sorted([*BACKBONES, "Pareto frontier"])
    assert all(len(trace["x"]) == 3 for trace in chart_data(page, "chart-accuracy"))
    assert chart_data(page, "chart-best")[0]["x"] == BACKBONES
    expect(page.locator("#tradeoff-note")).to_be_hidden()

    page.screenshot(path=tmp_path / "benchmark.png", full_page=True)


def test_the_table_sorts_by_mouse_and_keyboard_and_the_curves_switch_to_train(stack, page, trained):
    page.goto(f"{stack['url']}/benchmarks/{trained['id']}")
    expect(page.locator("#live")).to_have_text("All jobs finished")
    accuracy_header = page.locator('#comparison th[data-key="bestAccuracy"]')
    accuracy_header.get_by_role("button").click()
    expect(accuracy_header).to_have_attribute("aria-sort", "descending")
    accuracies = sorted((job["summary"]["best_val_accuracy"] for job in trained["jobs"]), reverse=True)
    column = page.locator("#comparison th").evaluate_all("headers => headers.map(header => header.dataset.key)")
    accuracy_cells = page.locator(f"#comparison tbody tr td:nth-child({column.index('bestAccuracy') + 1})")
    expect(accuracy_cells).to_have_text([f"{100 * a:.1f} %" for a in accuracies])

    backbone_header = page.locator('#comparison th[data-key="backbone"]')
    backbone_header.get_by_role("button").focus()
    page.keyboard.press("Enter")
    expect(backbone_header).to_have_attribute("aria-sort", "ascending")
    expect(accuracy_header).not_to_have_attribute("aria-sort", re.compile(".*"))
    expect(page.locator("#comparison tbody tr td:first-child a")).to_have_text(sorted(BACKBONES))
    page.keyboard.press("Enter")
    expect(backbone_header).to_have_attribute("aria-sort", "descending")

    page.get_by_text("Train", exact=True).click()
    expect(page.locator("#accuracy-title")).to_have_text("Train accuracy per epoch")
    first_job = trained["jobs"][0]
    epochs = requests.get(f"{stack['url']}/api/v1/jobs/{first_job['id']}/epochs").json()["epochs"]
    trace = next(t for t in chart_data(page, "chart-accuracy") if t["name"] == first_job["backbone"])
    assert trace["y"] == [row["accuracy"] for row in epochs]


def test_the_benchmarks_list_links_to_each_benchmark(stack, page, trained):
    page.goto(stack["url"])
    row = page.locator("#benchmarks tbody tr").filter(has=page.locator(f'a[href="/benchmarks/{trained["id"]}"]'))
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text(f"{100 * trained['leader']['test_accuracy_mean']:.1f} % test")
    expect(page.get_by_role("button", name="Run the sample benchmark")).to_be_hidden()
    row.get_by_role("link", name=trained["name"]).click()
    expect(page).to_have_url(f"{stack['url']}/benchmarks/{trained['id']}")


def test_a_finished_job_shows_its_curves_result_and_artifacts(stack, page, trained):
    job = trained["jobs"][0]
    page.goto(f"{stack['url']}/jobs/{job['id']}")
    expect(page.locator("#meta .status")).to_have_text("succeeded")
    expect(page.locator("#summary")).to_contain_text("Best val accuracy")
    expect(page.locator("#spec")).to_contain_text("image size")
    assert [trace["name"] for trace in chart_data(page, "chart-accuracy")] == ["Train", "Validation"]
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    expect(page.get_by_role("button", name="Retry")).to_be_hidden()

    link = page.get_by_role("link", name="model.keras", exact=True)
    expect(link).to_have_attribute("href", f"/api/v1/jobs/{job['id']}/artifacts/model.keras")
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == "model.keras"


def test_predict_shows_a_probability_chart_per_backbone(stack, page, trained, tmp_path):
    image = tmp_path / "red.png"
    coloured_image(CLASS_COLOURS["red"], 32, np.random.default_rng(1)).save(image)
    page.goto(f"{stack['url']}/benchmarks/{trained['id']}/predict")
    expect(page.locator("#models")).to_contain_text("Models ready")
    page.get_by_label("Image", exact=True).set_input_files(image)
    expect(page.locator("#preview")).to_be_visible()
    page.get_by_role("button", name="Predict").click()

    charts = page.locator(".prediction-chart")
    expect(charts).to_have_count(2, timeout=TRAINING_TIMEOUT_MS)
    for backbone in BACKBONES:
        card = page.locator(".card", has=page.get_by_role("link", name=backbone))
        expect(card).to_contain_text("Top:")
        thumbnail = card.locator(".prediction-body img.thumbnail")  # the image beside its chart
        expect(thumbnail).to_be_visible()
        assert thumbnail.evaluate("img => img.naturalWidth") == 32
    for chart_id in charts.evaluate_all("divs => divs.map(div => div.id)"):
        assert sorted(chart_data(page, chart_id)[0]["y"]) == ["blue", "green", "red"]


def test_cancel_then_retry_a_running_job(stack, page, dataset):
    created = submit_benchmark(stack["url"], dataset["id"], epochs=200, backbones=["VGG16"], patience=200)
    page.goto(f"{stack['url']}/jobs/{created['jobs'][0]['id']}")
    status = page.locator("#meta .status")
    expect(page.locator("#progress .epochs-done")).to_have_text(re.compile(r"^[1-9]\d*/200 epochs$"),
                                                                timeout=TRAINING_TIMEOUT_MS)
    expect(status).to_have_text("running")
    page.get_by_role("button", name="Cancel").click()
    expect(status).to_have_text("cancelled", timeout=60_000)
    expect(page.locator("#cancel")).to_be_hidden()

    page.get_by_role("button", name="Retry").click()
    expect(page.locator("#meta")).to_contain_text("Attempt 2", timeout=TRAINING_TIMEOUT_MS)
    expect(status).to_have_text("running")
    page.get_by_role("button", name="Cancel").click()
    expect(status).to_have_text("cancelled", timeout=60_000)


def test_a_refused_field_shows_the_api_error_beside_it(stack, page, dataset, tmp_path):
    page.goto(f"{stack['url']}/benchmarks/new")
    expect(page.get_by_label("Use a dataset", exact=True)).to_have_value(str(dataset["id"]))
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("0")
    page.get_by_role("button", name="Start benchmark").click()
    error = page.locator(".field", has=epochs).locator(".field-error")
    expect(error).to_have_text(re.compile(r"^epochs: .*1"))
    expect(epochs).to_have_attribute("aria-invalid", "true")
    expect(epochs).to_be_focused()
    assert page.url.endswith("/benchmarks/new")

    not_a_zip = tmp_path / "notes.zip"
    not_a_zip.write_text("not a zip")
    zip_input = page.get_by_label("Zip file", exact=True)
    zip_input.set_input_files(not_a_zip)
    page.get_by_role("button", name="Upload").click()
    expect(page.locator(".field", has=zip_input).locator(".field-error")).to_have_text(re.compile(r"^file: not a zip"))
    expect(error).to_be_empty()


def test_the_workers_page_lists_the_cpu_worker(stack, page):
    page.goto(f"{stack['url']}/workers")
    row = page.locator("#workers tbody tr").filter(has_text="cpu1@")
    expect(row).to_contain_text("online")
    expect(row).to_contain_text("CPU")
    expect(row).to_contain_text("default")  # its pool
    expect(row).to_contain_text(re.compile(r"\d+ % \(\d+ cores\)"))  # the host's CPU use, from its heartbeat
    expect(row).to_contain_text(re.compile(r"GiB / [\d.,]+ GiB"))  # the host's memory in use / total


def test_pages_fit_a_phone_screen(stack, narrow_page, trained):
    job_id = trained["jobs"][0]["id"]
    ready = {
        "/": "#benchmarks tbody tr",
        "/benchmarks/new": 'input[name="backbones"]',
        f"/benchmarks/{trained['id']}": "#chart-best .main-svg",
        f"/benchmarks/{trained['id']}/predict": "#models:not(:empty)",
        f"/jobs/{job_id}": "#artifacts tbody tr",
        "/workers": "#workers tbody tr",
    }
    for path, selector in ready.items():
        narrow_page.goto(stack["url"] + path)
        expect(narrow_page.locator(selector).first).to_be_attached()
        width = narrow_page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide"
        if path == f"/benchmarks/{trained['id']}":
            # The comparison is wider than a phone: it scrolls inside its wrapper, not the page.
            assert narrow_page.evaluate(
                "(() => { const w = document.querySelector('.table-wrap'); return w.scrollWidth > w.clientWidth; })()")
