"""Closing the meter-reading review list: apply a corrected reading or dismiss with a reason.

A review closes once. Its row lock makes two staff members closing the same review wait
for each other, and the second one gets ReviewError. A corrected reading is stored under
the message id `review-<id>`, so it can never be stored twice for one review.
"""

import logging
from datetime import datetime, timezone

import sqlalchemy as sa
from flask_babel import gettext as _

from app.extensions import db
from app.locking import lock_row
from app.messaging.inbound import check_meter_reading, supersede_reviews
from app.messaging.models import MeterReading, MeterReadingReview
from app.org.models import Company
from app.texts import clean_text

logger = logging.getLogger(__name__)

NOTE_MAX = 200


class ReviewError(ValueError):
    """A review that cannot be closed as requested. The message states why and what to do."""


def _note(note):
    note = clean_text(note)
    if not note:
        raise ReviewError(_("请填写处理说明，例如“现场核对表具后按实际读数更正”或“计量系统误发，已作废”。"))
    if len(note) > NOTE_MAX:
        raise ReviewError(_("处理说明最长 %(max)s 个字，当前 %(length)s 个字，请删减后重试。", max=NOTE_MAX, length=len(note)))
    return note


def _open_review(review_id):
    review = lock_row(MeterReadingReview, review_id)
    if review is None:
        raise ReviewError(_("未找到编号为 %(id)s 的待核对读数，或它不属于您的公司。", id=review_id))
    if review.status != "open":
        resolver = review.resolved_by.name if review.resolved_by else _("计量系统")
        raise ReviewError(_("该读数已由%(resolver)s处理（%(status)s），无需再次处理。", resolver=resolver, status=review.status_label))
    return review


def apply_corrected_reading(review_id, account_no, read_at, reading, note, user):
    """Store the corrected reading of a review and close it; return the stored MeterReading. Commits.

    The reading passes the same checks as one from the metering system (metered account of
    the review's company, ISO 8601 time, GJ to three places, not lower than an earlier reading).
    """
    try:
        note = _note(note)
        review = _open_review(review_id)
        company = db.session.get(Company, review.company_id)
        try:
            account, moment, value = check_meter_reading(company, (account_no or "").strip(), read_at, reading)
        except ValueError as error:
            raise ReviewError(_("更正读数未通过校验：%(reason)s。请修改后重新提交。", reason=str(error).rstrip("。."))) from None
        stored = MeterReading(
            company_id=company.id, account_id=account.id, meter_no="", read_at=moment, reading_gj=value,
            message_id=f"review-{review.id}",
        )
        db.session.add(stored)
        db.session.flush()
        review.status = "corrected"
        review.resolution = note
        review.resolved_by_id = user.id
        review.resolved_at = datetime.now(timezone.utc)
        review.meter_reading_id = stored.id
        # This reading also closes the other open reviews of the same account and time.
        supersede_reviews(stored, account.account_no, _("已由读数复核 %(id)s 的更正读数入账", id=review.id))
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    logger.info("Meter reading review %s corrected by user %s: account %s reading %s at %s",
                review_id, user.id, account.account_no, value, moment.isoformat())
    return stored


def dismiss_review(review_id, note, user):
    """Close a review without storing a reading, with the reason staff give. Commits."""
    try:
        note = _note(note)
        review = _open_review(review_id)
        review.status = "dismissed"
        review.resolution = note
        review.resolved_by_id = user.id
        review.resolved_at = datetime.now(timezone.utc)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    logger.info("Meter reading review %s dismissed by user %s", review_id, user.id)
    return review


def review_counts():
    """Count the reviews per status among the companies visible in the current scope."""
    rows = db.session.execute(
        sa.select(MeterReadingReview.status, sa.func.count(MeterReadingReview.id)).group_by(MeterReadingReview.status)
    ).all()
    return dict(rows)
