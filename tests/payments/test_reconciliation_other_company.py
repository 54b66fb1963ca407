"""A statement of QD's merchant that names TJ's order: QD's difference keeps no order number, headquarters reads it."""

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.clock import LOCAL_TIME
from app.extensions import db
from app.integrations.statement import StatementLine
from app.network.models import Account
from app.org.models import User
from app.org.services import scope_for
from app.payments.models import OnlineOrder, ReconciliationItem, ReconciliationOrderCopy, WechatMerchant
from app.payments.reconciliation import reconcile, resolve_item
from app.tenancy import scoped

DAY = date(2025, 12, 3)
QD_MCHID = "1900000222"
TJ_ORDER = "TJ20251203CROSS0001"


def _at(hour):
    return datetime(DAY.year, DAY.month, DAY.day, hour, tzinfo=LOCAL_TIME).astimezone(timezone.utc)


@pytest.fixture
def crossed(tj_billed, demo):
    """QD's WeChat sub-merchant and TJ's online order TJ_ORDER; returns the statement lines naming it."""
    tj, qd = demo["TJ"], demo["QD"]
    db.session.add(WechatMerchant(company_id=qd.id, sub_mchid=QD_MCHID))
    account_id = db.session.scalar(sa.select(Account.id).filter_by(company_id=tj.id).order_by(Account.id).limit(1))
    db.session.add(OnlineOrder(company_id=tj.id, account_id=account_id, out_trade_no=TJ_ORDER, amount=Decimal("88.00"), sub_mchid="1900000111"))
    db.session.commit()
    return [
        StatementLine("wechatpay", QD_MCHID, "4200000777", TJ_ORDER, "payment", Decimal("88.00"), _at(10)),
        StatementLine("wechatpay", QD_MCHID, "4200000778", "QD-UNKNOWN-1", "payment", Decimal("5.00"), _at(11)),
    ]


def _item_text(item):
    return " ".join(str(getattr(item, column.name)) for column in ReconciliationItem.__table__.columns)


def _as_user(username, statement):
    user = db.session.scalar(sa.select(User).filter_by(username=username))
    with scoped(scope_for(user)):
        rows = db.session.execute(statement).all()
        db.session.rollback()
    return rows


def test_company_item_hides_other_order(crossed, demo, backend):
    qd, tj = demo["QD"], demo["TJ"]
    run = reconcile(qd.id, "wechatpay", QD_MCHID, DAY, crossed)
    items = {item.channel_txn_id: item for item in db.session.scalars(sa.select(ReconciliationItem).filter_by(run_id=run.id))}
    assert items["4200000777"].out_trade_no is None
    assert items["4200000777"].other_company_order is True
    # An order number that no company has is the merchant's own and stays.
    assert items["4200000778"].out_trade_no == "QD-UNKNOWN-1"
    assert items["4200000778"].other_company_order is False

    copies = db.session.scalars(sa.select(ReconciliationOrderCopy)).all()
    assert len(copies) == 1
    assert copies[0].company_id is None
    assert copies[0].item_id == items["4200000777"].id
    assert copies[0].out_trade_no == TJ_ORDER
    assert (copies[0].merchant_company_id, copies[0].order_company_id) == (qd.id, tj.id)

    # QD's own scope reads its items without TJ's number and no copy.
    for (item,) in _as_user("qd_finance", sa.select(ReconciliationItem)):
        assert TJ_ORDER not in _item_text(item)
    assert _as_user("qd_finance", sa.select(ReconciliationOrderCopy)) == []
    # Headquarters reads the copy.
    assert [row[0].out_trade_no for row in _as_user("hq_auditor", sa.select(ReconciliationOrderCopy))] == [TJ_ORDER]


def test_rls_hides_copy_from_company(crossed, demo, backend):
    if backend != "postgres":
        pytest.skip("row-level security exists on PostgreSQL only")
    qd = demo["QD"]
    reconcile(qd.id, "wechatpay", QD_MCHID, DAY, crossed)
    # Raw SQL bypasses the ORM's company filter, so only row-level security keeps QD from reading the copy.
    raw = sa.text("SELECT out_trade_no FROM reconciliation_order_copy")
    items = sa.text("SELECT coalesce(out_trade_no, '') FROM reconciliation_item")
    assert _as_user("qd_finance", raw) == []
    assert TJ_ORDER not in [row[0] for row in _as_user("qd_finance", items)]
    assert [row[0] for row in _as_user("hq_auditor", raw)] == [TJ_ORDER]
    user = db.session.scalar(sa.select(User).filter_by(username="qd_finance"))
    with scoped(scope_for(user)):
        with pytest.raises(sa.exc.DBAPIError):
            db.session.execute(sa.text(
                "INSERT INTO reconciliation_order_copy (item_id, merchant_company_id, order_company_id, out_trade_no, updated_at)"
                " SELECT id, company_id, company_id, 'x', now() FROM reconciliation_item LIMIT 1"
            ))
        db.session.rollback()


def test_rerun_keeps_one_copy(crossed, demo, cashier):
    qd = demo["QD"]
    reconcile(qd.id, "wechatpay", QD_MCHID, DAY, crossed)
    reconcile(qd.id, "wechatpay", QD_MCHID, DAY, crossed)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ReconciliationOrderCopy)) == 1

    # The line disappears from a corrected statement: the open item and its copy go.
    run = reconcile(qd.id, "wechatpay", QD_MCHID, DAY, crossed[1:])
    assert run.differences == 1
    assert db.session.scalars(sa.select(ReconciliationOrderCopy)).all() == []

    # A resolved item keeps its copy when a later statement no longer has the line.
    reconcile(qd.id, "wechatpay", QD_MCHID, DAY, crossed)
    item = db.session.scalar(sa.select(ReconciliationItem).filter_by(channel_txn_id="4200000777"))
    resolve_item(item, "渠道误记，已联系微信支付更正", cashier("qd_finance"))
    reconcile(qd.id, "wechatpay", QD_MCHID, DAY, crossed[1:])
    assert [copy.out_trade_no for copy in db.session.scalars(sa.select(ReconciliationOrderCopy))] == [TJ_ORDER]


def test_pages_show_placeholder_and_number(crossed, demo, login):
    qd = demo["QD"]
    reconcile(qd.id, "wechatpay", QD_MCHID, DAY, crossed)
    company_page = login("qd_finance").get("/reconciliation/")
    assert company_page.status_code == 200
    company_html = company_page.get_data(as_text=True)
    assert TJ_ORDER not in company_html
    assert "另一分公司的订单" in company_html

    hq = login("hq_auditor")
    hq_page = hq.get("/hq/reconciliation")
    assert hq_page.status_code == 200
    hq_html = hq_page.get_data(as_text=True)
    assert TJ_ORDER in hq_html
    assert demo["QD"].name in hq_html
    assert demo["TJ"].name in hq_html
    assert login("qd_finance").get("/hq/reconciliation").status_code == 403

    english = login("qd_finance")
    english.post("/language", data={"locale": "en"})
    english_html = english.get("/reconciliation/").get_data(as_text=True)
    assert "Order of another company" in english_html
    assert TJ_ORDER not in english_html
