"""Payment tasks: applying stored channel notifications, and the sweeps of notifications and refunds left waiting."""

import logging

import sqlalchemy as sa
from flask import current_app

from app.extensions import celery, db
from app.payments.refunds import check_refund, stuck_refund_ids
from app.tenancy import company_scope, scoped

logger = logging.getLogger(__name__)


@celery.task(name="payments.query_stuck_refunds")
def query_stuck_refunds_task(older_than_seconds=600):
    """Query the channel of every refund `processing` longer than `older_than_seconds`; returns how many were settled."""
    settled = 0
    stuck = stuck_refund_ids(older_than_seconds)
    for refund_id, company_id in stuck:
        with scoped(company_scope(company_id, label=f"task:payments.query_stuck_refunds:{refund_id}")):
            try:
                refund = check_refund(refund_id)
            except sa.exc.OperationalError:
                # A lost connection fails the rest too: the task is retried whole.
                raise
            except Exception:
                db.session.rollback()
                logger.exception("Query of stuck refund %s failed", refund_id)
                continue
            settled += refund.status != "processing"
    logger.info("Queried %s stuck refunds, %s settled", len(stuck), settled)
    return settled


@celery.task(name="payments.apply_notifications")
def apply_notifications_task(company_id):
    """Apply a company's pending channel notifications (app/payments/inbox.py); returns how many rows were applied."""
    from app.payments.inbox import apply_pending

    applied = apply_pending(company_id)
    logger.info("Applied %s notifications of company %s", applied, company_id)
    return applied


@celery.task(name="payments.sweep_notifications")
def sweep_notifications_task(older_than_seconds=None):
    """Apply the notifications pending longer than `older_than_seconds` (NOTIFICATION_SWEEP_S by default) in every company.

    Picks up rows whose apply task was lost: the broker was down after the commit, or the
    worker stopped. Failed rows whose `retry_at` has passed are set back to pending and
    applied too. Returns how many rows were applied.
    """
    from app.payments.inbox import apply_pending, companies_with_due_retries, companies_with_pending, release_due_retries

    if older_than_seconds is None:
        older_than_seconds = current_app.config["NOTIFICATION_SWEEP_S"]
    retried = [company_id for company_id in companies_with_due_retries() if release_due_retries(company_id)]
    applied = 0
    for company_id in sorted(set(companies_with_pending(older_than_seconds)) | set(retried)):
        applied += apply_pending(company_id)
    if applied:
        logger.warning("The notification sweep applied %s rows left pending", applied)
    return applied
