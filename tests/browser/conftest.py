"""Browser fixtures: headless Debian Chromium through Playwright, cut off from everything but the local stack."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from testsupport.images import make_image_folder

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# Not network requests: an inline favicon and the object URL of a previewed upload.
LOCAL_SCHEMES = {"data", "blob"}
WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}
expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def browser() -> Browser:
    """One headless Chromium for the session."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class OfflinePage:
    """A page whose context aborts every request that leaves the machine, remembering each one."""

    def __init__(self, browser: Browser, viewport: dict):
        """Open a context with the request filter and a page that records uncaught script errors."""
        self.aborted: list[str] = []
        self.script_errors: list[str] = []
        self.context = browser.new_context(viewport=viewport)
        self.context.route("**/*", self._filter)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda error: self.script_errors.append(str(error)))

    def _filter(self, route) -> None:
        """Let local requests through; abort and record the rest."""
        url = urlsplit(route.request.url)
        if url.scheme in LOCAL_SCHEMES or url.hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.aborted.append(route.request.url)
            route.abort()

    def close(self) -> None:
        """Close the context."""
        self.context.close()


def _offline_page(browser: Browser, viewport: dict):
    """Yield an offline page; afterwards, fail if it asked for anything remote or a script crashed."""
    offline = OfflinePage(browser, viewport)
    yield offline.page
    offline.close()
    assert offline.aborted == [], f"the page asked for remote resources: {offline.aborted}"
    assert offline.script_errors == [], f"uncaught script errors: {offline.script_errors}"


@pytest.fixture
def page(browser) -> Page:
    """A 1280 px wide page that may only reach the local stack."""
    yield from _offline_page(browser, WIDE)


@pytest.fixture
def narrow_page(browser) -> Page:
    """A 390 px wide (phone) page that may only reach the local stack."""
    yield from _offline_page(browser, NARROW)


@pytest.fixture(scope="module")
def dataset_zip(tmp_path_factory) -> Path:
    """A small learnable dataset (3 classes x 8 images, 32 px) as a zip file."""
    from tlbench.client import zip_folder

    folder = tmp_path_factory.mktemp("images")
    archive = folder / "colours.zip"
    archive.write_bytes(zip_folder(make_image_folder(folder / "colours", classes=3, per_class=8, size=32)))
    return archive


@pytest.fixture(scope="module")
def dataset(stack, dataset_zip: Path) -> dict:
    """The small dataset, uploaded once for the module over the API."""
    with dataset_zip.open("rb") as file:
        response = requests.post(f"{stack['url']}/api/v1/datasets", files={"file": (dataset_zip.name, file)})
    assert response.status_code == 201, response.text
    return response.json()
