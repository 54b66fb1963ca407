"""Bank collection end to end: the bank simulator queries, pays and reverses over HTTP against the live app."""

import json
import time
from collections import Counter
import urllib.request
from datetime import date, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.billing.invariants import find_invariant_breaks
from app.billing.late_fees import post_late_fee
from app.billing.models import LedgerEntry
from app.billing.services import run_billing
from app.extensions import db
from app.integrations import bank
from app.network.models import Account
from app.payments.models import BankAgreement, BankTransaction, Payment, PaymentNotification, Refund
from app.payments.services import amount_owed
from app.tariffs.models import Season
from tools.bank_simulator import BankSimulator
from notification_mix import (
    BAD_MESSAGES, MESSAGES_PER_SCALE, MIX_SCALE, PAID_COPIES, PAID_TARGETS, WRONG_AMOUNT_COPIES, WRONG_AMOUNT_TARGETS,
    build_stream, count_containing, ledger_balances, logged_outcomes, put_first, rejection_reasons, send_stream,
)
from wechatpay_helpers import accounts_of, send

pytestmark = pytest.mark.xdist_group("bank")
BANK = "CEB"
TJ_BANK_ID = "TJ0001"
QD_BANK_ID = "QD0001"
KEY = b"0123456789abcdef0123456789abcdef-test-only"


@pytest.fixture
def bank_world(app, demo, import_fixture, live_server_url, monkeypatch, tmp_path):
    key_file = tmp_path / "ceb.key"
    key_file.write_bytes(KEY + b"\n")
    monkeypatch.setitem(app.config, "BANK_KEY_FILES", {BANK: str(key_file)})
    for code, bank_id in (("TJ", TJ_BANK_ID), ("QD", QD_BANK_ID)):
        import_fixture(code, f"{code}-shared.xlsx")
        run_billing(code, "2025-2026")
        db.session.add(BankAgreement(company_id=demo[code].id, bank_code=BANK, bank_company_id=bank_id))
    db.session.commit()
    return {
        "demo": demo,
        "tj": BankSimulator(live_server_url, BANK, KEY, TJ_BANK_ID),
        "qd": BankSimulator(live_server_url, BANK, KEY, QD_BANK_ID),
    }


def _season_id(company):
    return db.session.scalar(sa.select(Season.id).filter_by(company_id=company.id, name="2025-2026"))


def test_query_pay_and_duplicate_serial(bank_world):
    tj = bank_world["demo"]["TJ"]
    sim = bank_world["tj"]
    account = accounts_of(tj, 1)[0]
    owed = amount_owed(account).total

    status, reply, valid = sim.query(account.account_no)
    assert (status, valid) == (200, True)
    assert reply["RespCode"] == bank.OK
    assert reply["TotalDue"] == f"{owed:.2f}"
    assert "*" in reply["CustomerName"]

    status, reply, valid, seq = sim.pay(account.account_no, owed)
    assert valid
    assert reply["RespCode"] == bank.OK
    receipt_no = reply["ReceiptNo"]
    # The bank resends the same serial after a timeout: same answer, nothing posted again.
    again = sim.send(sim.message("pay", seq, BillKey=account.account_no, PayAmount=f"{owed:.2f}"))
    assert again[1] == reply
    db.session.expire_all()
    payments = db.session.scalars(sa.select(Payment).filter_by(account_id=account.id, channel="bank")).all()
    assert [(p.amount, p.receipt_no) for p in payments] == [(owed, receipt_no)]
    assert amount_owed(db.session.get(Account, account.id)).total == 0
    # Paying an account with nothing owed is refused.
    assert sim.pay(account.account_no, owed)[1]["RespCode"] == bank.NOTHING_OWED
    assert find_invariant_breaks(tj.id, _season_id(tj)) == []


def test_wrong_amount_unknown_account_and_company(bank_world):
    tj, qd = bank_world["demo"]["TJ"], bank_world["demo"]["QD"]
    sim = bank_world["tj"]
    account = accounts_of(tj, 1)[0]
    owed = amount_owed(account).total
    assert sim.pay(account.account_no, owed - Decimal("0.01"))[1]["RespCode"] == bank.AMOUNT_MISMATCH
    assert sim.pay("9999999999", Decimal("10.00"))[1]["RespCode"] == bank.NO_RECORD
    # QD's CompanyId cannot pay a TJ account: the account is looked up within QD only.
    assert bank_world["qd"].pay(account.account_no, owed)[1]["RespCode"] == bank.NO_RECORD
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count(Payment.id)).filter_by(channel="bank")) == 0
    assert amount_owed(db.session.get(Account, account.id)).total == owed
    assert db.session.scalar(sa.select(sa.func.count(BankTransaction.id)).filter_by(company_id=qd.id)) == 1


def test_same_day_reversal_restores_bill(bank_world):
    tj = bank_world["demo"]["TJ"]
    sim = bank_world["tj"]
    account = accounts_of(tj, 1)[0]
    owed = amount_owed(account).total
    _, reply, _, seq = sim.pay(account.account_no, owed)
    assert reply["RespCode"] == bank.OK

    _, reversal, valid, rev_seq = sim.reverse(seq, account.account_no, amount=owed)
    assert valid
    assert reversal["RespCode"] == bank.OK
    assert reversal["ReceiptNo"] == reply["ReceiptNo"]
    # The same reversal again, and a second reversal of the same payment, change nothing.
    assert sim.send(sim.message("reverse", rev_seq, OriginalTranSeq=seq))[1] == reversal
    assert sim.reverse(seq, account.account_no)[1]["RespCode"] == bank.OK

    db.session.expire_all()
    assert amount_owed(db.session.get(Account, account.id)).total == owed
    refunds = db.session.scalars(sa.select(Refund).filter_by(account_id=account.id)).all()
    assert [(r.kind, r.amount, r.status) for r in refunds] == [("reversal", owed, "succeeded")]
    lines = db.session.scalars(sa.select(LedgerEntry).filter_by(cause_type="refund", cause_id=refunds[0].id)).all()
    assert sum(line.amount for line in lines) == owed
    assert {line.kind for line in lines} == {"reversal"}
    assert find_invariant_breaks(tj.id, _season_id(tj)) == []
    # After the reversal the bill can be paid again.
    assert sim.pay(account.account_no, owed)[1]["RespCode"] == bank.OK
    # The reconciliation file of the day: payment, reversal and the new payment, net = owed.
    lines = bank.parse_reconciliation_file(sim.reconciliation_file(), BANK, TJ_BANK_ID)
    assert [(line.kind, line.amount) for line in lines] == [("payment", owed), ("reversal", owed), ("payment", owed)]


def test_reversal_of_unknown_or_old_payment(bank_world):
    sim = bank_world["tj"]
    account = accounts_of(bank_world["demo"]["TJ"], 1)[0]
    owed = amount_owed(account).total
    # Reversing a payment never booked succeeds with nothing to undo.
    _, reply, _, _ = sim.reverse("NEVER-BOOKED", account.account_no)
    assert reply["RespCode"] == bank.OK
    assert "ReceiptNo" not in reply
    # A payment of yesterday's trade date cannot be reversed today.
    yesterday = f"{bank.local_today() - timedelta(days=1):%Y%m%d}"
    _, paid, _, seq = sim.pay(account.account_no, owed, tran_date=yesterday)
    assert paid["RespCode"] == bank.OK
    _, reply, _, _ = sim.reverse(seq, account.account_no, tran_date=yesterday)
    assert reply["RespCode"] == bank.REVERSAL_TOO_LATE
    db.session.expire_all()
    assert amount_owed(db.session.get(Account, account.id)).total == 0
    assert db.session.scalar(sa.select(sa.func.count(Refund.id))) == 0


def test_payment_after_its_reversal_rejected(bank_world):
    sim = bank_world["tj"]
    account = accounts_of(bank_world["demo"]["TJ"], 1)[0]
    owed = amount_owed(account).total
    late = sim.message("pay", BillKey=account.account_no, PayAmount=f"{owed:.2f}")
    # The bank timed out on the payment and reversed it, and then the payment arrives.
    _, reversal, _, _ = sim.reverse(late["TranSeq"], account.account_no)
    assert reversal["RespCode"] == bank.OK
    assert "ReceiptNo" not in reversal
    _, reply, valid = sim.send(late)
    assert valid
    assert reply["RespCode"] == bank.ALREADY_REVERSED
    assert sim.send(late)[1] == reply

    db.session.expire_all()
    assert amount_owed(db.session.get(Account, account.id)).total == owed
    assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == 0
    # The account can still be paid under a new serial.
    assert sim.pay(account.account_no, owed)[1]["RespCode"] == bank.OK


def test_tampered_stale_and_wrong_key_rejected(bank_world):
    sim = bank_world["tj"]
    account = accounts_of(bank_world["demo"]["TJ"], 1)[0]
    owed = amount_owed(account).total
    message = sim.message("pay", BillKey=account.account_no, PayAmount=f"{owed:.2f}")
    body = json.dumps(message).encode()
    headers = bank.signed_headers(KEY, body)
    tampered = body.replace(f"{owed:.2f}".encode(), b"0.01")
    request = urllib.request.Request(sim.url, data=tampered, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        tampered_reply = json.loads(response.read())

    cases = {
        "tampered": tampered_reply,
        "stale": sim.send(message, timestamp=int(time.time()) - bank.REPLAY_WINDOW_SECONDS - 1)[1],
        "wrong_key": sim.send(message, key=b"x" * 40)[1],
    }
    assert {name: reply["RespCode"] for name, reply in cases.items()} == {
        "tampered": bank.SIGNATURE_ERROR, "stale": bank.SIGNATURE_ERROR, "wrong_key": bank.SIGNATURE_ERROR,
    }
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == 0
    outcomes = db.session.scalars(sa.select(PaymentNotification.outcome).filter_by(channel="bank")).all()
    assert outcomes == ["rejected"] * 3


def test_reconciliation_file_rules():
    day = "20260110"
    good = f"2|100.00\n{day}|S1|1201000001|150.00|counter|缴费\n{day}|S2|1201000001|50.00|counter|冲正\n".encode()
    lines = bank.parse_reconciliation_file(good, BANK, TJ_BANK_ID)
    assert [(l.channel, l.merchant_id, l.channel_txn_id, l.kind, l.amount) for l in lines] == [
        ("bank:CEB", TJ_BANK_ID, f"{day}:S1", "payment", Decimal("150.00")),
        ("bank:CEB", TJ_BANK_ID, f"{day}:S2", "reversal", Decimal("50.00")),
    ]
    assert lines[0].occurred_at.utcoffset() == timedelta(hours=8)
    bad = {
        b"3|100.00\n" + good.split(b"\n", 1)[1]: "笔数为 3",
        b"2|200.00\n" + good.split(b"\n", 1)[1]: "总金额为 200.00",
        f"1|1.00\n{day}|S1|1|1.001|counter|缴费\n".encode(): "第 2 行，列「缴费金额」，值「1.001」",
        f"1|1.00\n{day}|S1|1|1.00|counter|退货\n".encode(): "第 2 行，列「交易类型」，值「退货」",
        b"": "空文件",
    }
    for data, message in bad.items():
        with pytest.raises(bank.channel.StatementError, match=message):
            bank.parse_reconciliation_file(data, BANK, TJ_BANK_ID)


def test_mixed_requests_exact_balances(bank_world):
    """2,000 requests (× HEATFLOW_NOTIFICATION_MIX_SCALE): resent serials, reordering, same-day reversals, tampering, bad keys, stale, wrong amounts.

    The bank pays whole bills only, so a wrong amount is rejected with DEF0002 and logged as
    ignored rather than held for review as the online channels do.
    """
    scale = MIX_SCALE
    tj = bank_world["demo"]["TJ"]
    sim = bank_world["tj"]
    accounts = accounts_of(tj, PAID_TARGETS + WRONG_AMOUNT_TARGETS)
    assert len(accounts) == PAID_TARGETS + WRONG_AMOUNT_TARGETS
    paid, mismatched = accounts[:PAID_TARGETS], accounts[PAID_TARGETS:]
    # The last 8 paid accounts are reversed the same day: 15 copies of the payment, 10 of the reversal.
    not_reversed, reversed_ = paid[:-8], paid[-8:]
    owed_before = {a.id: amount_owed(a).total for a in accounts}
    balances_before = ledger_balances(list(owed_before))
    requests = {a.id: sim.message("pay", BillKey=a.account_no, PayAmount=f"{owed_before[a.id]:.2f}", SubChannel="counter") for a in paid}
    requests.update({
        a.id: sim.message("pay", BillKey=a.account_no, PayAmount=f"{owed_before[a.id] - Decimal('0.01'):.2f}") for a in mismatched
    })
    reversals = {a.id: sim.message("reverse", OriginalTranSeq=requests[a.id]["TranSeq"], BillKey=a.account_no) for a in reversed_}
    unknown_company = "ZZ0009"

    messages = build_stream(
        20260112,
        [("valid_pay", [a.id for a in not_reversed], PAID_COPIES * scale), ("valid_pay", [a.id for a in reversed_], 15 * scale),
         ("valid_reversal", [a.id for a in reversed_], 10 * scale),
         ("wrong_amount", [a.id for a in mismatched], WRONG_AMOUNT_COPIES * scale)],
        ("tampered", "wrong_key", "stale", "unknown_company"), [a.id for a in paid], scale,
    )
    # The bank sends each reversal after its payment, but copies of either may arrive in any order after that.
    put_first(messages, "valid_pay", "valid_reversal")
    assert len(messages) == MESSAGES_PER_SCALE * scale

    def deliver(message):
        fields = reversals[message.target] if message.kind == "valid_reversal" else requests[message.target]
        if message.kind == "unknown_company":
            fields = dict(fields, CompanyId=unknown_company)
        body = json.dumps(fields, ensure_ascii=False).encode("utf-8")
        offset = -bank.REPLAY_WINDOW_SECONDS - 1 if message.kind == "stale" else message.offset
        headers = bank.signed_headers(b"x" * 40 if message.kind == "wrong_key" else KEY, body, timestamp=int(time.time()) + offset)
        if message.kind == "tampered":
            body = body.replace(f'"PayAmount": "{fields["PayAmount"]}"'.encode(), b'"PayAmount": "0.01"')
        status, reply = send(sim.url, body, headers)
        assert status == 200, reply
        return json.loads(reply)["RespCode"]

    replies = send_stream(messages, deliver)
    bad = BAD_MESSAGES * scale // 4
    assert replies == {
        ("valid_pay", bank.OK): 920 * scale, ("valid_reversal", bank.OK): 80 * scale,
        ("wrong_amount", bank.AMOUNT_MISMATCH): 40 * scale, ("tampered", bank.SIGNATURE_ERROR): bad,
        ("wrong_key", bank.SIGNATURE_ERROR): bad, ("stale", bank.SIGNATURE_ERROR): bad, ("unknown_company", bank.BAD_REQUEST): bad,
    }

    db.session.expire_all()
    balances = ledger_balances(list(owed_before))
    for account in not_reversed:
        assert balances[account.id] == balances_before[account.id] - owed_before[account.id], account.account_no
        assert amount_owed(db.session.get(Account, account.id)).total == 0
    for account in reversed_ + mismatched:
        assert balances[account.id] == balances_before[account.id], account.account_no
        assert amount_owed(db.session.get(Account, account.id)).total == owed_before[account.id]
    reversals_done = db.session.scalars(sa.select(Refund).filter_by(kind="reversal")).all()
    assert sorted((r.account_id, r.amount, r.status) for r in reversals_done) == sorted(
        (a.id, owed_before[a.id], "succeeded") for a in reversed_
    )
    assert db.session.scalar(sa.select(sa.func.count(Payment.id)).filter_by(channel="bank")) == PAID_TARGETS
    assert find_invariant_breaks(tj.id, _season_id(tj)) == []

    outcomes = logged_outcomes("bank")
    assert outcomes == {"accepted": 1000 * scale, "ignored": 40 * scale, "rejected": 4 * bad}
    answered = Counter(db.session.scalars(sa.select(PaymentNotification.reason).filter_by(channel="bank", outcome="accepted")))
    assert answered == {f"{bank.OK} 成功": 48, f"{bank.OK} repeated request": 1000 * scale - 48}
    mismatch_reasons = Counter(db.session.scalars(sa.select(PaymentNotification.reason).filter_by(channel="bank", outcome="ignored")))
    assert count_containing(mismatch_reasons, "与应缴金额") == 8
    assert mismatch_reasons[f"{bank.AMOUNT_MISMATCH} repeated request"] == 40 * scale - 8
    reasons = rejection_reasons("bank")
    assert reasons["invalid signature"] == 2 * bad
    assert reasons[f"CompanyId '{unknown_company}' is unknown for bank '{BANK}'"] == bad
    assert count_containing(reasons, f"outside the {bank.REPLAY_WINDOW_SECONDS}-second window") == bad


def test_late_fees_queried_paid_and_reversed(bank_world):
    # TJ-0001031 owes arrears 1960.43 and 136.32 m² × 25.00 = 3408.00 for 2025-2026. Its late
    # fee as of 2026-01-31 is 3408.00 × 0.002 × 31 = 211.296, posted as 211.30, so the bank
    # must collect 1960.43 + 3408.00 + 211.30 = 5579.73.
    tj = bank_world["demo"]["TJ"]
    sim = bank_world["tj"]
    account = db.session.scalar(sa.select(Account).filter_by(company_id=tj.id, legacy_no="TJ-0001031"))
    season = db.session.get(Season, _season_id(tj))
    assert post_late_fee(account, season, date(2026, 1, 31)).amount == Decimal("211.30")
    db.session.commit()

    _, reply, valid = sim.query(account.account_no)
    assert valid
    assert reply["Arrears"] == "1960.43"
    assert reply["Seasons"] == [{"Season": "2025-2026", "Amount": "3408.00", "LateFee": "211.30"}]
    assert reply["LateFeeTotal"] == "211.30"
    assert reply["TotalDue"] == "5579.73"

    _, paid, _, seq = sim.pay_due(account.account_no)
    assert paid["RespCode"] == bank.OK
    assert paid["PayAmount"] == "5579.73"
    db.session.expire_all()
    payment = db.session.scalar(sa.select(Payment).filter_by(account_id=account.id, channel="bank"))
    paid_lines = db.session.scalars(sa.select(LedgerEntry).filter_by(cause_type="payment", cause_id=payment.id)).all()
    assert sorted((line.kind, line.amount) for line in paid_lines) == [
        ("late_fee_payment", Decimal("-211.30")), ("payment", Decimal("-3408.00")), ("payment", Decimal("-1960.43")),
    ]
    assert amount_owed(db.session.get(Account, account.id)).total == 0
    # A paid late fee leaves nothing for the next query to list.
    assert sim.query(account.account_no)[1]["Seasons"] == []
    assert find_invariant_breaks(tj.id, season.id) == []

    _, reversal, _, _ = sim.reverse(seq, account.account_no, amount=Decimal("5579.73"))
    assert reversal["RespCode"] == bank.OK
    db.session.expire_all()
    refund = db.session.scalar(sa.select(Refund).filter_by(payment_id=payment.id))
    assert (refund.kind, refund.amount, refund.status) == ("reversal", Decimal("5579.73"), "succeeded")
    undone = db.session.scalars(sa.select(LedgerEntry).filter_by(cause_type="refund", cause_id=refund.id)).all()
    assert sorted((line.kind, line.amount) for line in undone) == [
        ("late_fee_refund", Decimal("211.30")), ("reversal", Decimal("1960.43")), ("reversal", Decimal("3408.00")),
    ]
    owed = amount_owed(db.session.get(Account, account.id))
    assert owed.total == Decimal("5579.73")
    assert owed.late_fees_outstanding == Decimal("211.30")
    assert find_invariant_breaks(tj.id, season.id) == []
    assert sim.query(account.account_no)[1]["TotalDue"] == "5579.73"
