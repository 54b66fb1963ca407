"""Time WeChat Pay payment notifications: accepting them over HTTP, then applying them in Celery.

Creates a database named heatflow_bench_<random> on 127.0.0.1, migrates it, installs the
demo, imports and bills the TJ sample ledger, gives TJ a sub-merchant and places one
1.00-yuan order per notification. It then starts the app as a separate process on
127.0.0.1, configured with generated keys, under gunicorn (--worker-class gthread with
--threads threads per worker by default, or sync) or Flask's threaded development server.
Apply tasks go to RabbitMQ (--broker-url) on a queue of the benchmark's own. It measures:

  baseline  wechatpay.verify_notification (signature check + AES-GCM decryption) of the
            same signed notifications, one after another in this process
  http      POST /payments/notify/wechat of each notification from --clients threads, each
            on its own keep-alive connection, while no Celery worker runs: verify, route,
            store one pending row, commit, reply
  apply     a Celery worker started after the HTTP phase applies every stored notification
            (order, payment, ledger lines, receipt number); timed from the worker's start and
            from the first to the last applied row

It prints the rates, the p50 and p99 latency of baseline and http, CPU seconds per
notification of the web processes, their PostgreSQL backends and the worker, and the ratios
to the baseline. Then SQL checks that every notification became exactly one payment with
its ledger lines, gapless receipt numbers and each account's balance lower by what it paid.
The database and the queue are dropped at the end, also after a failure.

    .venv/bin/python benchmarks/wechatpay_notifications.py --notifications 5000 --clients 8
    .venv/bin/python benchmarks/wechatpay_notifications.py --notifications 2000 --clients 4 --worker-class sync --workers 4
"""

import http.client
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import threading
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

from app.child_processes import stop_child  # noqa: E402
from app.billing.services import run_billing  # noqa: E402
from app.demo import SEASON_NAME  # noqa: E402
from app.extensions import db  # noqa: E402
from app.integrations import wechatpay  # noqa: E402
from app.ledger.services import import_ledger  # noqa: E402
from app.network.models import Account  # noqa: E402
from app.org.models import Company  # noqa: E402
from app.payments.models import OnlineOrder, WechatMerchant  # noqa: E402
from tools.wechatpay_simulator import build_notification, new_transaction_id  # noqa: E402

SP_MCHID = "1900000100"
SUB_MCHID = "1900000111"
PLATFORM_SERIAL = "PUB_KEY_ID_0100000000000000000000000000000001"
MERCHANT_SERIAL = "3775B6A45ACD588826D15E583A95F5DD2C9F0001"
LEDGER = ROOT / "tests" / "fixtures" / "ledgers" / "TJ-shared.xlsx"
ORDER_AMOUNT = Decimal("1.00")
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
SERVER_START_TIMEOUT_SECONDS = 60
REQUEST_TIMEOUT_SECONDS = 30
# The HTTP phase stops after this long, sent or not, and the apply phase fails after this
# long, so a stuck server or worker cannot hang the run.
HTTP_PHASE_LIMIT_SECONDS = 600
APPLY_PHASE_LIMIT_SECONDS = 900
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_arguments():
    parser = argument_parser(__doc__)
    parser.add_argument("--notifications", type=int, default=2000, help="notifications to send (1 to 20,000; default 2,000)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients, one connection each (1 to 32; default 8)")
    parser.add_argument(
        "--server", choices=("gunicorn", "flask"), default="gunicorn",
        help="gunicorn (default), or Flask's threaded development server",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (1 to 16; default 2)")
    parser.add_argument(
        "--worker-class", choices=("gthread", "sync"), default="gthread",
        help="gunicorn worker class: gthread keeps connections alive and runs --threads requests per process (default); "
             "sync serves one request per process and closes the connection after it",
    )
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker (1 to 32; default 4)")
    parser.add_argument("--concurrency", type=int, default=1, help="Celery worker processes applying notifications (1 to 8; default 1)")
    parser.add_argument("--broker-url", default=DEFAULT_BROKER_URL, help=f"RabbitMQ of the apply tasks (default {DEFAULT_BROKER_URL})")
    arguments = parse_local(parser)
    check_range(parser, "--notifications", arguments.notifications, 1, 20_000)
    check_range(parser, "--clients", arguments.clients, 1, 32)
    check_range(parser, "--workers", arguments.workers, 1, 16)
    check_range(parser, "--threads", arguments.threads, 1, 32)
    check_range(parser, "--concurrency", arguments.concurrency, 1, 8)
    host = sa.engine.make_url(arguments.broker_url.replace("amqp://", "postgresql://", 1)).host
    if host not in ("127.0.0.1", "localhost"):
        parser.error(f"--broker-url host {host} is not local; the benchmark runs against 127.0.0.1 or localhost only.")
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


def load_average():
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


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


def server_command(arguments, port):
    """Return the command line that serves wsgi:app on 127.0.0.1:`port`."""
    if arguments.server == "flask":
        return [sys.executable, "-m", "flask", "--app", "wsgi", "run", "--host", "127.0.0.1", "--port", str(port), "--with-threads", "--no-reload"]
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(arguments.workers)]
    if arguments.worker_class == "gthread":
        # Each process serves --threads requests at once; connections stay open between requests.
        command += ["--worker-class", "gthread", "--threads", str(arguments.threads)]
    return command + ["wsgi:app"]


def app_environment(database_url, keys, port, broker_url, queue):
    env = dict(os.environ)
    env.pop("HEATFLOW_CONFIG", None)
    env.update({
        "DATABASE_URL": database_url, "HEATFLOW_WECHATPAY_SP_MCHID": SP_MCHID,
        "HEATFLOW_WECHATPAY_MERCHANT_SERIAL": MERCHANT_SERIAL,
        "HEATFLOW_WECHATPAY_MERCHANT_KEY_FILE": str(keys["merchant_private"]),
        "HEATFLOW_WECHATPAY_APIV3_KEY_FILE": str(keys["apiv3_file"]),
        "HEATFLOW_WECHATPAY_PLATFORM_KEY_FILES": f"{PLATFORM_SERIAL}={keys['platform_public']}",
        "HEATFLOW_WECHATPAY_NOTIFY_URL": f"http://127.0.0.1:{port}/payments/notify/wechat",
        "CELERY_BROKER_URL": broker_url, "HEATFLOW_CELERY_QUEUE": queue, "HEATFLOW_OUTBOX_BROKER_URL": "",
    })
    return env


def start_server(command, env, port, log_path):
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


def start_worker(env, queue, concurrency, log_path):
    command = [
        sys.executable, "-m", "celery", "-A", "app.celery_worker", "worker", "-Q", queue, "--pool", "prefork",
        "--concurrency", str(concurrency), "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)


def process_tree_cpu(root_pid):
    """CPU seconds (user + system) of a process and its children, read from /proc."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, parent = int(stat.parent.name), int(fields[1])
        if pid == root_pid or parent == root_pid:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def backend_cpu(engine):
    """CPU seconds of every PostgreSQL backend connected to the benchmark database, by pid."""
    with engine.connect() as connection:
        pids = connection.scalars(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")).all()
    result = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        result[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return result


def backend_cpu_since(engine, before):
    after = backend_cpu(engine)
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def run_http(port, notifications, clients):
    """POST every notification from `clients` threads, each over one keep-alive connection; return (seconds, [(status, latency)])."""
    phase_deadline = time.monotonic() + HTTP_PHASE_LIMIT_SECONDS
    indexes = itertools.count()
    lock = threading.Lock()
    results = [None] * len(notifications)

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_SECONDS)
        try:
            while time.monotonic() < phase_deadline:
                with lock:
                    index = next(indexes)
                if index >= len(notifications):
                    return
                body, headers = notifications[index]
                begin = time.perf_counter()
                try:
                    connection.request("POST", "/payments/notify/wechat", body=body, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    connection.close()
                    status = None
                results[index] = (status, time.perf_counter() - begin)
        finally:
            connection.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return time.perf_counter() - started, [r for r in results if r is not None]


def pending_count(engine):
    with engine.connect() as connection:
        return connection.scalar(sa.text("SELECT count(*) FROM payment_notification WHERE outcome = 'pending'"))


def run_apply(env, queue, concurrency, engine, log_path):
    """Start a worker, wait until no notification is pending; return (seconds from start, seconds first to last applied, worker CPU)."""
    before = backend_cpu(engine)
    started = time.perf_counter()
    worker = start_worker(env, queue, concurrency, log_path)
    try:
        deadline = time.monotonic() + APPLY_PHASE_LIMIT_SECONDS
        while pending_count(engine) and time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"The Celery worker exited with {worker.returncode}; see {log_path}.")
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        worker_cpu = process_tree_cpu(worker.pid)
        database_cpu = backend_cpu_since(engine, before)
    finally:
        stop_child(worker)
    with engine.connect() as connection:
        first, last = connection.execute(sa.text(
            "SELECT min(applied_at), max(applied_at) FROM payment_notification WHERE applied_at IS NOT NULL"
        )).one()
    return elapsed, (last - first).total_seconds() if first else 0.0, worker_cpu, database_cpu


def delete_queue(broker_url, queue):
    from kombu import Connection

    try:
        with Connection(broker_url, connect_timeout=5) as connection:
            connection.default_channel.queue_delete(queue)
    except Exception as error:  # The queue is left behind, so print why and continue.
        print(f"queue {queue} could not be deleted: {error}")


def account_balances(engine):
    with engine.connect() as connection:
        return dict(connection.execute(sa.text(
            "SELECT account_id, sum(amount) FROM ledger_entry GROUP BY account_id"
        )).all())


CHECKS = {
    "notifications not accepted": "SELECT count(*) FROM payment_notification WHERE outcome <> 'accepted'",
    "orders not paid": "SELECT count(*) FROM online_order WHERE status <> 'paid'",
    "orders without exactly one payment": (
        "SELECT count(*) FROM online_order o WHERE (SELECT count(*) FROM payment p"
        " WHERE p.company_id = o.company_id AND p.channel = 'wechat' AND p.channel_transaction_id = o.transaction_id) <> 1"
    ),
    "transactions posted twice": (
        "SELECT count(*) FROM (SELECT channel_transaction_id FROM payment WHERE channel = 'wechat'"
        " GROUP BY channel_transaction_id HAVING count(*) > 1) AS twice"
    ),
    "payments whose ledger lines differ from their amount": (
        "SELECT count(*) FROM payment p WHERE p.channel = 'wechat' AND p.amount <> -(SELECT coalesce(sum(l.amount), 0)"
        " FROM ledger_entry l WHERE l.cause_type = 'payment' AND l.cause_id = p.id)"
    ),
}


def check_results(engine, count, balances_before):
    """Run the SQL checks; return the list of failures."""
    failures = []
    with engine.connect() as connection:
        payments, total = connection.execute(sa.text("SELECT count(*), coalesce(sum(amount), 0) FROM payment WHERE channel = 'wechat'")).one()
        print(f"payments posted: {payments}, total {Decimal(total) / 100:.2f} yuan")
        if payments != count or Decimal(total) != ORDER_AMOUNT * 100 * count:
            failures.append(f"{payments} payments of {Decimal(total) / 100} yuan for {count} notifications")
        for label, statement in CHECKS.items():
            found = connection.scalar(sa.text(statement))
            print(f"check {label}: {found}")
            if found:
                failures.append(f"{found} {label}")
        numbers = connection.execute(sa.text(
            "SELECT count(DISTINCT receipt_no), min(CAST(right(receipt_no, 6) AS integer)), max(CAST(right(receipt_no, 6) AS integer))"
            " FROM payment WHERE channel = 'wechat'"
        )).one()
        print(f"receipt numbers: {numbers[0]} distinct, {numbers[1]} to {numbers[2]}")
        if tuple(numbers) != (count, 1, count):
            failures.append(f"receipt numbers are not 1 to {count} without gaps")
        paid = dict(connection.execute(sa.text("SELECT account_id, count(*) FROM online_order GROUP BY account_id")).all())
    balances_after = account_balances(engine)
    wrong = [
        account_id for account_id, orders in paid.items()
        if balances_after[account_id] != balances_before[account_id] - orders * int(ORDER_AMOUNT * 100)
    ]
    print(f"check accounts whose balance did not fall by what they paid: {len(wrong)} of {len(paid)}")
    if wrong:
        failures.append(f"{len(wrong)} accounts with a wrong balance")
    return failures


def report(label, count, elapsed, load, latencies=None):
    rate = count / elapsed if elapsed else float("inf")
    line = f"{label:<10} {count:6d} in {elapsed:7.2f} s  {rate:9.1f}/s"
    p99 = None
    if latencies:
        p50, p99 = percentile(latencies, 0.50) * 1000, percentile(latencies, 0.99) * 1000
        line += f"  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms"
    print(f"{line}  load {load}", flush=True)
    return rate, p99


def benchmark(database_url, arguments):
    count = arguments.notifications
    queue = "heatflow_bench_" + uuid.uuid4().hex[:10]
    engine = sa.create_engine(database_url)
    with tempfile.TemporaryDirectory(prefix="heatflow-bench-keys-") as directory:
        keys = write_keys(Path(directory))
        import_ledger(db.session.scalar(sa.select(Company).filter_by(code="TJ")), LEDGER.read_bytes(), LEDGER.name)
        run_billing("TJ", SEASON_NAME)
        place_orders(count)
        numbers = db.session.scalars(sa.select(OnlineOrder.out_trade_no).order_by(OnlineOrder.id)).all()
        balances_before = account_balances(engine)
        port = free_port()
        env = app_environment(database_url, keys, port, arguments.broker_url, queue)
        try:
            server = start_server(server_command(arguments, port), env, port, Path(directory) / "server.log")
            try:
                notifications = signed_notifications(keys, numbers)
                loads = {"start": load_average()}
                base_elapsed, base_latencies = run_baseline(keys, notifications)
                loads["baseline"] = load_average()
                server_cpu_before = process_tree_cpu(server.pid)
                database_before = backend_cpu(engine)
                http_elapsed, results = run_http(port, notifications, arguments.clients)
                server_cpu = process_tree_cpu(server.pid) - server_cpu_before
                http_database_cpu = backend_cpu_since(engine, database_before)
                loads["http"] = load_average()
            finally:
                stop_child(server)
            stored = count - pending_count(engine)
            apply_elapsed, apply_span, worker_cpu, apply_database_cpu = run_apply(
                env, queue, arguments.concurrency, engine, Path(directory) / "worker.log"
            )
            loads["apply"] = load_average()
        finally:
            delete_queue(arguments.broker_url, queue)

    sent = [(status, latency) for status, latency in results if status is not None]
    failed = [status for status, _ in sent if status != 204]
    if arguments.server == "flask":
        served_by = "Flask threaded server"
    elif arguments.worker_class == "gthread":
        served_by = f"gunicorn, {arguments.workers} gthread workers x {arguments.threads} threads"
    else:
        served_by = f"gunicorn, {arguments.workers} sync workers"
    print(f"signed notifications: {count}, HTTP clients: {arguments.clients}, server: {served_by}, "
          f"Celery worker processes: {arguments.concurrency}")
    print(f"sent: {len(sent)}, non-204 replies: {len(failed)}, applied before the worker started: {stored}")
    print(f"load average (1, 5, 15 min) at the start: {loads['start']}; each figure below shows it at the end of its phase")
    base_rate, base_p99 = report("baseline", count, base_elapsed, loads["baseline"], base_latencies)
    http_rate, http_p99 = report("http", len(sent), http_elapsed, loads["http"], [latency for _, latency in sent])
    apply_rate, _ = report("apply", count, apply_elapsed, loads["apply"])
    span_rate = count / apply_span if apply_span else float("inf")
    print(f"apply, first to last applied row: {apply_span:.2f} s, {span_rate:.1f}/s")
    sent_count = max(len(sent), 1)
    print(f"CPU per notification: web {server_cpu / sent_count * 1000:.2f} ms + PostgreSQL {http_database_cpu / sent_count * 1000:.2f} ms "
          f"(http); worker {worker_cpu / count * 1000:.2f} ms + PostgreSQL {apply_database_cpu / count * 1000:.2f} ms (apply)")
    print(f"ratio baseline/http rate: {base_rate / http_rate:.1f}   ratio http/baseline p99: {http_p99 / base_p99:.1f}   "
          f"ratio baseline/apply rate: {base_rate / apply_rate:.1f}")
    failures = check_results(engine, len(sent), balances_before)
    engine.dispose()
    if failed or failures:
        raise SystemExit(f"{len(failed)} notifications were not accepted; {'; '.join(failures) or 'no SQL check failed'}.")


def main():
    arguments = parse_arguments()
    with scratch_database(arguments.admin_url) as url, demo_app(url):
        benchmark(url, arguments)


if __name__ == "__main__":
    main()
