"""A local collecting bank: sends signed query, payment and reversal requests to Heatflow.

It plays the bank side of app/integrations/bank.py against a running Heatflow on
127.0.0.1, verifies the signature of every reply, remembers what it booked and writes the
daily reconciliation file of those bookings. `serve_statements(port)` serves those files
(GET /statements/<CompanyId>/<yyyyMMdd>, signed both ways) as the bank's file server.

    python tools/bank_simulator.py --url http://127.0.0.1:5000 --bank CEB --company-id TJ0001 \\
        --key-file instance/bank-CEB.key query 1201000001
    python tools/bank_simulator.py ... pay 1201000001 2345.60
    python tools/bank_simulator.py ... pay-due 1201000001     # queries, then pays TotalDue
    python tools/bank_simulator.py ... reverse SEQ_OF_THE_PAYMENT --bill-key 1201000001 --amount 2345.60
    python tools/bank_simulator.py ... serve-statements --port 8767 [--file 20260110=bank-20260110.txt]

pay and reverse append what the bank booked to a journal file (--journal, by default
instance/bank-<BANK>-<COMPANY_ID>.journal), so serve-statements writes each day's file from
the bookings of earlier runs; --file serves a prepared file for a day instead.

Without --key-file a fresh 32-byte key is written to instance/bank-<BANK>.key; configure the
same file in BANK_KEY_FILES.
"""

import argparse
import json
import re
import secrets
import signal
import sys
import threading
import urllib.error
import urllib.request
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.integrations import bank  # noqa: E402
from tools.simulator_server import SimulatorServer  # noqa: E402

ENDPOINT = "/payments/bank/collect"
REQUEST_TIMEOUT_SECONDS = 10
STATEMENT_PATH = re.compile(r"/statements/(?P<company_id>[^/]+)/(?P<day>\d{8})")


class BankSimulator(SimulatorServer):
    """The bank side of one collection agreement."""

    def __init__(self, base_url, bank_code, key, company_id, journal=None):
        self.url = base_url.rstrip("/") + ENDPOINT
        self.bank_code = bank_code
        self.key = key
        self.company_id = company_id
        # (trade date, serial, account, amount, kind) of every request the bank booked as done.
        self.booked = []
        # File that keeps the bookings across runs of the command line, one detail line of the
        # reconciliation file per booking; None keeps them in memory only.
        self.journal = journal
        if journal is not None and journal.exists():
            self.booked = read_journal(journal)
        # Rows the served files add to the bookings, and days (yyyyMMdd) whose file is not
        # written yet; tests use them to plant differences and late files.
        self.extra_rows = []
        self.unready_days = set()
        # Whole files served for a day (yyyyMMdd) in place of the one written from the bookings.
        self.statement_files = {}
        self.stopping = threading.Event()

    def message(self, tran_code, tran_seq=None, tran_date=None, **fields):
        """Build a request object with the common fields."""
        body = {
            "Version": "1.0", "InstId": self.bank_code, "TranCode": tran_code,
            "TranDate": tran_date or f"{bank.local_today():%Y%m%d}", "TranSeq": tran_seq or new_serial(),
            "CompanyId": self.company_id,
        }
        body.update(fields)
        return body

    def send(self, message, key=None, timestamp=None, raw=None):
        """Sign and POST a request; return (HTTP status, reply object or None, reply signature valid)."""
        body = raw if raw is not None else json.dumps(message, ensure_ascii=False).encode("utf-8")
        headers = bank.signed_headers(key or self.key, body, timestamp=timestamp)
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
                status, reply, reply_headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, reply, reply_headers = error.code, error.read(), error.headers
        try:
            bank.verify_signature(reply_headers, reply, self.key)
            valid = True
        except bank.channel.NotificationRejected:
            valid = False
        try:
            parsed = json.loads(reply)
        except ValueError:
            parsed = None
        return status, parsed, valid

    def query(self, bill_key):
        return self.send(self.message("query", BillKey=bill_key))

    def pay(self, bill_key, amount, tran_seq=None, tran_date=None):
        message = self.message("pay", tran_seq, tran_date, BillKey=bill_key, PayAmount=f"{Decimal(amount):.2f}", SubChannel="counter")
        result = self.send(message)
        if result[1] and result[1].get("RespCode") == bank.OK:
            self._book(message, "缴费", Decimal(amount))
        return result + (message["TranSeq"],)

    def pay_due(self, bill_key, tran_seq=None):
        """Query what an account owes and pay TotalDue (arrears, seasons and late fees) whole, as a bank teller does.

        Returns what pay() returns, or the query's result when the query failed.
        """
        result = self.query(bill_key)
        reply = result[1] or {}
        if reply.get("RespCode") != bank.OK:
            return result + (None,)
        return self.pay(bill_key, Decimal(reply["TotalDue"]), tran_seq)

    def reverse(self, original_seq, bill_key="", tran_seq=None, tran_date=None, amount=None):
        message = self.message("reverse", tran_seq, tran_date, OriginalTranSeq=original_seq, BillKey=bill_key)
        result = self.send(message)
        reply = result[1] or {}
        if reply.get("RespCode") == bank.OK and amount is not None and "ReceiptNo" in reply:
            self._book(message, "冲正", Decimal(amount))
        return result + (message["TranSeq"],)

    def _book(self, message, kind, amount):
        entry = (message["TranDate"], message["TranSeq"], message.get("BillKey", ""), amount, kind)
        if entry not in self.booked:
            self.booked.append(entry)
            if self.journal is not None:
                self.journal.parent.mkdir(parents=True, exist_ok=True)
                with self.journal.open("a", encoding="utf-8") as handle:
                    handle.write(detail_line(entry) + "\n")

    def bookings(self):
        """Return what the bank booked: the journal when there is one, so a running file server also serves later runs' bookings."""
        if self.journal is not None and self.journal.exists():
            return read_journal(self.journal)
        return self.booked

    def reconciliation_file(self, tran_date=None, extra=()):
        """The day's reconciliation file of booked requests, plus `extra` rows the bank claims (長款 tests)."""
        day = tran_date or f"{bank.local_today():%Y%m%d}"
        rows = [entry for entry in self.bookings() if entry[0] == day] + list(extra)
        net = sum((amount if kind == "缴费" else -amount for _, _, _, amount, kind in rows), Decimal("0"))
        lines = [f"{len(rows)}|{net:.2f}"] + [detail_line(row) for row in rows]
        return ("\n".join(lines) + "\n").encode("utf-8")

    def serve_statements(self, port=0):
        """Serve the daily reconciliation files on 127.0.0.1:`port` in a daemon thread; return the base URL."""
        port = self.serve(_StatementHandler, port, "bank-statements")
        return f"http://127.0.0.1:{port}"

    def statement_reply(self, path, headers):
        """Answer GET `path` of the file server: (HTTP status, body)."""
        try:
            bank.verify_signature(headers, path.encode("utf-8"), self.key)
        except bank.channel.NotificationRejected as error:
            return 401, f"signature rejected: {error.reason}".encode("utf-8")
        match = STATEMENT_PATH.fullmatch(path)
        if match is None or match["company_id"] != self.company_id:
            return 404, b"no such file"
        day = match["day"]
        if day in self.statement_files:
            return 200, self.statement_files[day]
        if day in self.unready_days or day > f"{bank.local_today():%Y%m%d}":
            return 404, b"file not written yet"
        return 200, self.reconciliation_file(day, [row for row in self.extra_rows if row[0] == day])


class _StatementHandler(BaseHTTPRequestHandler):
    simulator = None
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        status, body = self.simulator.statement_reply(self.path, self.headers)
        self.send_response(status)
        if status == 200:
            for name, value in bank.signed_headers(self.simulator.key, body).items():
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def new_serial():
    return "B" + secrets.token_hex(12).upper()


def detail_line(entry):
    """One detail line of the reconciliation file: 交易日期|交易流水号|客户编号|缴费金额|二级渠道|交易类型."""
    day, serial, bill_key, amount, kind = entry
    return f"{day}|{serial}|{bill_key}|{amount:.2f}|counter|{kind}"


def read_journal(path):
    """Read the bookings a journal file keeps, one detail line each, into booking tuples."""
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        values = line.split("|")
        if len(values) != len(bank.STATEMENT_COLUMNS):
            raise ValueError(f"{path} line {number}: expected {len(bank.STATEMENT_COLUMNS)} fields separated by |, got {line[:80]!r}")
        day, serial, bill_key, amount, _, kind = values
        entries.append((day, serial, bill_key, Decimal(amount), kind))
    return entries


def statement_file_option(text):
    """Parse a --file value "yyyyMMdd=PATH" into (day, file bytes)."""
    day, separator, path = text.partition("=")
    if not separator or not re.fullmatch(r"\d{8}", day):
        raise argparse.ArgumentTypeError(f"{text!r} is not yyyyMMdd=PATH, e.g. 20260110=statements/TJ0001-20260110.txt")
    try:
        return day, Path(path).read_bytes()
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read the statement file of {day}: {error}") from None


def serve_until_stopped(simulator, port):
    """Serve the reconciliation files on 127.0.0.1:`port` until Ctrl-C or SIGTERM."""
    url = simulator.serve_statements(port)
    print(f"serving reconciliation files of {simulator.company_id} on {url}/statements/{simulator.company_id}/<yyyyMMdd>", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: simulator.stopping.set())
    try:
        while not simulator.stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="Heatflow base URL (127.0.0.1 only)")
    parser.add_argument("--bank", default="CEB", help="bank code sent as InstId")
    parser.add_argument("--company-id", required=True, help="the company's id at the bank (CompanyId)")
    parser.add_argument("--key-file", type=Path, help="file with the shared HMAC key (at least 32 bytes)")
    parser.add_argument("--journal", type=Path,
                        help="file of the bookings kept across runs (default instance/bank-<BANK>-<COMPANY_ID>.journal)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("query").add_argument("bill_key")
    pay = sub.add_parser("pay")
    pay.add_argument("bill_key")
    pay.add_argument("amount")
    sub.add_parser("pay-due", help="query the account, then pay its TotalDue (late fees included)").add_argument("bill_key")
    reverse = sub.add_parser("reverse")
    reverse.add_argument("original_seq")
    reverse.add_argument("--bill-key", default="", help="account number of the payment (BillKey)")
    reverse.add_argument("--amount", help="amount of the payment in yuan, which books the reversal in the journal")
    serve = sub.add_parser("serve-statements", help="serve the daily reconciliation files until stopped")
    serve.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 to listen on (0: a free one)")
    serve.add_argument("--file", dest="files", action="append", default=[], type=statement_file_option, metavar="DAY=PATH",
                       help="yyyyMMdd=PATH: serve this file for that day instead of the journal's bookings (repeatable)")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        parser.error("--url must point at 127.0.0.1 or localhost")
    key_file = args.key_file or Path(f"instance/bank-{args.bank}.key")
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_hex(32))
        print(f"wrote a new key to {key_file}; add {args.bank}={key_file.resolve()} to HEATFLOW_BANK_KEY_FILES", file=sys.stderr)
    journal = args.journal or Path(f"instance/bank-{args.bank}-{args.company_id}.journal")
    simulator = BankSimulator(args.url, args.bank, key_file.read_bytes().strip(), args.company_id, journal=journal)
    if args.command == "serve-statements":
        simulator.statement_files.update(args.files)
        serve_until_stopped(simulator, args.port)
        return 0
    if args.command == "query":
        result = simulator.query(args.bill_key)
    elif args.command == "pay":
        result = simulator.pay(args.bill_key, args.amount)
    elif args.command == "pay-due":
        result = simulator.pay_due(args.bill_key)
    else:
        result = simulator.reverse(args.original_seq, args.bill_key, amount=args.amount)
    status, reply, valid = result[:3]
    print(json.dumps({"status": status, "signature_valid": valid, "reply": reply, "tran_seq": result[3] if len(result) > 3 else None}, ensure_ascii=False, indent=2))
    return 0 if reply and reply.get("RespCode") == bank.OK else 1


if __name__ == "__main__":
    sys.exit(main())
