"""Trials in the dashboard, in headless Chromium against the real stack: each backbone tries a grid of learning
rates with repeats, and the benchmark page shows its test accuracy with an interval, the rate it kept, whether
it is tied with the leader, and the spread of its repeats as a band around its validation curve; and where each
backbone goes wrong: F1 per class, a confusion matrix whose cells open their test images, and the images on
which the backbones disagree.

Jobs are tiny (3 classes x 8 images at 32 px, random weights, 2 epochs), so the test split holds one image per
class: no test can tell two backbones apart on 3 images, and the runner-up is always tied with the leader."""
from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import Page, expect

from testsupport.browser import TRAINING_TIMEOUT_MS, chart_data, fixed
from testsupport.stack import finished_benchmark, wait_until

BACKBONES = ["VGG16", "MobileNetV3Small"]
RATES = [1e-3, 3e-4]
REPEATS = 2


def points(fraction: float) -> str:
    """A fraction in percent with one decimal, as the page shows it."""
    return fixed(100 * fraction, 1)


def cell(page: Page, row, key: str):
    """The cell of `row` under the comparison heading whose data-key is `key`."""
    keys = page.locator("#comparison th").evaluate_all("headers => headers.map(header => header.dataset.key)")
    return row.locator(f"td:nth-child({keys.index(key) + 1})")


def backbone_row(page: Page, backbone: str):
    """The comparison row of one backbone."""
    return page.locator("#comparison tbody tr").filter(has=page.get_by_role("link", name=backbone, exact=True))


@pytest.fixture(scope="module")
def compared(stack, dataset) -> dict:
    """A finished benchmark of two backbones, each over two learning rates with two repeats."""
    response = requests.post(f"{stack['url']}/api/v1/benchmarks", json={
        "dataset": dataset["id"], "backbones": BACKBONES, "epochs": 2, "patience": 2, "image_size": 32,
        "batch_size": 8, "weights": "none", "learning_rate": RATES, "repeats": REPEATS})
    assert response.status_code == 201, response.text
    benchmark = wait_until(lambda: finished_benchmark(stack["url"], response.json()["id"]),
                           TRAINING_TIMEOUT_MS / 1000, "the benchmark")
    assert [job["status"] for job in benchmark["jobs"]] == ["succeeded", "succeeded"], benchmark
    return benchmark


def test_the_comparison_shows_test_intervals_chosen_rates_and_the_tie_with_the_leader(stack, page, compared):
    comparison, leader_id = compared["comparison"], compared["leader"]["job_id"]
    [runner_up] = [job for job in compared["jobs"] if job["id"] != leader_id]
    assert comparison["tied_with_leader"] == [runner_up["id"]], comparison  # 3 test images: nothing is significant

    page.goto(f"{stack['url']}/benchmarks/{compared['id']}")
    expect(page.locator("#live")).to_have_text("All jobs finished")
    expect(page.locator("#verdict")).to_have_text(comparison["sentence"])
    for job in compared["jobs"]:
        summary, test = job["summary"], job["summary"]["test"]
        row = backbone_row(page, job["backbone"])
        expect(cell(page, row, "testAccuracy")).to_have_text(
            f"{points(test['accuracy_mean'])} % [{points(test['ci_low'])}, {points(test['ci_high'])}]")
        expect(cell(page, row, "learningRate")).to_have_text(f"{summary['chosen_learning_rate']:g} of {len(RATES)}")
        expect(cell(page, row, "repeats")).to_have_text(str(REPEATS))
        expect(cell(page, row, "bestAccuracy")).to_have_text(f"{points(summary['best_val_accuracy'])} %")

    leader_row = backbone_row(page, compared["leader"]["backbone"])
    expect(leader_row).to_have_class("best")
    expect(leader_row.locator("td").first).to_contain_text("★ leader")
    expect(cell(page, leader_row, "standing")).to_have_text("leader")
    tied_row = backbone_row(page, runner_up["backbone"])
    expect(tied_row).to_have_class("tied")
    p_value = comparison["tests"][str(runner_up["id"])]["p_value"]
    expect(cell(page, tied_row, "standing")).to_have_text(re.compile(rf"^tied with leader\s*p = {fixed(p_value, 2)}$"))
    expect(page.locator("#meta")).to_contain_text("learning rates 0.001, 0.0003")
    expect(page.locator("#meta")).to_contain_text(f"{REPEATS} repeats")


def test_the_validation_curves_shade_the_spread_of_the_repeats(stack, page, compared):
    page.goto(f"{stack['url']}/benchmarks/{compared['id']}")
    expect(page.locator("#live")).to_have_text("All jobs finished")
    expect(page.locator("#band-note")).to_be_visible()
    series = requests.get(f"{stack['url']}/api/v1/benchmarks/{compared['id']}/epochs").json()["series"]
    traces = chart_data(page, "chart-accuracy")
    for line in series:
        assert line["band"], line  # two repeats at the chosen rate: a spread to show
        index = next(i for i, trace in enumerate(traces) if trace.get("fill") == "tonexty"
                     and trace["legendgroup"] == line["backbone"])
        high, low = traces[index], traces[index - 1]  # 'tonexty' fills down to the trace just before it
        curve = next(trace for trace in traces if trace["name"] == line["backbone"])
        assert high["x"] == low["x"] == [point["epoch"] for point in line["band"]]
        assert high["y"] == [point["high"] for point in line["band"]]
        assert low["y"] == [point["low"] for point in line["band"]]
        assert high["line"]["color"] == low["line"]["color"] == curve["line"]["color"]
        assert high["fillcolor"].startswith("rgba(") and not low["showlegend"] and not high["showlegend"]

    page.get_by_text("Train", exact=True).click()  # the band is of validation accuracy only
    expect(page.locator("#accuracy-title")).to_have_text("Train accuracy per epoch")
    assert not any(trace.get("fill") == "tonexty" for trace in chart_data(page, "chart-accuracy"))
    expect(page.locator("#band-note")).to_be_hidden()


def predictions(url: str, job: dict) -> dict:
    """The job's selected trial's test predictions, as the page fetches them."""
    return requests.get(f"{url}/api/v1/jobs/{job['id']}/predictions").json()


def click_confusion_cell(page: Page, true: int, predicted: int, classes: int) -> None:
    """Click the heatmap cell of (true class, predicted class): predictions across, true classes down."""
    drag_layer = page.locator("#chart-confusion .nsewdrag").first
    drag_layer.scroll_into_view_if_needed()  # a mouse click lands only within the viewport
    box = drag_layer.bounding_box()
    page.mouse.click(box["x"] + (predicted + 0.5) * box["width"] / classes,
                     box["y"] + (true + 0.5) * box["height"] / classes)


def test_f1_per_class_marks_the_best_backbone_of_each_class(stack, page, compared):
    page.goto(f"{stack['url']}/benchmarks/{compared['id']}")
    rows = page.locator("#class-f1 tbody tr")
    expect(rows).to_have_count(len(compared["jobs"]))
    evaluations = [job["summary"]["evaluation"] for job in compared["jobs"]]
    for index, (job, evaluation) in enumerate(zip(compared["jobs"], evaluations)):
        expect(rows.nth(index).locator("th")).to_have_text(job["backbone"])
        expect(rows.nth(index).locator("td")).to_have_text(
            [f"{points(row['f1'])} %" for row in evaluation["per_class"]]
            + [f"{points(evaluation[key])} %" for key in ("macro_f1", "balanced_accuracy", "expected_calibration_error")])
    best = [max(evaluation["per_class"][column]["f1"] for evaluation in evaluations)
            for column in range(len(evaluations[0]["classes"]))]
    marked = sum(row["f1"] == best[column] for evaluation in evaluations
                 for column, row in enumerate(evaluation["per_class"]))
    expect(page.locator("#class-f1 td.best")).to_have_count(marked)


def test_a_confusion_cell_opens_its_test_images_and_the_disagreements_are_listed(stack, page, compared):
    url = stack["url"]
    page.goto(f"{url}/benchmarks/{compared['id']}")
    job = compared["jobs"][1]
    page.locator("#confusion-backbone").select_option(label=job["backbone"])
    expect(page.locator("#chart-confusion")).to_have_attribute("data-job-id", str(job["id"]))
    shown = predictions(url, job)
    classes, target = shown["classes"], shown["predictions"][0]
    behind = [p for p in shown["predictions"] if (p["true"], p["predicted"]) == (target["true"], target["predicted"])]
    click_confusion_cell(page, target["true"], target["predicted"], len(classes))

    figures = page.locator("#gallery figure")
    expect(figures).to_have_count(len(behind))
    expect(figures.locator("figcaption")).to_have_text(
        [f"{classes[p['true']]} → {classes[p['predicted']]} ({fixed(100 * p['confidence'], 0)} %)" for p in behind])
    expect(figures.locator("img").first).to_have_attribute(
        "src", f"/api/v1/datasets/{shown['dataset_id']}/images/{behind[0]['index']}?size=96")
    page.wait_for_function(  # the thumbnails really load from the stack
        "() => [...document.querySelectorAll('#gallery img')].every(img => img.complete && img.naturalWidth > 0)")
    expect(page.locator("#gallery-note")).to_contain_text(f"{job['backbone']}: {len(behind)} test image")

    by_job = [{p["index"]: p for p in predictions(url, other)["predictions"]} for other in compared["jobs"]]
    truth = {p["index"]: p["true"] for p in shown["predictions"]}
    listed = [index for index in truth if len({guesses[index]["predicted"] for guesses in by_job}) > 1
              or all(guesses[index]["predicted"] != truth[index] for guesses in by_job)]
    expect(page.locator("#disagreements tbody tr")).to_have_count(len(listed))
    wrong_by_all = [index for index in truth if all(guesses[index]["predicted"] != truth[index] for guesses in by_job)]
    expect(page.locator("#disagreements tbody tr.label-noise")).to_have_count(len(wrong_by_all))


@pytest.mark.parametrize("cost, label", [("latency_ms_per_image", "Latency per image"), ("params_total", "Parameters"),
                                         ("model_bytes", "Model size"), ("train_seconds", "Training time")])
def test_the_tradeoff_draws_the_pareto_frontier_and_the_table_marks_the_backbones_on_it(stack, page, compared, cost,
                                                                                        label):
    page.goto(f"{stack['url']}/benchmarks/{compared['id']}")
    expect(page.locator("#live")).to_have_text("All jobs finished")
    page.locator("#tradeoff-cost").select_option(label=label)
    expect(page.locator("#tradeoff-title")).to_have_text(f"Accuracy against {label.lower()}")
    on_front = compared["frontier"][cost]  # cheapest first
    by_id = {job["id"]: job for job in compared["jobs"]}
    line = wait_until(lambda: next((trace for trace in chart_data(page, "chart-tradeoff")
                                    if trace["name"] == "Pareto frontier"
                                    and trace["x"] == [by_id[job_id]["summary"][cost] for job_id in on_front]), None),
                      10, "the frontier of the chosen cost")
    assert line["y"] == [by_id[job_id]["summary"]["test"]["accuracy_mean"] for job_id in on_front]
    points = [trace for trace in chart_data(page, "chart-tradeoff") if trace["name"] != "Pareto frontier"]
    assert all(trace["error_y"]["array"] for trace in points)  # each point with its interval
    marked = page.locator("#comparison tbody tr").filter(has=page.locator(".frontier-mark"))
    expect(marked.locator("td:first-child a")).to_have_text(
        [job["backbone"] for job in compared["jobs"] if job["id"] in on_front])


def test_the_downloaded_report_opens_from_disk_with_no_network_and_draws_its_charts(stack, page, browser, compared,
                                                                                   tmp_path):
    page.goto(f"{stack['url']}/benchmarks/{compared['id']}")
    with page.expect_download() as download:
        page.locator("#download-report").click()
    saved = tmp_path / "report.html"
    download.value.save_as(saved)

    # A context of its own that lets the file itself load and records (and refuses) any other request.
    context = browser.new_context()
    requested: list[str] = []

    def only_the_file(route) -> None:
        if route.request.url == saved.as_uri():
            route.continue_()
        else:
            requested.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_file)
    try:
        report = context.new_page()
        errors: list[str] = []
        report.on("pageerror", lambda error: errors.append(str(error)))
        report.goto(saved.as_uri())
        for chart in ("#chart-curves", "#chart-tradeoff"):
            expect(report.locator(f"{chart} .main-svg").first).to_be_visible()
        expect(report.locator("#leaders tbody tr")).to_have_count(len(compared["jobs"]))
        expect(report.locator("h1")).to_have_text(compared["name"])
        assert report.evaluate("[...document.images].every(image => image.complete && image.naturalWidth > 0)")
        assert (requested, errors) == ([], [])
    finally:
        context.close()


def test_a_benchmark_like_a_finished_one_shows_its_time_left_until_it_ends(stack, page, compared, dataset):
    # The compared benchmark is the history: the same backbones, size, device and path, fewer epochs.
    response = requests.post(f"{stack['url']}/api/v1/benchmarks", json={
        "dataset": dataset["id"], "backbones": BACKBONES, "epochs": 4, "patience": 4, "image_size": 32,
        "batch_size": 8, "weights": "none", "learning_rate": RATES, "repeats": REPEATS})
    assert response.status_code == 201, response.text
    at_submit = requests.get(f"{stack['url']}/api/v1/benchmarks/{response.json()['id']}").json()
    assert at_submit["eta_seconds"] > 0 and all(job["eta_seconds"] > 0 for job in at_submit["jobs"]), at_submit
    assert all(job["eta_basis"].endswith("on CPU, cached features") for job in at_submit["jobs"])

    page.goto(f"{stack['url']}/benchmarks/{response.json()['id']}")
    expect(page.locator("#meta .eta")).to_have_text(
        re.compile(r"^Time left: about \S.* \(\d jobs? left on 1 worker\)$"))
    expect(page.locator("#comparison .status-detail, #comparison td.wrap").first).to_contain_text("about")
    expect(page.locator("#live")).to_have_text("All jobs finished", timeout=TRAINING_TIMEOUT_MS)
    expect(page.locator("#meta .eta")).to_have_count(0)
    expect(page.locator("#meta")).not_to_contain_text("null")


def fill_tiny_benchmark(page: Page, rates: str, epochs: str = "1") -> None:
    """Fill the form for one small backbone at 32 px with random weights and the given learning rates."""
    for box in page.locator('input[name="backbones"]').all():
        box.set_checked(box.get_attribute("value") == "MobileNetV3Small")
    page.get_by_label("Image size (px)", exact=True).fill("32")
    page.get_by_label("Epochs", exact=True).fill(epochs)
    page.get_by_label("Batch size", exact=True).fill("8")
    page.get_by_label("None (random initialisation)", exact=True).check()
    page.get_by_label("Learning rates", exact=True).fill(rates)


def test_the_form_sends_a_list_of_rates_repeats_and_a_test_split(stack, page, dataset):
    page.goto(f"{stack['url']}/benchmarks/new")
    expect(page.get_by_label("Use a dataset", exact=True)).to_have_value(str(dataset["id"]))
    fill_tiny_benchmark(page, "1e-3, 3e-4")
    page.get_by_label("Repeats", exact=True).fill("2")
    page.get_by_label("Test split", exact=True).fill("0.2")
    page.get_by_role("button", name="Start benchmark").click()

    expect(page).to_have_url(re.compile(r"/benchmarks/\d+$"))
    benchmark_id = int(page.url.rsplit("/", 1)[1])
    config = requests.get(f"{stack['url']}/api/v1/benchmarks/{benchmark_id}").json()["config"]
    assert (config["learning_rate"], config["repeats"], config["test_split"]) == ([0.001, 0.0003], 2, 0.2)
    expect(page.locator("#meta")).to_contain_text("learning rates 0.001, 0.0003")


def test_one_rate_is_sent_as_a_number_and_refused_rates_are_shown_beside_their_field(stack, page, dataset):
    page.goto(f"{stack['url']}/benchmarks/new")
    expect(page.get_by_label("Use a dataset", exact=True)).to_have_value(str(dataset["id"]))
    fill_tiny_benchmark(page, "3e-4", epochs="0")  # refused for its epochs: nothing is created
    with page.expect_request(lambda request: request.method == "POST" and request.url.endswith("/api/v1/benchmarks")) as sent:
        page.get_by_role("button", name="Start benchmark").click()
    assert sent.value.post_data_json["learning_rate"] == 0.0003
    expect(page.locator("#error-epochs")).to_have_text(re.compile(r"^epochs: "))

    rates = page.get_by_label("Learning rates", exact=True)
    for refused in ("1e-3, 1e-3", "1e-3, fast"):  # the API refuses a repeated rate, the form what is not a number
        page.get_by_label("Epochs", exact=True).fill("1")
        rates.fill(refused)
        page.get_by_role("button", name="Start benchmark").click()
        expect(page.locator("#error-learning_rate")).to_have_text(re.compile(r"^learning_rate: "))
        expect(rates).to_have_attribute("aria-invalid", "true")
        expect(rates).to_be_focused()
    expect(page.locator("#error-learning_rate")).to_contain_text("“fast” is not a number")
    assert page.url.endswith("/benchmarks/new")
