"""Daily reconciliation per channel and merchant: statements downloaded from the simulators over HTTP.

Each test pays and refunds through the real channel flow, then plants differences in the
simulator's statement (an amount changed, a line removed, a line only the channel has) and
checks that the downloaded day finds exactly those, and that a rerun adds nothing.
"""

import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from decimal import Decimal

import pytest
import sqlalchemy as sa

from alipay_helpers import QD_APP_ID, TJ_APP_ID
from app.clock import LOCAL_TIME
from app.extensions import db
from app.integrations import alipay, bank, wechatpay
from app.payments import channels
from app.org.models import User
from app.payments.daily_reconciliation import reconciliation_targets
from app.payments.models import ChannelStatement, Payment, ReconciliationItem, ReconciliationRun, Refund
from app.payments.refunds import request_refund
from app.payments.reconciliation import resolve_item
from app.tasks.reconciliation import reconcile_all_task, reconcile_day_task
from tools import wechatpay_simulator
from test_bank import BANK, KEY, TJ_BANK_ID, bank_world  # noqa: F401  (fixture)
from tools.bank_simulator import BankSimulator
from wechatpay_helpers import SUB_MCHIDS, accounts_of, paid_online_order, wait_for

pytestmark = pytest.mark.xdist_group("daily-reconciliation")
REPOSITORY = Path(__file__).resolve().parents[2]
D = Decimal
GZIP_MAGIC = b"\x1f\x8b"



def _payment_of(account, channel, simulator, merchant):
    return db.session.get(Payment, paid_online_order(account, channel, simulator, merchant).payment_id)

def _today():
    return datetime.now(LOCAL_TIME).date()


def _user(username):
    return db.session.scalar(sa.select(User).filter_by(username=username))


def _differences(company_id, channel, merchant_id, day):
    db.session.expire_all()
    run = db.session.scalar(sa.select(ReconciliationRun).filter_by(company_id=company_id, channel=channel, merchant_id=merchant_id, day=day))
    items = db.session.scalars(sa.select(ReconciliationItem).filter_by(run_id=run.id)).all()
    return run, {(item.line_kind, item.channel_txn_id): item.difference for item in items}


def _item_count():
    return db.session.scalar(sa.select(sa.func.count(ReconciliationItem.id)))


def test_wechat_day_planted_differences(wechat):
    tj = wechat["demo"]["TJ"]
    simulator = wechat["simulator"]
    merchant = SUB_MCHIDS["TJ"]
    payments = [_payment_of(account, "wechat", simulator, merchant) for account in accounts_of(tj, 3)]
    refund = request_refund(payments[0].id, "10.00", "面积核减", _user("tj_cashier"))
    assert wait_for(lambda: (db.session.expire_all() or db.session.get(Refund, refund.id).status) == "succeeded")
    day = _today()

    with simulator.lock:
        rows = simulator.bill_rows
        # The channel settled one fen less on the second payment, has no third payment and
        # reports a payment we never saw.
        next(r for r in rows if r["transaction_id"] == payments[1].channel_transaction_id)["total_fen"] -= 1
        rows.remove(next(r for r in rows if r["transaction_id"] == payments[2].channel_transaction_id))
        rows.append({**rows[0], "transaction_id": "4200000000000000000000009999", "out_trade_no": "TJFOREIGN0001", "total_fen": 500})

    assert reconcile_day_task(tj.id, "wechatpay", merchant, day.isoformat()) == 3
    run, found = _differences(tj.id, "wechatpay", merchant, day)
    assert found == {
        ("payment", payments[1].channel_transaction_id): "amount_differs",
        ("payment", payments[2].channel_transaction_id): "missing_theirs",
        ("payment", "4200000000000000000000009999"): "missing_ours",
    }
    # The first payment and its refund (keyed by WeChat's refund id) match.
    assert run.matched == 2
    assert db.session.get(Refund, refund.id).channel_refund_id.startswith("50000")
    statement = db.session.scalar(sa.select(ChannelStatement).filter_by(company_id=tj.id, channel="wechatpay", day=day))
    assert statement.content.startswith("交易时间".encode())
    # The bill was requested and served gzipped, and is stored decompressed.
    assert simulator.bill_requests[-1]["tar_type"] == "GZIP"
    assert all(data[:2] == GZIP_MAGIC for data in simulator.bill_files.values())

    # The same day again: the same work items, none added.
    assert reconcile_day_task(tj.id, "wechatpay", merchant, day.isoformat()) == 3
    run, again = _differences(tj.id, "wechatpay", merchant, day)
    assert again == found
    assert run.runs == 2
    assert _item_count() == 3


def test_wechat_bill_gzip_or_plain(wechat, monkeypatch):
    simulator = wechat["simulator"]
    merchant = SUB_MCHIDS["TJ"]
    _payment_of(accounts_of(wechat["demo"]["TJ"], 1)[0], "wechat", simulator, merchant)
    adapter = channels.wechat_channel()
    day = _today()

    gzipped = wechatpay.download_trade_bill(adapter.api_base, adapter.credentials, merchant, day)
    plain = wechatpay.download_trade_bill(adapter.api_base, adapter.credentials, merchant, day, compressed=False)
    assert gzipped == plain
    assert plain.startswith("交易时间".encode())
    assert [request.get("tar_type") for request in simulator.bill_requests] == ["GZIP", None]
    assert sorted(data[:2] == GZIP_MAGIC for data in simulator.bill_files.values()) == [False, True]

    # A file that claims to be gzip but is not is rejected before its hash is checked.
    monkeypatch.setattr(wechatpay_simulator.gzip, "compress", lambda data: GZIP_MAGIC + data)
    with pytest.raises(wechatpay.WechatPayError, match="not a valid GZIP file"):
        wechatpay.download_trade_bill(adapter.api_base, adapter.credentials, merchant, day)


def test_wechat_day_without_trades(wechat):
    tj = wechat["demo"]["TJ"]
    day = _today() - timedelta(days=3)
    # The channel answers NO_STATEMENT_EXIST; the day is reconciled as empty on both sides.
    assert reconcile_day_task(tj.id, "wechatpay", SUB_MCHIDS["TJ"], day.isoformat()) == 0
    run, found = _differences(tj.id, "wechatpay", SUB_MCHIDS["TJ"], day)
    assert (run.matched, found) == (0, {})


def test_alipay_day_planted_differences(alipay_world):
    demo = alipay_world["demo"]
    simulator = alipay_world["simulator"]
    tj_payments = [_payment_of(account, "alipay", simulator, TJ_APP_ID) for account in accounts_of(demo["TJ"], 3)]
    qd_payment = _payment_of(accounts_of(demo["QD"], 1)[0], "alipay", simulator, QD_APP_ID)
    refund = request_refund(tj_payments[0].id, "20.00", "面积核减", _user("tj_cashier"))
    assert refund.status == "succeeded"
    day = _today()

    with simulator.lock:
        rows = simulator.bill_rows
        next(r for r in rows if r["trade_no"] == tj_payments[1].channel_transaction_id)["amount"] += D("1.00")
        # The channel's bill lacks our refund and has a payment we never saw.
        rows.remove(next(r for r in rows if r["kind"] == "退款"))
        rows.append({**rows[0], "trade_no": "2026010122001499999999999999", "out_trade_no": "TJFOREIGN0002", "amount": D("8.00")})

    assert reconcile_day_task(demo["TJ"].id, "alipay", TJ_APP_ID, day.isoformat()) == 3
    run, found = _differences(demo["TJ"].id, "alipay", TJ_APP_ID, day)
    assert found == {
        ("payment", tj_payments[1].channel_transaction_id): "amount_differs",
        ("refund", f"{tj_payments[0].channel_transaction_id}:{refund.out_refund_no}"): "missing_theirs",
        ("payment", "2026010122001499999999999999"): "missing_ours",
    }
    assert run.matched == 2

    # QD's app authorised the group's ISV app: its bill is downloaded with QD's app_auth_token.
    assert reconcile_day_task(demo["QD"].id, "alipay", QD_APP_ID, day.isoformat()) == 0
    run, found = _differences(demo["QD"].id, "alipay", QD_APP_ID, day)
    assert (run.matched, found, run.our_total) == (1, {}, qd_payment.amount)
    bill_calls = [c for c in simulator.calls if c["method"] == "alipay.data.dataservice.bill.downloadurl.query"]
    assert [c["merchant"] for c in bill_calls] == [TJ_APP_ID, QD_APP_ID]

    assert reconcile_day_task(demo["TJ"].id, "alipay", TJ_APP_ID, day.isoformat()) == 3
    assert _item_count() == 3


def test_alipay_day_without_trades(alipay_world):
    demo = alipay_world["demo"]
    simulator = alipay_world["simulator"]
    day = _today() - timedelta(days=3)
    # Alipay replies with isp.bill_not_exist, so the adapter returns an empty statement, not an error.
    adapter = channels.alipay_channel(TJ_APP_ID)
    assert adapter.download_statement(TJ_APP_ID, day) == b""
    with pytest.raises(alipay.AlipayError) as raised:
        alipay.call(adapter.gateway, adapter.apps[TJ_APP_ID], "alipay.data.dataservice.bill.downloadurl.query",
                    {"bill_type": "trade", "bill_date": day.isoformat()})
    assert raised.value.sub_code == "isp.bill_not_exist"

    # The day reconciles as empty on both sides, for a direct app and for an ISV-authorised one.
    for company, app_id in ((demo["TJ"], TJ_APP_ID), (demo["QD"], QD_APP_ID)):
        assert reconcile_day_task(company.id, "alipay", app_id, day.isoformat()) == 0
        run, found = _differences(company.id, "alipay", app_id, day)
        assert (run.matched, run.our_total, run.their_total, found) == (0, 0, 0, {})
        statement = db.session.scalar(sa.select(ChannelStatement).filter_by(company_id=company.id, channel="alipay", day=day))
        assert statement.content == b""
        assert statement.filename.endswith("-empty")
    assert simulator.bill_files == {}


@pytest.fixture
def bank_files(bank_world, app, monkeypatch):
    """The TJ bank simulator also serving its reconciliation files, and the app configured to fetch them."""
    simulator = bank_world["tj"]
    url = simulator.serve_statements(0)
    monkeypatch.setitem(app.config, "BANK_STATEMENT_URLS", {BANK: url})
    yield bank_world
    simulator.stop()


def test_bank_day_planted_differences(bank_files):
    tj = bank_files["demo"]["TJ"]
    simulator = bank_files["tj"]
    accounts = accounts_of(tj, 4)
    serials = []
    for account in accounts:
        status, reply, valid, serial = simulator.pay(account.account_no, _owed(account))
        assert reply["RespCode"] == bank.OK
        serials.append(serial)
    # The last payment is reversed the same day: a 冲正 line on both sides.
    reversal = simulator.reverse(serials[3], accounts[3].account_no, amount=_paid_amount(serials[3]))
    assert reversal[1]["RespCode"] == bank.OK
    day = bank.local_today()
    trade_date = f"{day:%Y%m%d}"

    booked = simulator.booked
    second = next(i for i, row in enumerate(booked) if row[1] == serials[1])
    booked[second] = booked[second][:3] + (booked[second][3] + D("0.50"), booked[second][4])
    booked.remove(next(row for row in booked if row[1] == serials[2]))
    simulator.extra_rows.append((trade_date, "BFOREIGN0003", "110001009999999", D("66.00"), "缴费"))

    channel = f"bank:{BANK}"
    assert reconcile_day_task(tj.id, channel, TJ_BANK_ID, day.isoformat()) == 3
    run, found = _differences(tj.id, channel, TJ_BANK_ID, day)
    assert found == {
        ("payment", f"{trade_date}:{serials[1]}"): "amount_differs",
        ("payment", f"{trade_date}:{serials[2]}"): "missing_theirs",
        ("payment", f"{trade_date}:BFOREIGN0003"): "missing_ours",
    }
    # The first payment, the fourth and its reversal match.
    assert run.matched == 3
    assert reconcile_day_task(tj.id, channel, TJ_BANK_ID, day.isoformat()) == 3
    assert _item_count() == 3


def _owed(account):
    from app.payments.services import amount_owed

    return amount_owed(account).total


def _paid_amount(serial):
    return db.session.scalar(sa.select(Payment.amount).where(Payment.channel_transaction_id.like(f"%:{serial}")))


def test_bank_file_not_written_yet(bank_files):
    tj = bank_files["demo"]["TJ"]
    day = bank.local_today()
    bank_files["tj"].unready_days.add(f"{day:%Y%m%d}")
    # An eager task does not wait to ask again; nothing is stored or reconciled.
    assert reconcile_day_task(tj.id, f"bank:{BANK}", TJ_BANK_ID, day.isoformat()) is None
    assert db.session.scalar(sa.select(sa.func.count(ReconciliationRun.id))) == 0


def test_beat_job_covers_every_merchant(bank_files):
    demo = bank_files["demo"]
    day = bank.local_today() - timedelta(days=1)
    targets = reconciliation_targets()
    assert {(t.company_id, t.channel, t.merchant_id) for t in targets} == {
        (demo["TJ"].id, f"bank:{BANK}", TJ_BANK_ID), (demo["QD"].id, f"bank:{BANK}", "QD0001"),
    }
    # Eager Celery runs each queued merchant at once. Only TJ's bank simulator serves files,
    # so QD's download fails (it is logged) and TJ's empty day is reconciled.
    assert reconcile_all_task(day.isoformat()) == 2
    runs = db.session.scalars(sa.select(ReconciliationRun)).all()
    assert [(r.company_id, r.merchant_id, r.day, r.matched, r.differences) for r in runs] == [(demo["TJ"].id, TJ_BANK_ID, day, 0, 0)]


def test_resolved_item_survives_rerun(bank_files):
    tj = bank_files["demo"]["TJ"]
    simulator = bank_files["tj"]
    day = bank.local_today()
    simulator.extra_rows.append((f"{day:%Y%m%d}", "BFOREIGN0004", "110001009999998", D("12.00"), "缴费"))
    assert reconcile_day_task(tj.id, f"bank:{BANK}", TJ_BANK_ID, day.isoformat()) == 1
    item = db.session.scalar(sa.select(ReconciliationItem))
    resolve_item(item, "银行重复记账，已通知银行冲回", _user("tj_finance"))
    assert reconcile_day_task(tj.id, f"bank:{BANK}", TJ_BANK_ID, day.isoformat()) == 1
    db.session.expire_all()
    items = db.session.scalars(sa.select(ReconciliationItem)).all()
    assert [(i.id, i.status, i.resolution) for i in items] == [(item.id, "resolved", "银行重复记账，已通知银行冲回")]


def test_cli_reconciles_a_day(bank_files, app):
    day = bank.local_today()
    bank_files["tj"].extra_rows.append((f"{day:%Y%m%d}", "BFOREIGN0005", "110001009999997", D("3.00"), "缴费"))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["heat", "reconcile", "--date", day.isoformat(), "--company", "TJ"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"TJ bank:{BANK} {TJ_BANK_ID} {day}: 0 matched, 1 differences, run 1"
    # QD's bank serves no file here, so its line reports the error and the command fails.
    result = runner.invoke(args=["heat", "reconcile", "--date", day.isoformat(), "--channel", f"bank:{BANK}"])
    assert result.exit_code == 1
    assert f"TJ bank:{BANK} {TJ_BANK_ID} {day}: 0 matched, 1 differences, run 2" in result.output
    assert f"QD bank:{BANK} QD0001 {day}: failed:" in result.output
    bad = runner.invoke(args=["heat", "reconcile", "--date", "2026-13-01"])
    assert bad.exit_code == 1
    assert "is not a date" in bad.output


def test_page_button_queues_the_day(bank_files, login):
    day = bank.local_today() - timedelta(days=1)
    client = login("tj_finance")
    response = client.post("/reconciliation/run", data={"day": day.isoformat()}, follow_redirects=True)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    # tj_finance sees only TJ: one merchant, run at once by the eager Celery of the tests.
    assert f"已提交 1 个商户 {day} 的对账单下载和对账" in page
    assert "银行代收 CEB" in page
    runs = db.session.scalars(sa.select(ReconciliationRun)).all()
    assert [(r.merchant_id, r.day) for r in runs] == [(TJ_BANK_ID, day)]
    today = client.post("/reconciliation/run", data={"day": bank.local_today().isoformat()}, follow_redirects=True)
    assert "尚未结束" in today.get_data(as_text=True)


def test_cli_serves_statement_files(bank_world, app, live_server_url, monkeypatch, tmp_path):
    tj = bank_world["demo"]["TJ"]
    key_file = tmp_path / "ceb.key"
    key_file.write_bytes(KEY)
    journal = tmp_path / "ceb-TJ0001.journal"
    # A run of the command line books a payment into the journal.
    booking = BankSimulator(live_server_url, BANK, KEY, TJ_BANK_ID, journal=journal)
    first, second = accounts_of(tj, 2)
    assert booking.pay(first.account_no, _owed(first))[1]["RespCode"] == bank.OK
    today = bank.local_today()
    earlier = today - timedelta(days=2)
    prepared = tmp_path / "earlier.txt"
    prepared.write_text(f"1|66.00\n{earlier:%Y%m%d}|BPREPARED1|110001009999999|66.00|counter|缴费\n", encoding="utf-8")

    command = [
        sys.executable, "tools/bank_simulator.py", "--bank", BANK, "--company-id", TJ_BANK_ID, "--key-file", str(key_file),
        "--journal", str(journal), "serve-statements", "--port", "0", "--file", f"{earlier:%Y%m%d}={prepared}",
    ]
    server = subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = re.search(r"(http://127\.0\.0\.1:\d+)/statements/", server.stdout.readline())
        assert started, server.stderr.read()
        monkeypatch.setitem(app.config, "BANK_STATEMENT_URLS", {BANK: started[1]})
        channel = f"bank:{BANK}"
        assert reconcile_day_task(tj.id, channel, TJ_BANK_ID, today.isoformat()) == 0
        assert _differences(tj.id, channel, TJ_BANK_ID, today)[0].matched == 1
        # A payment booked while the server runs is in the next download of the day.
        assert booking.pay(second.account_no, _owed(second))[1]["RespCode"] == bank.OK
        assert reconcile_day_task(tj.id, channel, TJ_BANK_ID, today.isoformat()) == 0
        assert _differences(tj.id, channel, TJ_BANK_ID, today)[0].matched == 2
        # The day given with --file is served as prepared: a payment only the bank has.
        assert reconcile_day_task(tj.id, channel, TJ_BANK_ID, earlier.isoformat()) == 1
        run, found = _differences(tj.id, channel, TJ_BANK_ID, earlier)
        assert found == {("payment", f"{earlier:%Y%m%d}:BPREPARED1"): "missing_ours"}
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert server.returncode == 0
