"""Meter-reading review screens driven through Chromium: a clerk corrects a reading that went backwards."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.clock import LOCAL_TIME
from app.extensions import db
from app.messaging.inbound import CONSUMERS, apply_message
from app.messaging.models import MeterReading, MeterReadingReview
from tests.billing.conftest import add_account  # noqa: F401  fixtures reused here
from tests.messaging.conftest import metered_qd  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

FIRST_READ = datetime(2025, 11, 20, 8, 0, tzinfo=LOCAL_TIME)


def _send(account, message_id, hours, reading_gj):
    body = {
        "company": "QD", "account_no": account.account_no, "meter_no": "M1",
        "read_at": (FIRST_READ + timedelta(hours=hours)).isoformat(), "reading_gj": reading_gj,
    }
    return apply_message(CONSUMERS["meter_readings"], message_id, body)


def test_clerk_corrects_backwards_reading(page, browser_login, screenshot, metered_qd):  # noqa: F811
    account = metered_qd[0]
    assert _send(account, "r1", 10, "1005.000") == "applied"
    assert _send(account, "r2", 11, "1004.999") == "rejected"

    browser_login(page, "qd_clerk")
    page.get_by_role("link", name="读数核对").click()
    row = page.locator("#meter-reviews tbody tr")
    assert row.count() == 1
    assert "读数倒退" in row.inner_text()
    screenshot(page, "meter-reviews")
    with page.expect_navigation():
        row.get_by_role("link", name="核对").click()

    form = page.locator("#correct-form")
    form.get_by_label("读数（GJ，最多三位小数）").fill("1004.9")
    form.get_by_label("处理说明").fill("现场核对表具")
    with page.expect_navigation():
        form.get_by_role("button", name="按更正读数入账").click()
    assert "读数 1004.900 小于" in page.locator(".flash").inner_text()
    form = page.locator("#correct-form")
    assert form.get_by_label("读数（GJ，最多三位小数）").input_value() == "1004.9"
    form.get_by_label("读数（GJ，最多三位小数）").fill("1005.350")
    screenshot(page, "meter-review-correct")
    with page.expect_navigation():
        form.get_by_role("button", name="按更正读数入账").click()

    assert "已按更正读数 1005.350 GJ" in page.locator(".flash").inner_text()
    assert page.locator("#meter-reviews tbody tr").count() == 0
    db.session.expire_all()
    review = db.session.scalar(sa.select(MeterReadingReview).filter_by(message_id="r2"))
    assert review.status == "corrected"
    stored = db.session.get(MeterReading, review.meter_reading_id)
    assert stored.reading_gj == Decimal("1005.350")
