"""Time WeChat Pay payment notifications through the app's HTTP endpoint against verification alone.

Creates a database named heatflow_bench_<random> on 127.0.0.1, migrates it, installs the
demo, imports and bills the TJ sample ledger, gives TJ a sub-merchant and places one
1.00-yuan order per notification. It then starts the app as a separate process on
127.0.0.1, configured with generated keys: by default under gunicorn with --workers
synchronous worker processes, as production serves it, or with --server flask in Flask's
threaded development server. It measures:

  baseline  wechatpay.verify_notification (signature check + AES-GCM decryption) of the
            same signed notifications, one after another in this process
  http      POST /payments/notify/wechat of each notification from --clients threads;
            each accepted notification posts a payment with its ledger lines

It prints notifications per second and the p50 and p99 latency of both, and their ratios.
The database is dropped at the end, also after a failure.

    .venv/bin/python benchmarks/wechatpay_notifications.py --notifications 2000 --clients 1
    .venv/bin/python benchmarks/wechatpay_notifications.py --notifications 2000 --clients 4 --workers 4
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from common import ROOT, argument_parser, check_range, demo_app, parse_local, scratch_database  # noqa: E402

from app.billing.services import run_billing  # noqa: E402
from app.demo import SEASON_NAME  # noqa: E402
from app.extensions import db  # noqa: E402
from app.integrations import wechatpay  # noqa: E402
from app.ledger.services import import_ledger  # noqa: E402
from app.network.models import Account  # noqa: E402
from app.org.models import Company  # noqa: E402
from app.payments.models import OnlineOrder, Payment, WechatMerchant  # noqa: E402
from tools.wechatpay_simulator import build_notification, new_transaction_id  # noqa: E402

SP_MCHID = "1900000100"
SUB_MCHID = "1900000111"
PLATFORM_SERIAL = "PUB_KEY_ID_0100000000000000000000000000000001"
MERCHANT_SERIAL = "3775B6A45ACD588826D15E583A95F5DD2C9F0001"
LEDGER = ROOT / "tests" / "fixtures" / "ledgers" / "TJ-shared.xlsx"
ORDER_AMOUNT = Decimal("1.00")
SERVER_START_TIMEOUT_SECONDS = 60
REQUEST_TIMEOUT_SECONDS = 30
# The whole HTTP phase stops after this long, sent or not, so a stuck server cannot hang the run.
HTTP_PHASE_LIMIT_SECONDS = 600


def parse_arguments():
    parser = argument_parser(__doc__)
    parser.add_argument("--notifications", type=int, default=2000, help="notifications to send (1 to 20,000; default 2,000)")
    parser.add_argument("--clients", type=int, default=1, help="concurrent HTTP clients (1 to 16; default 1)")
    parser.add_argument(
        "--server", choices=("gunicorn", "flask"), default="gunicorn",
        help="gunicorn with synchronous workers (default), or Flask's threaded development server",
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes (1 to 16; default 4)")
    arguments = parse_local(parser)
    check_range(parser, "--notifications", arguments.notifications, 1, 20_000)
    check_range(parser, "--clients", arguments.clients, 1, 16)
    check_range(parser, "--workers", arguments.workers, 1, 16)
    return arguments


def write_keys(directory):
    """Generate merchant and platform key pairs and an APIv3 key; return the key objects and file paths."""
    keys = {}
    for name in ("merchant", "platform"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_path = directory / f"{name}_private.pem"
        private_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        public_path = directory / f"{name}_public.pem"
        public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        keys[name], keys[f"{name}_private"], keys[f"{name}_public"] = key, private_path, public_path
    keys["apiv3_file"] = directory / "apiv3.key"
    keys["apiv3_file"].write_text(uuid.uuid4().hex)
    keys["apiv3"] = keys["apiv3_file"].read_bytes()
    return keys


def place_orders(count):
    """One pending 1.00-yuan order per notification, spread over TJ's normal accounts; returns their numbers."""
    company = db.session.scalar(sa.select(Company).filter_by(code="TJ"))
    # No invoice work after each payment: the benchmark times the notification path itself.
    company.invoice_mode = "receipt"
    db.session.add(WechatMerchant(company_id=company.id, sub_mchid=SUB_MCHID))
    accounts = db.session.scalars(sa.select(Account.id).filter_by(company_id=company.id, billing_status="normal").order_by(Account.id)).all()
    numbers = []
    for index in range(count):
        out_trade_no = f"BENCH{index:010d}"
        db.session.add(OnlineOrder(
            company_id=company.id, account_id=accounts[index % len(accounts)], channel="wechat", out_trade_no=out_trade_no,
            amount=ORDER_AMOUNT, status="pending", sub_mchid=SUB_MCHID,
        ))
        numbers.append(out_trade_no)
    db.session.commit()
    return numbers


def signed_notifications(keys, numbers):
    """Build a signed, encrypted TRANSACTION.SUCCESS notification per order, as (body, headers)."""
    now = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    result = []
    for out_trade_no in numbers:
        resource = {
            "sp_mchid": SP_MCHID, "sub_mchid": SUB_MCHID, "sp_appid": "wx0000000000000001", "out_trade_no": out_trade_no,
            "transaction_id": new_transaction_id(), "trade_type": "NATIVE", "trade_state": "SUCCESS", "trade_state_desc": "支付成功",
            "bank_type": "OTHERS", "attach": "", "success_time": now, "payer": {"sp_openid": "o-bench"},
            "amount": {"total": 100, "payer_total": 100, "currency": "CNY", "payer_currency": "CNY"},
        }
        result.append(build_notification(resource, keys["platform"], PLATFORM_SERIAL, keys["apiv3"]))
    return result


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def run_baseline(keys, notifications):
    platform_keys = {PLATFORM_SERIAL: keys["platform"].public_key()}
    latencies = []
    started = time.perf_counter()
    for body, headers in notifications:
        begin = time.perf_counter()
        wechatpay.verify_notification(headers, body, platform_keys, keys["apiv3"])
        latencies.append(time.perf_counter() - begin)
    return time.perf_counter() - started, latencies


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(server, workers, port):
    """Return the command line that serves wsgi:app on 127.0.0.1:`port`."""
    if server == "flask":
        return [sys.executable, "-m", "flask", "--app", "wsgi", "run", "--host", "127.0.0.1", "--port", str(port), "--with-threads", "--no-reload"]
    # One synchronous worker handles one request at a time, so --workers bounds the requests in progress.
    return [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "wsgi:app"]


def start_server(command, database_url, keys, port, log_path):
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url, "HEATFLOW_WECHATPAY_SP_MCHID": SP_MCHID,
        "HEATFLOW_WECHATPAY_MERCHANT_SERIAL": MERCHANT_SERIAL,
        "HEATFLOW_WECHATPAY_MERCHANT_KEY_FILE": str(keys["merchant_private"]),
        "HEATFLOW_WECHATPAY_APIV3_KEY_FILE": str(keys["apiv3_file"]),
        "HEATFLOW_WECHATPAY_PLATFORM_KEY_FILES": f"{PLATFORM_SERIAL}={keys['platform_public']}",
        "HEATFLOW_WECHATPAY_NOTIFY_URL": f"http://127.0.0.1:{port}/payments/notify/wechat",
    })
    log = open(log_path, "wb")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2).close()
            return process
        except (urllib.error.URLError, OSError):
            if process.poll() is not None:
                raise RuntimeError(f"The app server exited with {process.returncode}; see {log_path}.") from None
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"The app server did not respond within {SERVER_START_TIMEOUT_SECONDS} s; see {log_path}.")


def post(url, body, headers):
    request = urllib.request.Request(url, data=body, headers={**headers, "Content-Type": "application/json"}, method="POST")
    begin = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    return status, time.perf_counter() - begin


def run_http(url, notifications, clients):
    phase_deadline = time.monotonic() + HTTP_PHASE_LIMIT_SECONDS

    def send(item):
        if time.monotonic() > phase_deadline:
            return None, 0.0
        return post(url, *item)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(send, notifications))
    elapsed = time.perf_counter() - started
    return elapsed, results


def report(label, count, elapsed, latencies):
    rate = count / elapsed
    p50, p99 = percentile(latencies, 0.50) * 1000, percentile(latencies, 0.99) * 1000
    print(f"{label:<10} {count:6d} in {elapsed:7.2f} s  {rate:9.1f}/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms", flush=True)
    return rate, p99


def benchmark(database_url, count, clients, server, workers):
    with tempfile.TemporaryDirectory(prefix="heatflow-bench-keys-") as directory:
        keys = write_keys(Path(directory))
        import_ledger(db.session.scalar(sa.select(Company).filter_by(code="TJ")), LEDGER.read_bytes(), LEDGER.name)
        run_billing("TJ", SEASON_NAME)
        numbers = place_orders(count)
        port = free_port()
        command = server_command(server, workers, port)
        process = start_server(command, database_url, keys, port, Path(directory) / "server.log")
        try:
            notifications = signed_notifications(keys, numbers)
            base_elapsed, base_latencies = run_baseline(keys, notifications)
            http_elapsed, results = run_http(f"http://127.0.0.1:{port}/payments/notify/wechat", notifications, clients)
        finally:
            process.terminate()
            process.wait(timeout=30)
    sent = [(status, latency) for status, latency in results if status is not None]
    failed = [status for status, _ in sent if status != 204]
    served_by = "Flask threaded server" if server == "flask" else f"gunicorn, {workers} workers"
    print(f"signed notifications: {count}, HTTP clients: {clients}, server: {served_by}, sent: {len(sent)}, non-204 replies: {len(failed)}")
    base_rate, base_p99 = report("baseline", count, base_elapsed, base_latencies)
    http_rate, http_p99 = report("http", len(sent), http_elapsed, [latency for _, latency in sent])
    db.session.expire_all()
    posted = db.session.scalar(sa.select(sa.func.count(Payment.id)).filter_by(channel="wechat"))
    print(f"payments posted: {posted}")
    print(f"ratio baseline/http rate: {base_rate / http_rate:.1f}   ratio http/baseline p99: {http_p99 / base_p99:.1f}")
    if failed or posted != len(sent):
        raise SystemExit(f"{len(failed)} notifications were not accepted or {len(sent) - posted} not posted; see the server log.")


def main():
    arguments = parse_arguments()
    with scratch_database(arguments.admin_url) as url, demo_app(url):
        benchmark(url, arguments.notifications, arguments.clients, arguments.server, arguments.workers)


if __name__ == "__main__":
    main()
