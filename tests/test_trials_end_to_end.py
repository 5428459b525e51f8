"""Trials through the whole stack: a learning-rate grid x repeats per backbone on a held-out test split,
the rate chosen on validation, each backbone's mean test accuracy with its interval, and ties with the
leader, all read back over HTTP (on each database, as the `stack` fixture runs)."""
from __future__ import annotations

import csv
import io
import subprocess
import sys
from html.parser import HTMLParser

import pytest
import requests

from testsupport.images import make_image_folder
from testsupport.stack import JOB_SECONDS, finished_benchmark, upload_dataset, wait_until

RATES = [1e-3, 3e-4]
REPEATS = 3


@pytest.fixture(scope="module")
def trial_benchmark(stack, tmp_path_factory) -> dict:
    """VGG16 and VGG19 with two learning rates x three repeats, run to the end; the benchmark as the API shows it."""
    url = stack["url"]
    folder = make_image_folder(tmp_path_factory.mktemp("images") / "colours", classes=3, per_class=8, size=32)
    dataset = upload_dataset(url, folder)
    created = requests.post(f"{url}/api/v1/benchmarks", json={
        "dataset": dataset["id"], "backbones": ["VGG16", "VGG19"], "epochs": 2, "image_size": 32,
        "weights": "none", "batch_size": 8, "learning_rate": RATES, "repeats": REPEATS})
    assert created.status_code == 201, created.text
    wait_until(lambda: finished_benchmark(url, created.json()["id"]), JOB_SECONDS, "the trial benchmark")
    return requests.get(f"{url}/api/v1/benchmarks/{created.json()['id']}").json()


def test_each_backbone_reports_its_chosen_rate_and_mean_test_accuracy_with_an_interval(trial_benchmark):
    assert trial_benchmark["status"] == "succeeded"
    for job in trial_benchmark["jobs"]:
        summary = job["summary"]
        assert summary["chosen_learning_rate"] in RATES and summary["repeats"] == REPEATS
        test = summary["test"]
        assert len(test["accuracies"]) == REPEATS and test["images"] == 3  # one image per class held out
        assert test["accuracy_mean"] == pytest.approx(sum(test["accuracies"]) / REPEATS)
        assert 0 <= test["ci_low"] <= test["accuracy_mean"] <= test["ci_high"] <= 1 and test["confidence"] == 0.95
        assert (job["trials_total"], job["trials_done"]) == (len(RATES) * REPEATS, len(RATES) * REPEATS)


def test_the_frontier_of_each_cost_is_the_pareto_front_of_mean_test_accuracy_against_it(trial_benchmark):
    from dashboard.presenters import COSTS, pareto_front

    jobs = trial_benchmark["jobs"]
    assert set(trial_benchmark["frontier"]) == set(COSTS)
    for cost in COSTS:
        points = {job["id"]: (job["summary"][cost], job["summary"]["test"]["accuracy_mean"]) for job in jobs}
        assert trial_benchmark["frontier"][cost] == pareto_front(points)
    # The backbone with the fewest parameters is on that front: nothing is cheaper in parameters.
    cheapest = min(jobs, key=lambda job: job["summary"]["params_total"])
    assert cheapest["id"] in trial_benchmark["frontier"]["params_total"]


def test_every_job_has_the_same_split_and_the_benchmark_shows_its_hashes(trial_benchmark):
    splits = trial_benchmark["splits"]
    assert {name: part["images"] for name, part in splits.items()} == {"train": 18, "validation": 3, "test": 3}
    assert all(job["summary"]["splits"] == splits for job in trial_benchmark["jobs"])


def test_the_leader_has_the_best_mean_test_accuracy_and_the_other_is_tested_against_it(trial_benchmark):
    jobs = {job["id"]: job for job in trial_benchmark["jobs"]}
    leader, comparison = trial_benchmark["leader"], trial_benchmark["comparison"]
    means = {job_id: job["summary"]["test"]["accuracy_mean"] for job_id, job in jobs.items()}
    assert leader["by"] == "test_accuracy" and means[leader["job_id"]] == max(means.values())
    assert comparison["leader_job_id"] == leader["job_id"]
    (other_id, test), = comparison["tests"].items()
    assert int(other_id) != leader["job_id"] and test["test"] == "paired bootstrap" and 0 <= test["p_value"] <= 1
    assert (int(other_id) in comparison["tied_with_leader"]) == (test["p_value"] >= comparison["alpha"])
    assert comparison["sentence"].startswith(f"{leader['backbone']} leads; ")


def test_trials_list_every_rate_and_repeat_with_one_selected_at_the_chosen_rate(stack, trial_benchmark):
    job = trial_benchmark["jobs"][0]
    shown = requests.get(f"{stack['url']}/api/v1/jobs/{job['id']}/trials").json()
    assert shown["test_set"] is True
    trials = shown["trials"]
    assert [(trial["learning_rate"], trial["repeat"]) for trial in trials] == [
        (rate, repeat) for rate in RATES for repeat in range(REPEATS)]
    assert all(trial["status"] == "succeeded" and trial["test_accuracy"] is not None for trial in trials)
    selected = [trial for trial in trials if trial["selected"]]
    assert len(selected) == 1 and selected[0]["number"] == job["summary"]["selected_trial"]
    assert selected[0]["learning_rate"] == job["summary"]["chosen_learning_rate"]
    at_chosen = [trial["test_accuracy"] for trial in trials if trial["learning_rate"] == selected[0]["learning_rate"]]
    assert at_chosen == job["summary"]["test"]["accuracies"]


def test_epochs_carry_their_trial_and_the_curve_has_a_band_across_repeats(stack, trial_benchmark):
    url, job = stack["url"], trial_benchmark["jobs"][0]
    every = requests.get(f"{url}/api/v1/jobs/{job['id']}/epochs").json()["epochs"]
    assert {epoch["trial"] for epoch in every} == set(range(len(RATES) * REPEATS))
    one = requests.get(f"{url}/api/v1/jobs/{job['id']}/epochs", params={"trial": 4}).json()["epochs"]
    assert [(epoch["trial"], epoch["epoch"]) for epoch in one] == [(4, 1), (4, 2)]
    series = requests.get(f"{url}/api/v1/benchmarks/{trial_benchmark['id']}/epochs").json()["series"][0]
    assert series["trial"] == job["summary"]["selected_trial"]
    assert {epoch["trial"] for epoch in series["epochs"]} == {series["trial"]}
    assert [point["epoch"] for point in series["band"]] == [1, 2]
    assert all(point["low"] <= point["high"] for point in series["band"])


def test_only_the_selected_trial_gets_a_whole_model_and_every_trial_its_predictions(stack, trial_benchmark):
    job = trial_benchmark["jobs"][0]
    names = {artifact["name"] for artifact in
             requests.get(f"{stack['url']}/api/v1/jobs/{job['id']}/artifacts").json()["artifacts"]}
    assert {"model.keras", "model.json", "model.weights.h5", "summary.json"} <= names
    for number in range(len(RATES) * REPEATS):
        assert {f"trials/{number:02d}/{name}" for name in ("history.csv", "head.npz", "predictions.npz")} <= names
    assert not [name for name in names if name.startswith("trials/") and name.endswith(".keras")]


def test_the_selected_trials_test_predictions_are_what_its_evaluation_counts(stack, trial_benchmark):
    url, job = stack["url"], trial_benchmark["jobs"][0]
    shown = requests.get(f"{url}/api/v1/jobs/{job['id']}/predictions").json()
    evaluation, summary = job["summary"]["evaluation"], job["summary"]
    assert (shown["trial"], shown["dataset_id"], shown["classes"]) == (
        summary["selected_trial"], trial_benchmark["dataset"]["id"], summary["classes"])
    predictions = shown["predictions"]
    assert len(predictions) == evaluation["images"] == summary["n_test"]
    right = sum(prediction["true"] == prediction["predicted"] for prediction in predictions)
    assert right / len(predictions) == pytest.approx(evaluation["accuracy"])
    assert [row["support"] for row in evaluation["per_class"]] == [
        sum(prediction["true"] == label for prediction in predictions) for label in range(len(shown["classes"]))]
    assert all(1 / len(shown["classes"]) - 1e-3 <= prediction["confidence"] <= 1 for prediction in predictions)
    image = requests.get(f"{url}/api/v1/datasets/{shown['dataset_id']}/images/{predictions[0]['index']}")
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/jpeg"
    other = requests.get(f"{url}/api/v1/jobs/{job['id']}/predictions", params={"trial": 1}).json()
    assert other["trial"] == 1 and [p["index"] for p in other["predictions"]] == [p["index"] for p in predictions]


def report(url: str, benchmark: dict, suffix: str = "") -> requests.Response:
    response = requests.get(f"{url}/api/v1/benchmarks/{benchmark['id']}/report{suffix}")
    assert response.status_code == 200, response.text[:500]
    return response


class Attributes(HTMLParser):
    """Every src and href in an HTML page."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [value for name, value in attrs if name in ("src", "href") and value is not None]


def test_the_html_report_is_one_file_with_everything_inline(stack, trial_benchmark):
    response = report(stack["url"], trial_benchmark)
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="tlbench-benchmark-{trial_benchmark["id"]}.html"')
    page = response.text
    parser = Attributes()
    parser.feed(page)
    assert all(link.startswith("data:image/jpeg;base64,") for link in parser.links), parser.links[:5]
    assert "Plotly.newPlot" in page and "<script src" not in page  # the chart library is inline
    mistakes = {job["id"]: sum(p["true"] != p["predicted"] for p in requests.get(
        f"{stack['url']}/api/v1/jobs/{job['id']}/predictions").json()["predictions"]) for job in trial_benchmark["jobs"]}
    assert len(parser.links) == sum(min(20, count) for count in mistakes.values())  # each mistake embedded, up to 20
    for job in trial_benchmark["jobs"]:
        assert job["backbone"] in page and job["summary"]["reproducibility"]["git_commit"] in page
    assert trial_benchmark["comparison"]["sentence"] in page
    for part in trial_benchmark["splits"].values():
        assert part["sha256"] in page


def test_the_csv_report_has_one_row_per_trial_and_the_markdown_one_the_leaderboard(stack, trial_benchmark):
    rows = list(csv.DictReader(io.StringIO(report(stack["url"], trial_benchmark, ".csv").text)))
    assert len(rows) == len(trial_benchmark["jobs"]) * len(RATES) * REPEATS
    for job in trial_benchmark["jobs"]:
        trials = requests.get(f"{stack['url']}/api/v1/jobs/{job['id']}/trials").json()["trials"]
        mine = [row for row in rows if row["job_id"] == str(job["id"])]
        assert [(int(row["trial"]), float(row["test_accuracy"]), row["selected"]) for row in mine] == [
            (trial["number"], trial["test_accuracy"], str(trial["selected"])) for trial in trials]
        assert {float(row["job_test_accuracy_mean"]) for row in mine} == {job["summary"]["test"]["accuracy_mean"]}
    summary = report(stack["url"], trial_benchmark, ".md").text
    assert trial_benchmark["comparison"]["sentence"] in summary
    table = [line for line in summary.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(trial_benchmark["jobs"])  # the heading and one row a backbone
    assert table[1].startswith(f"| {trial_benchmark['leader']['backbone']} |") and "| leader |" in table[1]


def test_tlbench_report_saves_each_format_where_asked(stack, trial_benchmark, tmp_path):
    for name in ("report.html", "report.csv", "summary.md"):
        result = subprocess.run([sys.executable, "-m", "tlbench", "report", str(trial_benchmark["id"]), "-o",
                                 str(tmp_path / name), "--url", stack["url"]], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        suffix = {"report.html": "", "report.csv": ".csv", "summary.md": ".md"}[name]
        expected = report(stack["url"], trial_benchmark, suffix).content
        saved = (tmp_path / name).read_bytes()
        if suffix == ".csv":
            assert saved == expected
        else:  # the report says when it was generated, to the second
            assert saved.split(b"generated")[0] == expected.split(b"generated")[0]
    missing = subprocess.run([sys.executable, "-m", "tlbench", "report", "999", "--url", stack["url"]],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert missing.returncode == 1 and "404: benchmark 999 not found" in missing.stderr


def test_a_class_too_small_for_a_test_part_is_refused_at_submit_naming_it(stack, tmp_path):
    url = stack["url"]
    folder = make_image_folder(tmp_path / "tiny", classes=2, per_class=2, size=32)
    dataset = upload_dataset(url, folder)
    before = requests.get(f"{url}/api/v1/benchmarks").json()["benchmarks"]
    refused = requests.post(f"{url}/api/v1/benchmarks", json={
        "dataset": dataset["id"], "backbones": ["VGG16"], "image_size": 32, "weights": "none"})
    assert refused.status_code == 400 and refused.json()["field"] == "dataset"
    assert "class 'blue' has 2 images, too few" in refused.json()["error"]
    assert requests.get(f"{url}/api/v1/benchmarks").json()["benchmarks"] == before
