"""Trials on the job page and the leader on the benchmarks list, in headless Chromium against the real stack.

A job trains a grid of learning rates with repeats: its page heads with the test accuracy and its interval and
the rate it kept, lists every trial with the selected one marked, and draws that trial's curves. The list of
benchmarks shows each leader's mean test accuracy, or, for a benchmark made before held-out test sets (a row
as an upgraded database holds it), its best validation accuracy, labelled as such.

Jobs are tiny (3 classes x 8 images at 32 px, random weights, 2 epochs) and there is one of them."""
from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
import requests
from playwright.sync_api import Page, expect

from db.models import Benchmark, Epoch, Job, JobStatus, Trial
from db.session import Database
from dbutil import BACKENDS, empty_database_url
from testsupport.browser import TRAINING_TIMEOUT_MS, fixed
from testsupport.stack import running_stack, wait_until

BACKBONE = "MobileNetV3Small"
RATES = [1e-3, 3e-4]
REPEATS = 2
EPOCHS = 2
# What a job from before test sets left: one rate, no "test" in its summary, one trial (as migration 0004 adds).
LEGACY_RATE = 0.001
LEGACY_VAL_ACCURACY = 0.625
LEGACY_EPOCHS = [{"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.05, "val_accuracy": 0.5},
                 {"epoch": 2, "loss": 0.8, "accuracy": 0.7, "val_loss": 0.9, "val_accuracy": LEGACY_VAL_ACCURACY}]


def percent(fraction: float | None) -> str:
    """A fraction as the page shows it: "83.3 %", or a dash for none."""
    return "–" if fraction is None else f"{fixed(100 * fraction, 1)} %"


def get(stack: dict, path: str) -> dict:
    """A GET of the stack's API."""
    response = requests.get(f"{stack['url']}/api/v1{path}")
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request, tmp_path_factory):
    """The whole stack, as the shared fixture starts it (SQLite, then PostgreSQL), but naming its database URL:
    the benchmark from before test sets goes straight into that database, as an upgrade would have left it."""
    home = tmp_path_factory.mktemp("home")
    database_url = empty_database_url(request, request.param, home)
    with running_stack(home, database_url=database_url) as running:
        yield {**running, "database_url": database_url}


@pytest.fixture(scope="module")
def submitted(stack, dataset) -> dict:
    """One backbone over two learning rates with two repeats, submitted and not waited for: a page opened on
    it first sees its trials queued or running."""
    response = requests.post(f"{stack['url']}/api/v1/benchmarks", json={
        "dataset": dataset["id"], "backbones": [BACKBONE], "epochs": EPOCHS, "patience": EPOCHS, "image_size": 32,
        "batch_size": 8, "weights": "none", "learning_rate": RATES, "repeats": REPEATS})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def trained(stack, submitted) -> dict:
    """The submitted benchmark once its job succeeded."""
    def done() -> dict | None:
        benchmark = get(stack, f"/benchmarks/{submitted['id']}")
        return benchmark if benchmark["status"] not in ("queued", "running") else None

    benchmark = wait_until(done, TRAINING_TIMEOUT_MS / 1000, "the benchmark")
    assert [job["status"] for job in benchmark["jobs"]] == ["succeeded"], benchmark
    return benchmark


def _legacy_summary(classes: list[str]) -> dict:
    """A summary as jobs wrote it before trials and test sets: validation only."""
    return {"best_val_accuracy": LEGACY_VAL_ACCURACY, "best_val_loss": 0.9, "best_epoch": 2, "epochs_run": 2,
            "stopped_early": False, "cancelled": False, "train_seconds": 3.2, "params_total": 1_000_000,
            "params_trainable": 3_075, "model_bytes": 4_200_000, "latency_ms_per_image": 2.5, "n_train": 19,
            "n_validation": 5, "image_size": 32, "classes": classes}


@pytest.fixture(scope="module")
def legacy(stack, dataset) -> dict:
    """A finished benchmark from before held-out test sets, written into the stack's database: its job, its one
    trial and its epochs as migration 0004 leaves them. Answers {"benchmark_id", "job_id"}."""
    spec = {"backbone": "VGG16", "image_size": 32, "epochs": 2, "batch_size": 8, "learning_rate": LEGACY_RATE,
            "patience": 2, "weights": "none", "seed": 0, "validation_split": 0.2}
    moment = datetime.now(timezone.utc)
    database = Database(stack["database_url"])
    try:
        with database.transaction() as session:
            job = Job(backbone="VGG16", spec=spec, status=JobStatus.SUCCEEDED, attempt=1, worker="cpu1@before",
                      summary=_legacy_summary(dataset["classes"]), started_at=moment, finished_at=moment,
                      heartbeat_at=moment)
            session.add(Benchmark(name="Before test sets", dataset_id=dataset["id"], jobs=[job], config={
                "backbones": ["VGG16"], "epochs": 2, "image_size": 32, "batch_size": 8, "learning_rate": LEGACY_RATE,
                "patience": 2, "weights": "none"}))
            session.flush()
            session.add(Trial(job_id=job.id, number=0, learning_rate=LEGACY_RATE, repeat=0, seed=0,
                              finished="completed", best_val_accuracy=LEGACY_VAL_ACCURACY, best_epoch=2, epochs_run=2,
                              selected=True))
            session.add_all(Epoch(job_id=job.id, trial=0, **row) for row in LEGACY_EPOCHS)
            return {"benchmark_id": job.benchmark_id, "job_id": job.id}
    finally:
        database.dispose()


def trial_cells(trial: dict) -> list:
    """The cells the page shows for a trial of the trained job: the selected one carries its mark."""
    return [re.compile(rf"^{trial['number']}{'★ selected' if trial['selected'] else ''}$"),
            f"{trial['learning_rate']:g}", str(trial["repeat"]), str(trial["seed"]), trial["status"],
            f"{trial['epochs_done']}/{EPOCHS}", percent(trial["best_val_accuracy"]), str(trial["best_epoch"]),
            percent(trial["test_accuracy"]), trial["worker"]]


def test_the_job_page_heads_with_its_test_result_and_rate_and_lists_its_trials(stack, page, submitted):
    job_id = submitted["jobs"][0]["id"]
    page.goto(f"{stack['url']}/jobs/{job_id}")
    rows = page.locator("#trials tbody tr")
    expect(rows).to_have_count(len(RATES) * REPEATS)  # every planned trial, before or after it trained
    # The page follows the job by polling: its result and trials arrive without a reload.
    expect(page.locator("#meta .status")).to_have_text("succeeded", timeout=TRAINING_TIMEOUT_MS)

    job, trials = get(stack, f"/jobs/{job_id}"), get(stack, f"/jobs/{job_id}/trials")["trials"]
    summary, test = job["summary"], job["summary"]["test"]
    expect(page.locator("#test-result .test-accuracy")).to_have_text(
        f"{percent(test['accuracy_mean'])} [{fixed(100 * test['ci_low'], 1)}, {fixed(100 * test['ci_high'], 1)}]")
    expect(page.locator("#test-result")).to_contain_text(f"mean of {REPEATS} repeats on {test['images']} test images")
    expect(page.locator("#chosen-rate .rate")).to_have_text(f"{summary['chosen_learning_rate']:g}")
    expect(page.locator("#chosen-rate")).to_contain_text("chosen by mean best validation accuracy")
    expect(page.locator("#meta")).to_contain_text(f"{len(RATES) * REPEATS}/{len(RATES) * REPEATS} trials")

    for index, trial in enumerate(trials):
        expect(rows.nth(index).locator("td")).to_have_text(trial_cells(trial))
    selected = summary["selected_trial"]
    assert [trial["number"] for trial in trials if trial["selected"]] == [selected]
    expect(page.locator("#trials tbody tr.best")).to_have_count(1)
    expect(rows.nth(selected)).to_have_class("best")

    expect(page.locator("#curves-note")).to_have_text(re.compile(rf"^Trial {selected} \(the selected trial\)"))
    epochs = get(stack, f"/jobs/{job_id}/epochs?trial={selected}")["epochs"]
    traces = page.evaluate("document.getElementById('chart-accuracy').data")
    assert [trace["name"] for trace in traces] == ["Train", "Validation"]
    assert traces[1]["y"] == [row["val_accuracy"] for row in epochs]


def test_the_benchmarks_list_shows_the_leaders_test_accuracy_and_labels_an_older_one_validation(
        stack, page, trained, legacy):
    leader = trained["leader"]
    assert leader["by"] == "test_accuracy", leader
    page.goto(stack["url"])
    row = page.locator("#benchmarks tbody tr").filter(has=page.locator(f'a[href="/benchmarks/{trained["id"]}"]'))
    expect(row.locator(".leader-accuracy")).to_have_text(f"{percent(leader['test_accuracy_mean'])} test")
    older = page.locator("#benchmarks tbody tr").filter(
        has=page.locator(f'a[href="/benchmarks/{legacy["benchmark_id"]}"]'))
    expect(older.locator(".leader-accuracy")).to_have_text(f"{percent(LEGACY_VAL_ACCURACY)} validation")
    expect(older.get_by_role("link", name="VGG16")).to_have_attribute("href", f"/jobs/{legacy['job_id']}")


def test_a_job_from_before_test_sets_says_it_has_none(stack, page, legacy):
    page.goto(f"{stack['url']}/jobs/{legacy['job_id']}")
    expect(page.locator("#test-result .test-accuracy")).to_have_text("no test set")
    expect(page.locator("#chosen-rate .rate")).to_have_text(f"{LEGACY_RATE:g}")
    expect(page.locator("#trials tbody tr td")).to_have_text([
        "0★ selected", f"{LEGACY_RATE:g}", "0", "0", "succeeded", "2/2", percent(LEGACY_VAL_ACCURACY), "2", "–", "–"])
    expect(page.locator("#trials-note")).to_contain_text("No held-out test set")
    expect(page.locator("#curves-note")).to_be_hidden()  # one trial: nothing to say which
