"""Browser fixtures: the session app served over HTTP on 127.0.0.1 and one headless Chromium.

Browser tests carry the `browser` marker and run once, on the SQLite backend. Their
parametrizations for other backends are skipped at collection.

The live server serves the session `app` fixture itself, so each browser test starts, like
every other test, from the schema that `app_ctx` empties and `demo` fills. Celery runs
eagerly in the testing config, so an upload is imported inside the upload request.
"""

import os
from pathlib import Path

import pytest

from app.demo import DEMO_PASSWORD

CHROMIUM = os.environ.get("HEATFLOW_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# Screenshots go to test-artifacts/ (ignored by git); HEATFLOW_SCREENSHOTS=docs/screenshots refreshes the docs.
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / os.environ.get("HEATFLOW_SCREENSHOTS", "test-artifacts/screenshots")
# Playwright timeouts, in milliseconds. The navigation timeout also covers an upload, because
# the testing config imports the ledger inside the upload request.
ACTION_TIMEOUT_MS = 15_000
NAVIGATION_TIMEOUT_MS = 60_000


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives the app through Chromium; runs on the SQLite backend only")


def pytest_collection_modifyitems(config, items):
    skip_other_backends = pytest.mark.skip(reason="browser tests run once, on the SQLite backend")
    for item in items:
        if item.get_closest_marker("browser") is None:
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend") != "sqlite":
            item.add_marker(skip_other_backends)


@pytest.fixture
def live_server(live_server_url, demo, app):
    """Yield the base URL of the live server, on a fresh schema with the demo group installed.

    The testing config turns CSRF checks off for the Flask test client. A browser sends the
    token like a user does, so the checks are on while a browser test runs.
    """
    previous = app.config["WTF_CSRF_ENABLED"]
    app.config["WTF_CSRF_ENABLED"] = True
    yield live_server_url
    app.config["WTF_CSRF_ENABLED"] = previous


@pytest.fixture(scope="session")
def _browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(_browser, live_server):
    """A page in its own browser context (no cookies shared between tests), opened on the live server."""
    context = _browser.new_context(
        base_url=live_server, accept_downloads=True, locale="zh-CN", viewport={"width": 1280, "height": 800}
    )
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def screenshot():
    """Return screenshot(page, name), which saves a full-page PNG named <name>.png in SCREENSHOTS."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def _screenshot(page, name):
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return _screenshot


@pytest.fixture
def browser_login():
    """Return browser_login(page, username, password=demo password): log in through the form."""

    def _login(page, username, password=DEMO_PASSWORD):
        page.goto("/login")
        page.get_by_label("用户名").fill(username)
        page.get_by_label("密码").fill(password)
        with page.expect_navigation():
            page.get_by_role("button", name="登录").click()
        return page

    return _login
