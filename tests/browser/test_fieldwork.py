"""Field work on a phone: a valve closed while offline is sent once the network returns, and HQ sees
it in the collection summary and on the dashboard."""

import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.hq.dashboard import today
from app.fieldwork.models import FieldPhoto, FieldSubmission
from app.network.models import Account
from app.org.models import User
from tests.fieldwork.conftest import png_bytes, valve_task  # noqa: F401
from tests.processes.conftest import make_account  # noqa: F401

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
SYNC_TIMEOUT_S = 30


def _wait_for(condition):
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    while time.monotonic() < deadline:
        db.session.expire_all()
        if condition():
            return True
        time.sleep(0.5)
    return False


def test_valve_closed_offline_then_synced(valve_task, _browser, live_server, browser_login, screenshot, page):
    account, _instance, task = valve_task
    context = _browser.new_context(base_url=live_server, locale="zh-CN", **PHONE)
    phone = context.new_page()
    try:
        browser_login(phone, "tj_field")
        # Field staff land on their task list.
        assert phone.url.endswith("/field/")
        screenshot(phone, "field-phone-list")
        phone.locator(f"a[href='/field/tasks/{task.id}']").click()
        phone.get_by_label("现场结果").select_option("sealed")
        phone.get_by_label("封签号").fill("TJ-S-0042")
        phone.set_input_files("input[name=photos]", files=[{"name": "valve.png", "mimeType": "image/png", "buffer": png_bytes(64, 64)}])
        context.set_offline(True)
        phone.get_by_role("button", name="提交结果").click()
        phone.locator("#field-queue", has_text="保存在本机").wait_for()
        screenshot(phone, "field-phone-offline")
        assert db.session.scalar(sa.select(sa.func.count()).select_from(FieldSubmission)) == 0

        context.set_offline(False)
        phone.evaluate("window.dispatchEvent(new Event('online'))")
        assert _wait_for(lambda: db.session.get(Account, account.id).valve_state == "sealed")
        phone.wait_for_function("document.getElementById('field-queue').hidden === true")
        # A second 'online' event must not send the result again.
        phone.evaluate("window.dispatchEvent(new Event('online'))")
        time.sleep(1)
        db.session.expire_all()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(FieldSubmission)) == 1
        assert db.session.scalar(sa.select(sa.func.count()).select_from(FieldPhoto)) == 1
    finally:
        context.close()

    browser_login(page, "hq_auditor")
    page.goto("/hq/collection")
    row = page.locator("#field-progress tr[data-company=TJ]")
    assert row.locator("td").nth(2).inner_text() == "1"
    assert row.locator("td").nth(1).inner_text() == "0"
    screenshot(page, "hq-field-progress")

    # The group dashboard counts the valve among TJ's shut-off accounts.
    page.goto("/hq/dashboard?season=2025-2026")
    page.locator('[data-chart="collection"][data-rendered="true"] canvas').wait_for()
    headers = page.locator("#hq-companies thead th").all_inner_texts()
    cells = page.locator('#hq-companies tr[data-company="TJ"] td').all_inner_texts()
    assert cells[headers.index("关栓户数")] == "1"
    screenshot(page, "hq-dashboard-after-valve")

    # As of yesterday the valve was still open.
    page.goto(f"/hq/dashboard?season=2025-2026&as_of={today() - timedelta(days=1)}")
    cells = page.locator('#hq-companies tr[data-company="TJ"] td').all_inner_texts()
    assert cells[headers.index("关栓户数")] == "0"

def test_field_task_in_english(valve_task, _browser, live_server, browser_login, screenshot):
    """An English field user sees the task page and the offline banner in English."""
    _account, _instance, task = valve_task
    db.session.execute(sa.update(User).where(User.username == "tj_field").values(locale="en"))
    db.session.commit()
    context = _browser.new_context(base_url=live_server, locale="en-US", **PHONE)
    phone = context.new_page()
    try:
        browser_login(phone, "tj_field")
        phone.goto(f"/field/tasks/{task.id}")
        assert phone.locator("html").get_attribute("lang") == "en"
        assert phone.get_by_role("link", name="← Field work").is_visible()
        assert phone.get_by_text("Meter reading (GJ, optional)").is_visible()
        phone.locator("select[name=result]").select_option("sealed")
        phone.locator("input[name=seal_no]").fill("TJ-S-0043")
        phone.set_input_files("input[name=photos]", files=[{"name": "valve.png", "mimeType": "image/png", "buffer": png_bytes(64, 64)}])
        context.set_offline(True)
        phone.get_by_role("button", name="Submit result").click()
        phone.locator("#field-queue", has_text="saved on this phone").wait_for()
        screenshot(phone, "field-phone-task-english")
        context.set_offline(False)
    finally:
        context.close()
