"""Daily finance vouchers: per company and local day, debit and credit per account code.

A voucher sums the ledger lines posted on that day (China Standard Time) into the
accounts of ACCOUNT_CODES; every line is booked on both sides, so debits equal credits.
Negative lines (waivers, downward re-ratings) stay negative on the same side, as red
entries (红字). Opening arrears imported with a ledger (`prior_arrears`) are opening
balances, not business of the day, and are left out. Once issued, a voucher is stored
and published as `voucher.daily`; issuing the same day again returns the stored one.
"""

import csv
import io
import json
from collections import defaultdict
from datetime import datetime, time, timedelta, timezone

import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.clock import LOCAL_TIME
from app.extensions import db
from app.messaging.events import dump_json, emit
from app.messaging.models import FinanceVoucher
from app.money import ZERO, format_money
from app.org.models import Company
from app.payments.models import Payment

VOUCHER_SCHEMA = "heatflow.finance.voucher"
VOUCHER_VERSION = 1

# Account code -> Chinese name (the enterprise chart of accounts).
ACCOUNT_CODES = {
    "1001": "库存现金",
    "1002": "银行存款",
    "1122": "应收账款",
    "2203": "预收账款",
    "6001": "主营业务收入",
    "6051": "其他业务收入",
}
RECEIVABLE_CODE = "1122"
# Ledger kind -> (debit code, credit code) for lines that raise what is owed.
OWED_KINDS = {
    "charge": ("1122", "6001"),
    "rerate": ("1122", "6001"),
    "settlement": ("1122", "6001"),
    "waiver": ("1122", "6001"),
    "late_fee": ("1122", "6051"),
    # Negative, so it reverses part of the late-fee income.
    "late_fee_waiver": ("1122", "6051"),
}
# Payment method -> the account the money went to.
CASH_CODES = {"cash": "1001"}
BANK_CODE = "1002"
ADVANCE_CODE = "2203"


class VoucherError(ValueError):
    """A voucher that cannot be issued as asked."""


def day_bounds(voucher_date):
    """Start and end of a local day in UTC, the zone timestamps are stored in."""
    start = datetime.combine(voucher_date, time.min, LOCAL_TIME).astimezone(timezone.utc)
    return start, start + timedelta(days=1)


def _postings(company_id, voucher_date):
    """Yield (debit code, credit code, amount, count) for the ledger lines of one company and day."""
    start, end = day_bounds(voucher_date)
    rows = db.session.execute(
        sa.select(LedgerEntry.kind, Payment.method, sa.func.sum(LedgerEntry.amount), sa.func.count(LedgerEntry.id))
        .outerjoin(Payment, sa.and_(LedgerEntry.cause_type == "payment", Payment.id == LedgerEntry.cause_id))
        .where(LedgerEntry.company_id == company_id, LedgerEntry.created_at >= start, LedgerEntry.created_at < end)
        .group_by(LedgerEntry.kind, Payment.method)
    ).all()
    for kind, method, amount, count in rows:
        if kind in OWED_KINDS:
            yield (*OWED_KINDS[kind], amount, count)
        elif kind in ("payment", "late_fee_payment"):
            # Payment lines are negative in the ledger: money in, receivable down.
            yield CASH_CODES.get(method, BANK_CODE), RECEIVABLE_CODE, -amount, count
        elif kind == "credit":
            yield BANK_CODE, ADVANCE_CODE, -amount, count


def build_voucher(company, voucher_date):
    """Sum the voucher of one company and local day into a dict (amounts as strings with two decimals)."""
    debit = defaultdict(lambda: ZERO)
    credit = defaultdict(lambda: ZERO)
    entries = defaultdict(int)
    for debit_code, credit_code, amount, count in _postings(company.id, voucher_date):
        debit[debit_code] += amount
        credit[credit_code] += amount
        entries[debit_code] += count
        entries[credit_code] += count
    lines = [
        {"account_code": code, "account_name": ACCOUNT_CODES[code], "debit": format_money(debit[code]),
         "credit": format_money(credit[code]), "entries": entries[code]}
        for code in sorted(set(debit) | set(credit))
    ]
    debit_total = sum(debit.values(), ZERO)
    credit_total = sum(credit.values(), ZERO)
    if debit_total != credit_total:
        raise VoucherError(f"{company.code} {voucher_date} 凭证借方 {debit_total} 与贷方 {credit_total} 不平，请检查分录映射。")
    return {
        "schema": VOUCHER_SCHEMA, "version": VOUCHER_VERSION, "voucher_no": f"{company.code}-{voucher_date:%Y%m%d}",
        "company": company.code, "company_name": company.name, "date": voucher_date.isoformat(), "currency": "CNY",
        "lines": lines, "debit_total": format_money(debit_total), "credit_total": format_money(credit_total),
    }


def issue_voucher(company, voucher_date):
    """Store and publish the voucher of a company and day, or return the one issued before. The caller commits."""
    existing = db.session.scalar(sa.select(FinanceVoucher).filter_by(company_id=company.id, voucher_date=voucher_date))
    if existing is not None:
        return existing
    content = build_voucher(company, voucher_date)
    voucher = FinanceVoucher(
        company_id=company.id, voucher_date=voucher_date, content=dump_json(content),
        debit_total=content["debit_total"], credit_total=content["credit_total"],
    )
    db.session.add(voucher)
    emit(company.id, "voucher.daily", voucher_date.isoformat(), content)
    db.session.flush()
    return voucher


def issue_daily_vouchers(voucher_date, company_code=None):
    """Issue the vouchers of every operating company (or one) for a closed local day; returns them."""
    today = datetime.now(LOCAL_TIME).date()
    if voucher_date >= today:
        raise VoucherError(f"{voucher_date} 尚未结束，只能出具 {today - timedelta(days=1)} 及以前的日凭证。")
    statement = sa.select(Company).where(Company.is_headquarters.is_(False)).order_by(Company.number)
    if company_code:
        statement = statement.where(Company.code == company_code)
    companies = db.session.scalars(statement).all()
    if company_code and not companies:
        raise VoucherError(f"未找到公司 {company_code}；请检查公司代码（如 TJ）。")
    vouchers = [issue_voucher(company, voucher_date) for company in companies]
    db.session.commit()
    return vouchers


def voucher_content(voucher):
    return json.loads(voucher.content)


def voucher_csv(voucher):
    """Render the voucher as CSV text (with a BOM for spreadsheet programs), one row per account code."""
    content = voucher_content(voucher)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["凭证号", "日期", "公司", "科目代码", "科目名称", "借方金额", "贷方金额", "笔数"])
    for line in content["lines"]:
        writer.writerow([content["voucher_no"], content["date"], content["company"], line["account_code"],
                         line["account_name"], line["debit"], line["credit"], line["entries"]])
    writer.writerow([content["voucher_no"], content["date"], content["company"], "", "合计",
                     content["debit_total"], content["credit_total"], ""])
    return "\ufeff" + out.getvalue()
