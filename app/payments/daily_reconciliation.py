"""Daily reconciliation of every company's channel merchants: download each statement, store it, reconcile it.

Celery beat queues one task per merchant for yesterday (payments.reconcile_all); finance
can run a given day from /reconciliation/ and operators with `flask heat reconcile`. Each
run is idempotent (see app/payments/reconciliation.py), so a day can be run again after a
channel corrects its statement.
"""

import logging
from dataclasses import dataclass

import sqlalchemy as sa

from app.extensions import db
from app.integrations.channel import ChannelError
from app.payments import channels
from app.payments.models import AlipayApp, BankAgreement, ChannelStatement, WechatMerchant
from app.payments.reconciliation import ReconciliationError, reconcile_statement, store_statement
from app.tenancy import company_scope, scoped

logger = logging.getLogger(__name__)
# Statement channel name -> Chinese label.
STATEMENT_CHANNEL_LABELS = {"wechatpay": "微信支付", "alipay": "支付宝"}


def statement_channel_label(channel):
    """Chinese label of a statement channel name such as "wechatpay" or "bank:CEB"."""
    if channel.startswith("bank:"):
        return f"银行代收 {channel.split(':', 1)[1]}"
    return STATEMENT_CHANNEL_LABELS.get(channel, channel)


@dataclass(frozen=True)
class Target:
    """One company's merchant on one statement channel."""

    company_id: int
    channel: str
    merchant_id: str


def reconciliation_targets(company_ids=None, channel=None):
    """Every active merchant of the given companies (all when None), optionally of one statement channel."""
    targets = []
    queries = (
        sa.select(WechatMerchant.company_id, sa.literal("wechatpay"), WechatMerchant.sub_mchid).filter_by(active=True),
        sa.select(AlipayApp.company_id, sa.literal("alipay"), AlipayApp.app_id).filter_by(active=True),
        sa.select(BankAgreement.company_id, "bank:" + BankAgreement.bank_code, BankAgreement.bank_company_id).filter_by(active=True),
    )
    for query in queries:
        for company_id, channel_name, merchant_id in db.session.execute(query).all():
            if company_ids is not None and company_id not in company_ids:
                continue
            if channel is not None and channel_name != channel:
                continue
            targets.append(Target(company_id, channel_name, merchant_id))
    return sorted(targets, key=lambda t: (t.company_id, t.channel, t.merchant_id))


def download_statement(channel, merchant_id, day):
    """Download a merchant's statement of a day from its channel; raises ChannelError (StatementNotReady when early)."""
    adapter, auth_token = channels.statement_channel(channel, merchant_id)
    return adapter.download_statement(merchant_id, day, auth_token)


def download_and_reconcile(company_id, channel, merchant_id, day):
    """Download, store and reconcile one merchant's day; return the ReconciliationRun. Commits.

    Raises ChannelError when the statement cannot be downloaded and ReconciliationError when
    it cannot be read; a statement stored earlier is then left as it was.
    """
    content = download_statement(channel, merchant_id, day)
    filename = f"{channel.replace(':', '-')}-{merchant_id}-{day:%Y%m%d}" + ("" if content else "-empty")
    statement = store_statement(company_id, channel, merchant_id, day, filename, content)
    return reconcile_statement(statement)


def reconcile_stored(company_id, channel, merchant_id, day):
    """Reconcile the statement stored for a merchant's day, or return None when none is stored."""
    statement = db.session.scalar(
        sa.select(ChannelStatement).filter_by(company_id=company_id, channel=channel, merchant_id=merchant_id, day=day)
    )
    return reconcile_statement(statement) if statement is not None else None


@dataclass(frozen=True)
class Outcome:
    """The result of reconciling one target: its run, or the error that stopped it."""

    target: Target
    run: object = None
    error: str = ""


def reconcile_targets(targets, day):
    """Download and reconcile each target's day one after another; return an Outcome per target."""
    outcomes = []
    for target in targets:
        label = f"reconcile:{target.channel}:{target.merchant_id}:{day}"
        try:
            with scoped(company_scope(target.company_id, label=label)):
                run = download_and_reconcile(target.company_id, target.channel, target.merchant_id, day)
        except (ChannelError, ReconciliationError) as error:
            db.session.rollback()
            logger.error("Reconciliation of %s merchant %s for %s failed: %s", target.channel, target.merchant_id, day, error)
            outcomes.append(Outcome(target, error=str(error)))
        else:
            outcomes.append(Outcome(target, run=run))
    return outcomes
