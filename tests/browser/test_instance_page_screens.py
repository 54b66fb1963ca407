"""The instance and account pages with site photos and history, in both languages, on a desktop and on a phone.

Saves instance-photos-{zh_CN,en}-{desktop,phone}.png and account-photos-zh-phone.png under the screenshot folder.
"""

import io
import time
import uuid

import pytest
import sqlalchemy as sa
from PIL import Image

from app.extensions import db
from app.org.models import User
from tests.fieldwork.conftest import valve_task  # noqa: F401
from tests.processes.conftest import make_account  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
# Every thumbnail of the page has loaded and decoded to a non-empty image.
THUMBNAILS_LOADED = """() => {
  const images = Array.from(document.querySelectorAll('#site-photos img'));
  return images.length > 0 && images.every((image) => image.complete && image.naturalWidth > 0);
}"""


def _wait_for_thumbnails(page, timeout_s=15):
    # Polled from Python: page.wait_for_function evaluates a string, which the page's CSP forbids.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if page.evaluate(THUMBNAILS_LOADED):
            return
        time.sleep(0.2)
    raise AssertionError("site photo thumbnails did not load")


def _assert_readable_on_phone(page, table_selector):
    """Assert the page fits the phone's width and no cell of the table is squeezed into a narrow column."""
    width = PHONE["viewport"]["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    cell_widths = page.eval_on_selector_all(f"{table_selector} td", "cells => cells.map((cell) => cell.getBoundingClientRect().width)")
    assert cell_widths
    assert min(width for width in cell_widths if width > 0) >= width * 0.6


def _jpeg(color):
    output = io.BytesIO()
    Image.new("RGB", (800, 600), color).save(output, format="JPEG")
    return output.getvalue()


@pytest.fixture
def closed_with_photos(valve_task, login):  # noqa: F811
    """The valve task closed from the phone with two photos; returns (account, instance)."""
    account, instance, task = valve_task
    photos = [(io.BytesIO(_jpeg("#4a7ab0")), "valve.jpg"), (io.BytesIO(_jpeg("#b0704a")), "seal.jpg")]
    data = {"submission_id": str(uuid.uuid4()), "result": "sealed", "seal_no": "TJ-S-0042", "comment": "用户在场", "photos": photos}
    assert login("tj_field").post(f"/field/tasks/{task.id}", data=data, content_type="multipart/form-data").status_code == 302
    return account, instance


def _open(_browser, live_server, browser_login, locale, device):
    db.session.execute(sa.update(User).where(User.username == "tj_approver").values(locale=locale))
    db.session.commit()
    options = PHONE if device == "phone" else {"viewport": {"width": 1280, "height": 800}}
    context = _browser.new_context(base_url=live_server, locale="zh-CN", **options)
    page = context.new_page()
    browser_login(page, "tj_approver")
    return context, page


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_instance_page_photos(closed_with_photos, _browser, live_server, browser_login, screenshot, locale, device):
    _account, instance = closed_with_photos
    context, page = _open(_browser, live_server, browser_login, locale, device)
    try:
        page.goto(f"/processes/instances/{instance.id}")
        _wait_for_thumbnails(page)
        assert page.locator("#site-photos img").count() == 2
        heading = page.locator("#site-photos h2").inner_text()
        assert heading == ("现场照片" if locale == "zh_CN" else "Site photos")
        if device == "phone":
            _assert_readable_on_phone(page, ".process-events")
        screenshot(page, f"instance-photos-{locale}-{device}")
    finally:
        context.close()


def test_account_page_photos_phone(closed_with_photos, _browser, live_server, browser_login, screenshot):
    account, _instance = closed_with_photos
    context, page = _open(_browser, live_server, browser_login, "zh_CN", "phone")
    try:
        page.goto(f"/accounts/{account.id}")
        _wait_for_thumbnails(page)
        _assert_readable_on_phone(page, "#statement")
        _assert_readable_on_phone(page, ".process-events")
        with context.expect_page() as opened:
            page.locator("#site-photos a").first.click()
        full = opened.value
        full.wait_for_load_state()
        assert full.url.endswith("/field/photos/" + page.locator("#site-photos a").first.get_attribute("href").rsplit("/", 1)[1])
        screenshot(page, "account-photos-zh-phone")
    finally:
        context.close()
