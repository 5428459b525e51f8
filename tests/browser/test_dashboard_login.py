"""With TLBENCH_TOKEN set, a browser logs in, and the pages' own fetch() calls change state through the
session cookie and the CSRF token that tlbench.js sends. The app runs in a thread: no worker is needed."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from testsupport.webapp import TOKEN, serving


@pytest.fixture
def secure_url(settings):
    """The web app with a token, served on a free local port."""
    from dashboard import create_app

    app = create_app({"TLBENCH_SETTINGS": settings, "TLBENCH_TOKEN": TOKEN})
    with serving(app) as url:
        yield url
    app.extensions["tlbench.database"].dispose()


def submit_login(page: Page, token: str) -> None:
    """Type a token into the login form and send it."""
    page.get_by_label("Token", exact=True).fill(token)
    page.get_by_role("button", name="Log in").click()


def post_without_csrf_token(page: Page) -> int:
    """The status a page's fetch() gets when it leaves out the CSRF header."""
    return page.evaluate("fetch('/api/v1/jobs/1/cancel', {method: 'POST'}).then(r => r.status)")


def test_a_browser_logs_in_uploads_with_the_csrf_token_and_logs_out(secure_url, page, dataset_zip):
    page.goto(f"{secure_url}/benchmarks/new")
    expect(page).to_have_url(re.compile(r"/login\?next=/benchmarks/new$"))
    submit_login(page, "not the token")
    expect(page.get_by_role("alert")).to_have_text("That is not the server's token.")

    submit_login(page, TOKEN)
    expect(page).to_have_url(f"{secure_url}/benchmarks/new")
    # The backbones arrive through the session cookie; by then the page's script has bound its buttons.
    expect(page.locator('input[name="backbones"]').first).to_be_attached()
    page.get_by_label("Zip file", exact=True).set_input_files(dataset_zip)
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#dataset-summary")).to_contain_text("3 classes, 24 images")
    assert post_without_csrf_token(page) == 400

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{secure_url}/login")
    assert page.evaluate("fetch('/api/v1/datasets').then(r => r.status)") == 401
