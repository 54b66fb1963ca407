"""Channel secrets stay in their files: never in a log line or a database column.

Each test drives one channel end to end (payment notifications, refunds, the bank channel,
e-invoice issuing) with every logger at DEBUG, so SQLAlchemy also logs each statement with
its parameters. Then it searches every captured record and every text, JSON and binary
column of every table for the secrets the test configured. These are the WeChat Pay merchant
private key and APIv3 key, the Alipay app keys and app_auth_token, the bank's HMAC key and
the e-invoice app secret.

Records of the channel simulators (loggers under `tools.` and the simulator loggers) are
skipped: they stand for WeChat Pay, Alipay or the vendor, which hold these keys anyway.
"""

import logging
from decimal import Decimal

import pytest
import sqlalchemy as sa

from alipay_helpers import QD_AUTH_TOKEN, QD_APP_ID, TJ_APP_ID
from app.extensions import db
from app.org.models import User
from app.payments.models import OnlineOrder, Payment
from app.payments.online import create_online_order
from app.payments.refunds import request_refund
from app.payments.services import amount_owed, collect_payment
from app.tenancy import SYSTEM_SCOPE, scoped
from tests.integrations.test_bank import KEY as BANK_KEY
from tests.integrations.test_bank import bank_world  # noqa: F401  (fixture)
from tests.invoicing.conftest import APP_SECRET, einvoicing, staff, vendor  # noqa: F401  (fixtures)
from tests.processes.conftest import make_account  # noqa: F401  (fixture)
from wechatpay_helpers import SUB_MCHIDS, accounts_of, wait_for

pytestmark = pytest.mark.xdist_group("secrets")
SIMULATOR_LOGGERS = ("tools.", "wechatpay_simulator", "alipay_simulator", "einvoice_simulator")
# Shortest fragment searched for: a PEM line is 64 characters, a key's raw bytes longer.
MIN_FRAGMENT = 16


def _pem_fragments(path):
    """The PEM text of a key file and each of its base64 lines, so a re-wrapped or headerless copy is found too."""
    text = path.read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("-----")]
    return [text.strip(), "".join(lines), *[line for line in lines if len(line) >= MIN_FRAGMENT]]


def _secret_fragments(named_secrets):
    fragments = {}
    for name, value in named_secrets.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            text = item.decode() if isinstance(item, bytes) else item
            assert len(text) >= MIN_FRAGMENT or name.endswith("secret"), f"{name} is too short to search for reliably"
            fragments[text] = name
    return fragments


@pytest.fixture
def debug_logs(caplog):
    caplog.set_level(logging.DEBUG)
    sqlalchemy_logger = logging.getLogger("sqlalchemy.engine")
    previous = sqlalchemy_logger.level
    sqlalchemy_logger.setLevel(logging.DEBUG)
    yield caplog
    sqlalchemy_logger.setLevel(previous)


def _log_text(caplog):
    lines = []
    for record in caplog.records:
        if record.name.startswith(SIMULATOR_LOGGERS):
            continue
        lines.append(record.getMessage())
        if record.exc_text:
            lines.append(record.exc_text)
    return "\n".join(lines)


def _database_text():
    """Every text, JSON and binary value of every table, read under the system scope."""
    chunks = []
    with scoped(SYSTEM_SCOPE):
        db.session.expire_all()
        for table in db.metadata.sorted_tables:
            columns = [c for c in table.c if isinstance(c.type, (sa.String, sa.Text, sa.JSON, sa.LargeBinary))]
            if not columns:
                continue
            for row in db.session.execute(sa.select(*columns)):
                for value in row:
                    if value is None:
                        continue
                    if isinstance(value, bytes):
                        chunks.append(value.decode("latin-1"))
                    else:
                        chunks.append(str(value))
    return "\n".join(chunks)


def _assert_no_secret(caplog, named_secrets):
    fragments = _secret_fragments(named_secrets)
    logs = _log_text(caplog)
    stored = _database_text()

    # The capture must really hold the DEBUG output, or this test proves nothing.
    assert "SELECT" in logs, "SQLAlchemy statements were not captured at DEBUG"
    for fragment, name in fragments.items():
        assert fragment not in logs, f"{name} appears in the log"
        assert fragment not in stored, f"{name} is stored in the database"


def test_wechat_payment_and_refund_leak_no_key(wechat, debug_logs):
    tj = wechat["demo"]["TJ"]
    simulator = wechat["simulator"]
    keys = wechat["keys"]
    account = accounts_of(tj, 1)[0]
    order = create_online_order(account, "wechat")
    simulator.pay(SUB_MCHIDS["TJ"], order.out_trade_no)
    assert wait_for(lambda: (db.session.expire_all() or db.session.get(OnlineOrder, order.id).status) == "paid")
    payment_id = db.session.get(OnlineOrder, order.id).payment_id
    cashier = db.session.scalar(sa.select(User).filter_by(username="tj_cashier"))
    refund = request_refund(payment_id, "10.00", "面积核减", cashier)
    assert wait_for(lambda: (db.session.expire_all() or refund.status) == "succeeded")

    _assert_no_secret(debug_logs, {
        "WeChat Pay merchant private key": _pem_fragments(keys["merchant_file"]),
        "WeChat Pay APIv3 key": keys["apiv3"],
    })


def test_alipay_payments_and_refund_leak_no_key(alipay_world, debug_logs):
    demo = alipay_world["demo"]
    simulator = alipay_world["simulator"]
    keys = alipay_world["keys"]
    paid = []
    for code, app_id in (("TJ", TJ_APP_ID), ("QD", QD_APP_ID)):
        account = accounts_of(demo[code], 1)[0]
        order = create_online_order(account, "alipay")
        simulator.pay(app_id, order.out_trade_no)
        paid.append(order.id)
    assert wait_for(lambda: all((db.session.expire_all() or db.session.get(OnlineOrder, i).status) == "paid" for i in paid))
    payment_id = db.session.get(OnlineOrder, paid[0]).payment_id
    cashier = db.session.scalar(sa.select(User).filter_by(username="tj_cashier"))
    assert request_refund(payment_id, "5.00", "面积核减", cashier).status == "succeeded"

    _assert_no_secret(debug_logs, {
        "Alipay private key of TJ's app": _pem_fragments(keys["tj_app_private_file"]),
        "Alipay private key of the ISV app": _pem_fragments(keys["isv_app_private_file"]),
        "Alipay app_auth_token of QD": QD_AUTH_TOKEN,
    })


def test_bank_channel_leaks_no_key(bank_world, debug_logs):
    tj = bank_world["demo"]["TJ"]
    sim = bank_world["tj"]
    account = accounts_of(tj, 1)[0]
    owed = amount_owed(account).total
    assert sim.query(account.account_no)[2] is True
    status, reply, valid, seq = sim.pay(account.account_no, owed)
    assert valid
    db.session.expire_all()
    assert db.session.scalars(sa.select(Payment).filter_by(account_id=account.id, channel="bank")).all()

    _assert_no_secret(debug_logs, {"bank HMAC key": BANK_KEY})


def test_e_invoice_issuing_leaks_no_secret(einvoicing, make_account, staff, debug_logs):
    account = make_account("TJ", "87.35", user_type="non_residential")
    payment = collect_payment(account, "3494.00", "cash", staff("tj_cashier"))
    assert payment.amount == Decimal("3494.00")
    assert einvoicing.orders, "no invoice reached the vendor"

    _assert_no_secret(debug_logs, {"e-invoice app secret": APP_SECRET})
