"""Billing runs, re-rating and receivable summaries."""

import logging
from collections import defaultdict
from decimal import Decimal

import sqlalchemy as sa
from flask import current_app
from flask_babel import gettext as _

from app.billing.bulk import bulk_billing_applies, run_bulk_billing
from app.billing.models import RECEIVABLE_KINDS, RECEIVED_KINDS, BillingRun, LedgerEntry, memo_columns, utcnow
from app.billing.precision import company_money_rule, money_rule_of_company
from app.billing.proration import season_charge_lines, season_charge_total, season_tariffs, tariff_periods
from app.extensions import db
from app.i18n import Message
from app.messaging.events import emit
from app.money import ZERO, format_money, use_money_rule
from app.network.models import BILLING_STATUSES, Account, Building, HeatSource, Station, Unit
from app.network.terms import company_terms_history
from app.org.models import Company
from app.tariffs.services import get_season
from app.tariffs.rates import season_tariff_rates

logger = logging.getLogger(__name__)


class BillingError(RuntimeError):
    """A billing step that cannot be carried out as requested."""


def get_company(code):
    """Return the company with `code`, or raise BillingError."""
    company = db.session.scalar(sa.select(Company).filter_by(code=code))
    if company is None:
        raise BillingError(_("未找到公司 %(code)s；请检查公司代码（如 TJ）。", code=code))
    return company


def _account_facts(company_id):
    """Return (account, has_lift, heat_source_kind) for every account of a company."""
    rows = db.session.execute(
        sa.select(Account, Building.has_lift, HeatSource.kind)
        .join(Unit, Account.unit_id == Unit.id)
        .join(Building, Unit.building_id == Building.id)
        .outerjoin(Station, Account.station_id == Station.id)
        .outerjoin(HeatSource, Station.heat_source_id == HeatSource.id)
        .where(Account.company_id == company_id)
        .order_by(Account.id)
    )
    return [(account, bool(has_lift), kind or "") for account, has_lift, kind in rows]


def account_charge_inputs(account):
    """Return (has_lift, heat_source_kind) of one account."""
    building = account.unit.building
    kind = account.station.heat_source.kind if account.station and account.station.heat_source else ""
    return building.has_lift, kind


def run_billing(company_code, season_name, user_id=None):
    """Post the season charge of every account of a company that has none yet.

    Returns the BillingRun. Accounts already charged for the season are left alone, so a
    re-run posts nothing twice. An account connected during the season, or a season with
    several tariff versions, gets one prorated line per version.

    On PostgreSQL, when no line needs proration, one INSERT ... SELECT per batch of accounts
    posts the same lines and commits each batch (app/billing/bulk.py).
    """
    company = get_company(company_code)
    season = get_season(company.id, season_name)
    with company_money_rule(company.id):
        try:
            return _run_billing(company, season, user_id)
        except Exception:
            db.session.rollback()
            raise


def _run_billing(company, season, user_id):
    tariffs = season_tariffs(season)
    # Fails before anything is written when the season start has no tariff in force.
    tariff_periods(season, tariffs, season.start_on, season.end_on)
    if bulk_billing_applies(company, season, tariffs):
        return run_bulk_billing(company, season, tariffs[0], user_id, batch_size=current_app.config.get("BILLING_BATCH_SIZE"))
    charged = set(
        db.session.scalars(
            sa.select(LedgerEntry.account_id).where(
                LedgerEntry.company_id == company.id,
                LedgerEntry.season_id == season.id,
                LedgerEntry.kind == "charge",
            )
        )
    )
    run = BillingRun(company_id=company.id, season_id=season.id, started_by_id=user_id)
    db.session.add(run)
    db.session.flush()

    history = company_terms_history(company.id)
    posted = 0
    total = ZERO
    for account, has_lift, kind in _account_facts(company.id):
        if account.id in charged:
            continue
        lines = season_charge_lines(account, season, tariffs, has_lift, kind, history=history.get(account.id, []))
        if not lines:
            continue
        account_total = ZERO
        for index, line in enumerate(lines):
            # The first line keeps the key of a whole-season charge; later versions add their first day.
            key = f"charge:{season.id}:{account.id}" + (f":{line.start_on.isoformat()}" if index else "")
            db.session.add(
                LedgerEntry(
                    company_id=company.id,
                    account_id=account.id,
                    season_id=season.id,
                    kind="charge",
                    amount=line.amount,
                    charge_area=line.charge_area.quantize(Decimal("0.0001")) if _fits(line.charge_area, 4) else None,
                    unit_price=line.unit_price,
                    ratio=line.ratio,
                    cause_type="billing_run",
                    cause_id=run.id,
                    idempotency_key=key,
                    **(memo_columns(line.describe()) if line.prorated else {}),
                    created_by_id=user_id,
                )
            )
            total += line.amount
            account_total += line.amount
        emit_bill_issued(company.id, season, run.id, account.id, account.account_no, account_total, len(lines) > 1 or lines[0].prorated)
        posted += 1

    run.accounts_billed = posted
    run.amount_posted = total
    run.finished_at = utcnow()
    db.session.commit()
    logger.info("Billing run %s for company %s season %s billed %s accounts", run.id, company.code, season.name, posted)
    return run


def emit_bill_issued(company_id, season, run_id, account_id, account_no, amount, prorated):
    """Record the `bill.issued` event of one account's season charge (see docs/integrations.md)."""
    emit(company_id, "bill.issued", f"{run_id}:{account_id}", {
        "account_id": account_id, "account_no": account_no, "season": season.name, "billing_run_id": run_id,
        "amount": format_money(amount), "prorated": prorated,
    })


def _fits(value, places):
    return value == value.quantize(Decimal(1).scaleb(-places))


def season_receivable(account_id, season_id):
    """Net receivable of one account for one season."""
    amount = db.session.scalar(
        sa.select(sa.func.sum(LedgerEntry.amount)).where(
            LedgerEntry.account_id == account_id,
            LedgerEntry.season_id == season_id,
            LedgerEntry.kind.in_(RECEIVABLE_KINDS),
        )
    )
    return amount if amount is not None else ZERO


def season_received(account_id, season_id):
    """Payments applied to one account's season receivable."""
    amount = db.session.scalar(
        sa.select(sa.func.sum(LedgerEntry.amount)).where(
            LedgerEntry.account_id == account_id,
            LedgerEntry.season_id == season_id,
            LedgerEntry.kind.in_(RECEIVED_KINDS),
        )
    )
    return -amount if amount is not None else ZERO


def rerate_account(account, season, new_status, cause_type, cause_id, key, user_id=None, memo="", receivable=None, key_checked=False,
                   money_rule=None, history=None):
    """Change an account's billing status and post the difference to its season receivable.

    Posts one `rerate` line of (new charge − current receivable) under `key`; posting the
    same key again does nothing. Returns the line, or None when it was already posted.
    `receivable` is the current season receivable when the caller has just read it under
    the account's row lock; otherwise it is read here. `key_checked` is True when the caller
    has just found no line under `key` while holding that lock, so the check is skipped.
    `money_rule` is the group's MoneyRule when the caller has read it, else it is read here.
    `history` is the account's terms history as season_charge_lines takes it (None reads it).
    """
    if not key_checked:
        exists = db.session.scalar(
            sa.select(LedgerEntry.id).where(LedgerEntry.company_id == account.company_id, LedgerEntry.idempotency_key == key)
        )
        if exists:
            return None
    rule = money_rule if money_rule is not None else money_rule_of_company(account.company_id)
    with use_money_rule(rule):
        has_lift, kind = account_charge_inputs(account)
        tariffs = season_tariff_rates(season)
        lines = season_charge_lines(account, season, tariffs, has_lift, kind, billing_status=new_status, history=history)
        if receivable is None:
            receivable = season_receivable(account.id, season.id)
        difference = season_charge_total(lines) - receivable
    latest = lines[-1] if lines else None
    account.billing_status = new_status
    entry = LedgerEntry(
        company_id=account.company_id,
        account_id=account.id,
        season_id=season.id,
        kind="rerate",
        amount=difference,
        ratio=latest.ratio if latest else None,
        unit_price=latest.unit_price if latest else None,
        cause_type=cause_type,
        cause_id=cause_id,
        idempotency_key=key,
        **(memo_columns(memo) if isinstance(memo, Message) else {"memo": memo}),
        created_by_id=user_id,
    )
    db.session.add(entry)
    db.session.flush()
    return entry


def receivables_report(company_code, season_name):
    """Receivables of a company and season in the CLI's JSON shape (amounts as strings)."""
    company = get_company(company_code)
    season = get_season(company.id, season_name)
    amounts = dict(
        db.session.execute(
            sa.select(LedgerEntry.account_id, sa.func.sum(LedgerEntry.amount))
            .where(
                LedgerEntry.company_id == company.id,
                LedgerEntry.season_id == season.id,
                LedgerEntry.kind.in_(RECEIVABLE_KINDS),
            )
            .group_by(LedgerEntry.account_id)
        ).all()
    )
    by_status = defaultdict(lambda: {"accounts": 0, "receivable": ZERO})
    by_account = {}
    total = ZERO
    accounts = db.session.execute(
        sa.select(Account.id, Account.legacy_no, Account.account_no, Account.billing_status)
        .where(Account.company_id == company.id)
        .order_by(Account.id)
    ).all()
    for account_id, legacy_no, account_no, status in accounts:
        amount = amounts.get(account_id) or ZERO
        label = BILLING_STATUSES.get(status, status)
        by_status[label]["accounts"] += 1
        by_status[label]["receivable"] += amount
        by_account[legacy_no or account_no] = format_money(amount)
        total += amount
    return {
        "company": company.code,
        "season": season.name,
        "accounts": len(accounts),
        "receivable_total": format_money(total),
        "by_status": {
            label: {"accounts": v["accounts"], "receivable": format_money(v["receivable"])}
            for label, v in sorted(by_status.items())
        },
        "by_account": by_account,
    }
