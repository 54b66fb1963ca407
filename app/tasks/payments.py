"""Refund sweep: refunds whose channel confirmation never arrived are queried and settled."""

import logging

import sqlalchemy as sa

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
