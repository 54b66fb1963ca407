"""Daily finance vouchers: debit and credit per account code, stored, published and downloadable."""

import json
from datetime import datetime, time, timedelta, timezone

import pytest
import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.clock import LOCAL_TIME
from app.extensions import db
from app.messaging.models import FinanceVoucher, OutboxEvent
from app.messaging.vouchers import VoucherError, issue_daily_vouchers
from app.payments.services import collect_payment
from tests.processes.conftest import user

YESTERDAY = datetime.now(LOCAL_TIME).date() - timedelta(days=1)


@pytest.fixture
def qd_day(metered_qd):
    """Five QD charges of 2101.48, a cash payment of 1000.00 and a card payment of 2101.48, all posted yesterday noon."""
    cashier = user("qd_cashier")
    collect_payment(metered_qd[0], "1000.00", "cash", cashier)
    collect_payment(metered_qd[1], "2101.48", "card", cashier)
    noon = datetime.combine(YESTERDAY, time(12), LOCAL_TIME).astimezone(timezone.utc)
    db.session.execute(sa.update(LedgerEntry).values(created_at=noon))
    db.session.commit()
    return metered_qd


def test_daily_voucher_balances_per_account_code(qd_day):
    [voucher] = issue_daily_vouchers(YESTERDAY, "QD")
    content = json.loads(voucher.content)

    # Charges 5 × 2101.48 = 10507.40: debit receivable, credit revenue. Payments 1000.00 cash
    # and 2101.48 card: debit cash and bank, credit receivable 3101.48.
    # Totals 1000.00 + 2101.48 + 10507.40 = 13608.88 = 3101.48 + 10507.40.
    assert content["lines"] == [
        {"account_code": "1001", "account_name": "库存现金", "debit": "1000.00", "credit": "0.00", "entries": 1},
        {"account_code": "1002", "account_name": "银行存款", "debit": "2101.48", "credit": "0.00", "entries": 1},
        {"account_code": "1122", "account_name": "应收账款", "debit": "10507.40", "credit": "3101.48", "entries": 7},
        {"account_code": "6001", "account_name": "主营业务收入", "debit": "0.00", "credit": "10507.40", "entries": 5},
    ]
    assert content["debit_total"] == content["credit_total"] == "13608.88"
    assert content["voucher_no"] == f"QD-{YESTERDAY:%Y%m%d}"
    assert content["date"] == YESTERDAY.isoformat()

    event = db.session.scalar(sa.select(OutboxEvent).filter_by(event_type="voucher.daily"))
    assert json.loads(event.payload) == content

    # Issuing the day again returns the stored voucher and publishes nothing new.
    assert issue_daily_vouchers(YESTERDAY, "QD")[0].id == voucher.id
    assert db.session.scalar(sa.select(sa.func.count(OutboxEvent.id)).filter_by(event_type="voucher.daily")) == 1


def test_other_days_and_companies_are_empty(qd_day):
    vouchers = {json.loads(v.content)["company"]: json.loads(v.content) for v in issue_daily_vouchers(YESTERDAY)}
    assert set(vouchers) == {"TJ", "QD", "SJZ", "BJ"}
    assert vouchers["TJ"]["lines"] == []
    assert vouchers["TJ"]["debit_total"] == "0.00"
    [earlier] = issue_daily_vouchers(YESTERDAY - timedelta(days=1), "QD")
    assert json.loads(earlier.content)["lines"] == []


def test_open_day_and_unknown_company_are_refused(qd_day):
    with pytest.raises(VoucherError, match="尚未结束"):
        issue_daily_vouchers(datetime.now(LOCAL_TIME).date())
    with pytest.raises(VoucherError, match="未找到公司 XX"):
        issue_daily_vouchers(YESTERDAY, "XX")


def test_finance_downloads_own_vouchers_only(qd_day, login):
    [voucher] = issue_daily_vouchers(YESTERDAY, "QD")
    finance = login("qd_finance")

    page = finance.get("/finance/vouchers")
    assert page.status_code == 200
    assert f'data-voucher="{voucher.id}"' in page.get_data(as_text=True)
    as_json = finance.get(f"/finance/vouchers/{voucher.id}.json")
    assert as_json.status_code == 200
    assert as_json.get_json()["debit_total"] == "13608.88"
    as_csv = finance.get(f"/finance/vouchers/{voucher.id}.csv").get_data(as_text=True)
    assert as_csv.startswith("\ufeff凭证号,日期,公司,科目代码,科目名称,借方金额,贷方金额,笔数\r\n")
    assert f"QD-{YESTERDAY:%Y%m%d},{YESTERDAY},QD,1122,应收账款,10507.40,3101.48,7\r\n" in as_csv

    assert login("tj_finance").get(f"/finance/vouchers/{voucher.id}.json").status_code == 404
    assert login("qd_cashier").get("/finance/vouchers").status_code == 403
    assert db.session.scalar(sa.select(sa.func.count(FinanceVoucher.id))) == 1


def test_daily_task_issues_every_company(qd_day):
    from app.tasks.outbox import issue_daily_vouchers_task

    assert issue_daily_vouchers_task.apply(args=[YESTERDAY.isoformat()]).get() == 4
    assert db.session.scalar(sa.select(sa.func.count(FinanceVoucher.id))) == 4
