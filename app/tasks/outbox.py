"""Background jobs of the integrations: the outbox relay (on beat) and the daily finance vouchers."""

import logging
from datetime import datetime, timedelta

from app.clock import LOCAL_TIME
from app.extensions import celery
from app.messaging.broker import BrokerNotConfigured
from app.messaging.relay import relay_pending
from app.messaging.vouchers import issue_daily_vouchers

logger = logging.getLogger(__name__)


@celery.task(name="outbox.relay", ignore_result=True)
def relay_outbox_task(max_seconds=20):
    """Publish pending outbox events; returns how many were published."""
    try:
        result = relay_pending(max_seconds=max_seconds)
    except BrokerNotConfigured as error:
        logger.debug("Outbox relay skipped: %s", error)
        return 0
    if result.failed:
        logger.warning("Outbox relay published %s events, then failed: %s", result.published, result.error)
    return result.published


@celery.task(name="outbox.issue_daily_vouchers", ignore_result=True)
def issue_daily_vouchers_task(voucher_date=None):
    """Issue yesterday's (or `voucher_date`'s, ISO) finance vouchers of every company; returns their count."""
    day = datetime.fromisoformat(voucher_date).date() if voucher_date else datetime.now(LOCAL_TIME).date() - timedelta(days=1)
    vouchers = issue_daily_vouchers(day)
    logger.info("Issued %s finance vouchers for %s", len(vouchers), day)
    return len(vouchers)
