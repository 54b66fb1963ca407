"""Daily reconciliation of WeChat Pay payments against statement lines, and the WeChat trade bill parser."""

import io
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from app.clock import LOCAL_TIME
from app.extensions import db
from app.integrations.statement import StatementLine
from app.network.models import Account
from app.payments.models import Payment, ReconciliationItem, ReconciliationRun, Refund, WechatMerchant
from app.payments.reconciliation import (
    ReconciliationError, parse_statement, reconcile, resolve_item, store_statement,
)
from app.tasks.reconciliation import reconcile_day_task

DAY = date(2025, 12, 3)
SUB_MCHID = "1900000111"


def _at(hour, minute=0, day=DAY):
    # In UTC, as the app stores times; it is the same moment as the local time.
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=LOCAL_TIME).astimezone(timezone.utc)


@pytest.fixture
def tj_wechat(tj_billed, demo):
    """Three WeChat payments of TJ on DAY (100.00, 200.00, 300.00) and one on the next day."""
    db.session.add(WechatMerchant(company_id=demo["TJ"].id, sub_mchid=SUB_MCHID))
    account_id = db.session.scalar(sa.select(Account.id).filter_by(company_id=demo["TJ"].id).order_by(Account.id).limit(1))
    rows = [("4200000001", "100.00", _at(9)), ("4200000002", "200.00", _at(12, 30)), ("4200000003", "300.00", _at(23, 59)),
            ("4200000009", "900.00", _at(0, 5, date(2025, 12, 4)))]
    for number, (txn, amount, paid_at) in enumerate(rows, start=1):
        db.session.add(Payment(
            company_id=demo["TJ"].id, account_id=account_id, amount=Decimal(amount), method="wechat", channel="wechat",
            paid_at=paid_at, receipt_no=f"TJ-2025-9{number:05d}", channel_transaction_id=txn,
        ))
    db.session.commit()
    return demo["TJ"]


def _line(txn, amount, at, kind="payment", merchant=SUB_MCHID):
    return StatementLine("wechatpay", merchant, txn, None, kind, Decimal(amount), at)


def _items(run):
    return {(i.channel_txn_id, i.difference): i for i in db.session.scalars(sa.select(ReconciliationItem).filter_by(run_id=run.id))}


def test_differences_found(tj_wechat):
    lines = [
        _line("4200000001", "100.00", _at(9, 0)),          # matched
        _line("4200000002", "199.00", _at(12, 30)),        # amount differs: 200.00 ours, 199.00 theirs
        _line("4200000007", "50.00", _at(15)),             # missing on our side
        # 4200000003 (300.00) is missing on theirs
    ]
    run = reconcile(tj_wechat.id, "wechatpay", SUB_MCHID, DAY, lines)
    assert run.matched == 1
    assert run.differences == 3
    # Ours: 100 + 200 + 300 = 600.00; theirs: 100 + 199 + 50 = 349.00.
    assert run.our_total == Decimal("600.00")
    assert run.their_total == Decimal("349.00")
    items = _items(run)
    assert set(items) == {("4200000002", "amount_differs"), ("4200000007", "missing_ours"), ("4200000003", "missing_theirs")}
    assert items[("4200000002", "amount_differs")].our_amount == Decimal("200.00")
    assert items[("4200000002", "amount_differs")].their_amount == Decimal("199.00")
    assert items[("4200000003", "missing_theirs")].payment_id is not None
    assert items[("4200000007", "missing_ours")].our_amount is None


def test_rerun_is_idempotent_and_keeps_resolutions(tj_wechat, cashier):
    lines = [_line("4200000001", "100.00", _at(9)), _line("4200000002", "200.00", _at(12, 30)), _line("4200000007", "50.00", _at(15))]
    run = reconcile(tj_wechat.id, "wechatpay", SUB_MCHID, DAY, lines)
    first = _items(run)
    assert set(first) == {("4200000007", "missing_ours"), ("4200000003", "missing_theirs")}
    resolve_item(first[("4200000007", "missing_ours")], "渠道重复扣款，已原路退回", cashier("tj_finance"))

    again = reconcile(tj_wechat.id, "wechatpay", SUB_MCHID, DAY, lines)
    assert again.id == run.id
    assert again.runs == 2
    second = _items(again)
    assert {k: v.id for k, v in second.items()} == {k: v.id for k, v in first.items()}
    assert second[("4200000007", "missing_ours")].status == "resolved"
    assert db.session.scalar(sa.select(sa.func.count(ReconciliationRun.id))) == 1

    # The channel's corrected statement has 4200000003: its open difference goes away.
    fixed = reconcile(tj_wechat.id, "wechatpay", SUB_MCHID, DAY, lines + [_line("4200000003", "300.00", _at(23, 59))])
    assert set(_items(fixed)) == {("4200000007", "missing_ours")}
    assert fixed.matched == 3


def test_resolution_needs_reason(tj_wechat, cashier):
    run = reconcile(tj_wechat.id, "wechatpay", SUB_MCHID, DAY, [])
    item = next(iter(_items(run).values()))
    for blank in (" ", "\u200b", "\u3000\ufeff"):
        with pytest.raises(ReconciliationError, match="请填写处理说明"):
            resolve_item(item, blank, cashier("tj_finance"))
    resolve_item(item, "渠道次日到账", cashier("tj_finance"))
    with pytest.raises(ReconciliationError, match="已由"):
        resolve_item(item, "再次处理", cashier("tj_finance"))


def test_lines_of_other_day_or_merchant_rejected(tj_wechat):
    with pytest.raises(ReconciliationError, match="不在 2025-12-03 当天"):
        reconcile(tj_wechat.id, "wechatpay", SUB_MCHID, DAY, [_line("4200000009", "900.00", _at(0, 5, date(2025, 12, 4)))])
    with pytest.raises(ReconciliationError, match="不是 wechatpay 商户 1900000111"):
        reconcile(tj_wechat.id, "wechatpay", SUB_MCHID, DAY, [_line("4200000001", "100.00", _at(9), merchant="1900000999")])
    assert db.session.scalar(sa.select(sa.func.count(ReconciliationRun.id))) == 0


def _succeeded_refund(payment_txn, amount, out_refund_no, refund_id, requested_at, completed_at, decided_at=None):
    payment = db.session.scalar(sa.select(Payment).filter_by(channel_transaction_id=payment_txn))
    refund = Refund(
        company_id=payment.company_id, payment_id=payment.id, account_id=payment.account_id, amount=Decimal(amount),
        kind="refund", channel="wechat", status="succeeded", out_refund_no=out_refund_no, channel_refund_id=refund_id,
        requested_at=requested_at, decided_at=decided_at, completed_at=completed_at,
    )
    db.session.add(refund)
    db.session.commit()
    return refund


def test_refund_after_midnight_on_channel_day(tj_wechat):
    before, after = DAY - timedelta(days=1), DAY + timedelta(days=1)
    # Sent at 23:59 and confirmed by the channel's notification after midnight.
    _succeeded_refund("4200000002", "20.00", "RTJ1", "50300000001", _at(23, 59), _at(0, 1, after))
    # Requested the day before, sent when approved at 23:58, confirmed after midnight.
    _succeeded_refund("4200000001", "30.00", "RTJ2", "50300000002", _at(10, 0, before), _at(0, 2, after), decided_at=_at(23, 58))
    # The channel's bill dates both refunds by when it accepted them.
    lines = [
        _line("4200000001", "100.00", _at(9)), _line("4200000002", "200.00", _at(12, 30)), _line("4200000003", "300.00", _at(23, 59)),
        _line("50300000001", "20.00", _at(23, 59), kind="refund"), _line("50300000002", "30.00", _at(23, 58), kind="refund"),
    ]
    run = reconcile(tj_wechat.id, "wechatpay", SUB_MCHID, DAY, lines)
    assert _items(run) == {}
    assert run.matched == 5
    assert run.our_total == run.their_total == Decimal("550.00")

    # The next day's bill has neither refund, and neither is ours on that day.
    next_run = reconcile(tj_wechat.id, "wechatpay", SUB_MCHID, after, [_line("4200000009", "900.00", _at(0, 5, after))])
    assert _items(next_run) == {}
    assert next_run.matched == 1


BILL = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
    "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
    "手续费,费率,订单金额,申请退款金额,费率备注\r\n"
    "`2025-12-03 09:00:00,`wx01,`1900000100,`1900000111,`,`4200000001,`TJ20251203a,`oX1,`NATIVE,`SUCCESS,`CMB_DEBIT,`CNY,"
    "`100.00,`0.00,`0,`0,`0.00,`0.00,`,`,`热费,`110001001010101,`0.60000,`0.60%,`100.00,`0.00,`\r\n"
    "`2025-12-03 12:30:00,`wx01,`1900000100,`1900000111,`,`4200000002,`TJ20251203b,`oX2,`NATIVE,`SUCCESS,`CMB_DEBIT,`CNY,"
    "`200.00,`0.00,`0,`0,`0.00,`0.00,`,`,`热费,`110001001010102,`1.20000,`0.60%,`200.00,`0.00,`\r\n"
    "`2025-12-03 16:00:00,`wx01,`1900000100,`1900000111,`,`4200000002,`TJ20251203b,`oX2,`NATIVE,`REFUND,`CMB_DEBIT,`CNY,"
    "`0.00,`0.00,`50300000001,`R1,`20.00,`0.00,`ORIGINAL,`SUCCESS,`热费,`110001001010102,`-0.12000,`0.60%,`0.00,`20.00,`\r\n"
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n"
    "`3,`300.00,`20.00,`0.00,`1.68000,`300.00,`20.00\r\n"
)


def test_wechat_bill_parsed():
    lines = parse_statement("wechatpay", SUB_MCHID, DAY, BILL.encode("utf-8"))
    assert [(l.kind, l.channel_txn_id, l.amount) for l in lines] == [
        ("payment", "4200000001", Decimal("100.00")),
        ("payment", "4200000002", Decimal("200.00")),
        ("refund", "50300000001", Decimal("20.00")),
    ]
    assert lines[0].merchant_id == "1900000111"
    assert lines[0].out_trade_no == "TJ20251203a"
    assert lines[0].occurred_at == _at(9)


def test_task_reconciles_stored_statement(tj_wechat):
    store_statement(tj_wechat.id, "wechatpay", SUB_MCHID, DAY, "bill.csv", BILL.encode("utf-8"))
    # 4200000001 and …02 match; the refund 50300000001 and the payment …03 are differences.
    # Called directly: the task body runs here, as an eager Celery would run it.
    assert reconcile_day_task(tj_wechat.id, "wechatpay", SUB_MCHID, DAY.isoformat(), download=False) == 2
    assert reconcile_day_task(tj_wechat.id, "wechatpay", SUB_MCHID, DAY.isoformat(), download=False) == 2
    run = db.session.scalar(sa.select(ReconciliationRun))
    assert run.runs == 2
    assert run.matched == 2
    # Theirs: 100.00 + 200.00 − 20.00 refund = 280.00.
    assert run.their_total == Decimal("280.00")
    assert set(_items(run)) == {("50300000001", "missing_ours"), ("4200000003", "missing_theirs")}


@pytest.mark.parametrize(("bill", "english"), [
    (BILL.replace("`100.00,`0.00,`0,", "`1O0.00,`0.00,`0,", 1),
     "WeChat Pay statement line 2, column &#34;应结订单金额&#34;, value &#34;1O0.00&#34;: is not an amount in yuan with at most two decimals"),
    (BILL.replace("`SUCCESS,`CMB_DEBIT", "`PAYING,`CMB_DEBIT", 1),
     "WeChat Pay statement line 2, column &#34;交易状态&#34;, value &#34;PAYING&#34;: must be SUCCESS, REFUND or REVOKED"),
    (BILL.replace(",应结订单金额", "", 1),
     "Line 1 of the WeChat Pay statement lacks the columns 应结订单金额; download the trade bill with bill_type=ALL."),
])
def test_statement_upload_errors_english(bill, english, tj_wechat, login):
    finance = login("tj_finance")
    finance.post("/language", data={"locale": "en"})

    response = finance.post("/reconciliation/statements", data={
        "merchant_id": SUB_MCHID, "day": DAY.isoformat(), "statement": (io.BytesIO(bill.encode()), "bill.csv"),
    })
    page = finance.get(response.headers["Location"]).get_data(as_text=True)

    assert english in page
    assert db.session.scalar(sa.select(sa.func.count(ReconciliationRun.id))) == 0


@pytest.mark.parametrize(("channel", "content", "chinese", "english"), [
    ("alipay", "#支付宝业务明细查询\n支付宝交易号,商户订单号\n".encode("gb18030"),
     "支付宝业务明细没有「#…业务明细列表…」开始行",
     "The Alipay transaction details file has no \"#…业务明细列表…\" start line"),
    ("bank:ICBC", "2|150.00\n20251203|B1|TJ-1|100.00|app|缴费\n".encode(),
     "银行对账文件第 1 行笔数为 2，明细有 1 行",
     "Line 1 of the bank reconciliation file states 2 transactions, but it has 1 detail lines"),
    ("bank:ICBC", "2|150.00\n20251203|B1|TJ-1|100.00|app|退货\n20251203|B2|TJ-2|50.00|app|缴费\n".encode(),
     "银行对账文件第 2 行，列「交易类型」，值「退货」：应为「缴费」或「冲正」",
     "bank reconciliation file line 2, column \"交易类型\", value \"退货\": must be \"缴费\" or \"冲正\""),
])
def test_statement_errors_follow_language(app_ctx, channel, content, chinese, english):
    # The daily task parses these statements without a request, so the language is set here.
    with force_locale("en"), pytest.raises(ReconciliationError) as english_error:
        parse_statement(channel, "M1", DAY, content)
    with force_locale("zh_CN"), pytest.raises(ReconciliationError) as chinese_error:
        parse_statement(channel, "M1", DAY, content)

    assert english in str(english_error.value)
    assert chinese in str(chinese_error.value)
