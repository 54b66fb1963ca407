"""Meter-reading review list: a clerk enters the corrected reading or dismisses it, once, for
their own company only. A reading the metering system resends closes the review by itself."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.clock import LOCAL_TIME
from app.extensions import db
from app.messaging.inbound import CONSUMERS, apply_message
from app.messaging.models import MeterReading, MeterReadingReview
from app.messaging.reviews import ReviewError, apply_corrected_reading, dismiss_review
from app.org.models import User

FIRST_READ = datetime(2025, 11, 20, 8, 0, tzinfo=LOCAL_TIME)
SPEC = CONSUMERS["meter_readings"]


def _reading(account, hours, reading_gj):
    return {
        "company": "QD", "account_no": account.account_no, "meter_no": f"M{account.id}",
        "read_at": (FIRST_READ + timedelta(hours=hours)).isoformat(), "reading_gj": reading_gj,
    }


def _user(username):
    return db.session.scalar(sa.select(User).filter_by(username=username))


def _review(message_id):
    db.session.expire_all()
    return db.session.scalar(sa.select(MeterReadingReview).filter_by(message_id=message_id))


def _readings(account):
    db.session.expire_all()
    return db.session.scalars(
        sa.select(MeterReading).filter_by(account_id=account.id).order_by(MeterReading.read_at)
    ).all()


@pytest.fixture
def backwards(metered_qd):
    """QD account with 1005.000 GJ at 18:00 and a rejected 1004.999 GJ at 19:00 (reading went backwards)."""
    account = metered_qd[0]
    assert apply_message(SPEC, "m1", _reading(account, 10, "1005.000")) == "applied"
    assert apply_message(SPEC, "m2", _reading(account, 11, "1004.999")) == "rejected"
    return account


def test_corrected_reading_is_stored_once(backwards):
    review = _review("m2")
    clerk = _user("qd_clerk")
    stored = apply_corrected_reading(
        review.id, backwards.account_no, review.read_at, "1005.499", "现场核对表具，原读数录入有误", clerk,
    )
    assert stored.reading_gj == Decimal("1005.499")
    assert stored.message_id == f"review-{review.id}"
    review = _review("m2")
    assert review.status == "corrected"
    assert review.meter_reading_id == stored.id
    assert review.resolved_by_id == clerk.id
    assert review.resolution == "现场核对表具，原读数录入有误"
    assert [r.reading_gj for r in _readings(backwards)] == [Decimal("1005.000"), Decimal("1005.499")]

    with pytest.raises(ReviewError, match="已由.*处理（已按更正读数入账）"):
        apply_corrected_reading(review.id, backwards.account_no, review.read_at, "1005.600", "再次更正", clerk)
    with pytest.raises(ReviewError, match="无需再次处理"):
        dismiss_review(review.id, "作废", clerk)
    assert len(_readings(backwards)) == 2


def test_corrected_reading_is_checked_like_a_message(backwards):
    review = _review("m2")
    clerk = _user("qd_clerk")
    cases = [
        ("1004.998", review.read_at, "读数 1004.998 小于 2025-11-20 18:00 的读数 1005.000（读数倒退）"),
        ("1005.0001", review.read_at, "超过三位小数"),
        ("", review.read_at, "读数缺失"),
        ("1005.100", "昨天", "抄表时间「昨天」不是 ISO 8601 时间"),
        ("1e20", review.read_at, "读数「1e20」超过上限"),
        ("1005.100", "0001-01-01T00:00:00+08:00", "抄表时间「0001-01-01T00:00:00\\+08:00」超出范围"),
    ]
    for reading, read_at, message in cases:
        with pytest.raises(ReviewError, match=message):
            apply_corrected_reading(review.id, backwards.account_no, read_at, reading, "更正", clerk)
    with pytest.raises(ReviewError, match="用户编号「129999999999999」在 QD 不存在"):
        apply_corrected_reading(review.id, "129999999999999", review.read_at, "1005.100", "更正", clerk)
    with pytest.raises(ReviewError, match="请填写处理说明"):
        apply_corrected_reading(review.id, backwards.account_no, review.read_at, "1005.100", "  ", clerk)
    with pytest.raises(ReviewError, match="请填写处理说明"):
        apply_corrected_reading(review.id, backwards.account_no, review.read_at, "1005.100", "\u200b\ufeff", clerk)
    assert _review("m2").status == "open"
    assert len(_readings(backwards)) == 1


def test_dismissed_review_stores_nothing(backwards):
    review = _review("m2")
    dismiss_review(review.id, "计量系统误发，已通知重发", _user("qd_clerk"))
    review = _review("m2")
    assert review.status == "dismissed"
    assert review.meter_reading_id is None
    assert len(_readings(backwards)) == 1


def test_resent_reading_supersedes_review(backwards):
    # The metering system sends the same hour again, corrected, under a new message id.
    assert apply_message(SPEC, "m3", _reading(backwards, 11, "1005.250")) == "applied"
    review = _review("m2")
    assert review.status == "superseded"
    assert "m3" in review.resolution
    assert review.meter_reading_id == db.session.scalar(sa.select(MeterReading.id).filter_by(message_id="m3"))
    # A reading of another hour leaves an open review alone.
    assert apply_message(SPEC, "m4", _reading(backwards, 12, "1004.000")) == "rejected"
    assert apply_message(SPEC, "m5", _reading(backwards, 13, "1006.000")) == "applied"
    assert _review("m4").status == "open"


def test_review_pages_correct_and_dismiss(backwards, add_account, login):
    rejected_area = add_account("QD", "80")
    assert apply_message(SPEC, "m6", {**_reading(rejected_area, 1, "1.000")}) == "rejected"
    clerk = login("qd_clerk")
    listing = clerk.get("/finance/meter-reviews").get_data(as_text=True)
    m2, m6 = _review("m2"), _review("m6")
    assert f'data-review="{m2.id}"' in listing
    assert f'data-review="{m6.id}"' in listing
    assert "读数倒退" in listing
    filtered = clerk.get(f"/finance/meter-reviews?account={rejected_area.account_no}").get_data(as_text=True)
    assert f'data-review="{m6.id}"' in filtered
    assert f'data-review="{m2.id}"' not in filtered

    detail = clerk.get(f"/finance/meter-reviews/{m2.id}").get_data(as_text=True)
    assert "1005.000" in detail  # the latest stored reading, shown for comparison
    bad = clerk.post(f"/finance/meter-reviews/{m2.id}/correct", data={
        "account_no": backwards.account_no, "read_at": m2.read_at, "reading": "1004.5", "note": "现场核对",
    })
    assert bad.status_code == 302
    assert "reading=1004.5" in bad.headers["Location"]
    again = clerk.get(bad.headers["Location"]).get_data(as_text=True)
    assert "更正读数未通过校验：读数 1004.500 小于" in again
    assert 'value="1004.5"' in again
    good = clerk.post(f"/finance/meter-reviews/{m2.id}/correct", data={
        "account_no": backwards.account_no, "read_at": m2.read_at, "reading": "1005.400", "note": "现场核对",
    }, follow_redirects=True)
    assert "已按更正读数 1005.400 GJ" in good.get_data(as_text=True)
    assert _review("m2").status == "corrected"

    missing_note = clerk.post(f"/finance/meter-reviews/{m6.id}/dismiss", data={"note": ""}, follow_redirects=True)
    assert "请填写处理说明" in missing_note.get_data(as_text=True)
    clerk.post(f"/finance/meter-reviews/{m6.id}/dismiss", data={"note": "面积户，计量系统误发"})
    assert _review("m6").status == "dismissed"
    closed = clerk.get("/finance/meter-reviews?status=dismissed").get_data(as_text=True)
    assert "面积户，计量系统误发" in closed


def test_review_pages_stay_within_company(backwards, login):
    review = _review("m2")
    assert login("tj_clerk").get(f"/finance/meter-reviews/{review.id}").status_code == 404
    response = login("tj_clerk").post(f"/finance/meter-reviews/{review.id}/dismiss", data={"note": "越权"})
    assert response.status_code == 404
    assert f'data-review="{review.id}"' not in login("tj_clerk").get("/finance/meter-reviews").get_data(as_text=True)
    assert login("qd_cashier").get("/finance/meter-reviews").status_code == 403
    assert login("qd_field").post(f"/finance/meter-reviews/{review.id}/dismiss", data={"note": "x"}).status_code == 403
    assert _review("m2").status == "open"
