"""A first visit to an empty tlbench: the home page offers the sample benchmark and runs it in one click."""
from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import expect

from stackutil import running_stack


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

    page.get_by_role("link", name="Benchmarks").click()
    expect(page.locator("#benchmarks tbody tr")).to_have_count(1)
    expect(button).to_be_hidden()
