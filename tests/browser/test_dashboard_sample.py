"""A first visit to an empty tlbench: the home page offers the sample benchmark and runs it in one click."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

from testsupport.stack import running_stack

# The README's screenshot is refreshed only on request (TLBENCH_UPDATE_SCREENSHOTS=1): a test run should not
# change tracked files. The sample benchmark takes a few minutes on 2 CPU cores.
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "benchmark.png"
SAMPLE_TIMEOUT_MS = 900_000


@pytest.fixture(scope="module")
def empty_stack(tmp_path_factory):
    """A stack on a home of its own, where no benchmark exists yet (only the sample dataset)."""
    with running_stack(tmp_path_factory.mktemp("empty-home")) as running:
        yield running


def test_an_empty_home_runs_the_sample_benchmark_in_one_click(empty_stack, page):
    url = empty_stack["url"]
    page.goto(url)
    button = page.get_by_role("button", name="Run the sample benchmark")
    expect(button).to_be_visible()
    expect(page.locator("#benchmarks")).to_be_hidden()

    button.click()
    expect(page).to_have_url(re.compile(rf"^{re.escape(url)}/benchmarks/\d+$"))
    benchmark_id = int(page.url.rsplit("/", 1)[1])
    benchmark = requests.get(f"{url}/api/v1/benchmarks/{benchmark_id}").json()
    expect(page.locator("#comparison tbody tr")).to_have_count(len(benchmark["jobs"]))
    expect(page.locator("#meta")).to_contain_text(benchmark["dataset"]["name"])

    if os.environ.get("TLBENCH_UPDATE_SCREENSHOTS") == "1":
        take_readme_screenshot(page)

    page.get_by_role("link", name="Benchmarks").click()
    expect(page.locator("#benchmarks tbody tr")).to_have_count(1)
    expect(button).to_be_hidden()


def take_readme_screenshot(page) -> None:
    """The README's picture: the sample benchmark's page once it has finished, a confusion cell opened."""
    expect(page.locator("#live")).to_have_text("All jobs finished", timeout=SAMPLE_TIMEOUT_MS)
    expect(page.locator("#class-f1 tbody tr")).not_to_have_count(0)
    drag_layer = page.locator("#chart-confusion .nsewdrag").first
    drag_layer.scroll_into_view_if_needed()
    box = drag_layer.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 6, box["y"] + box["height"] / 6)  # a cell of the first class
    expect(page.locator("#gallery figure").first).to_be_visible()
    # Down to the confusion matrix and its gallery; the list of disagreements below runs long.
    bottom = page.evaluate("document.querySelector('#errors .charts').getBoundingClientRect().bottom + scrollY")
    page.screenshot(path=SCREENSHOT, full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": bottom + 16})
