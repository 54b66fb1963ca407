"""Bank collection (银行代收): the bank asks what an account owes, pays it, and may reverse it.

Banks publish no common standard; this is Heatflow's own interface in the shape most
collection specifications share (the CEB-style field names InstId, TranCode, TranDate,
TranSeq, BillKey, CompanyId, PayAmount, OriginalTranSeq and the reply codes below).

- Transport: POST of a UTF-8 JSON object to /payments/bank/collect.
- Signature: HMAC-SHA256 with the key agreed with that bank (one key per bank, from a file
  named in BANK_KEY_FILES) over "TIMESTAMP\\nNONCE\\nRAW_BODY\\n", sent hex-encoded in
  X-Bank-Signature with X-Bank-Timestamp (unix seconds) and X-Bank-Nonce. Our replies are
  signed the same way. A symmetric key fits a bilateral line where both sides hold the
  secret anyway, and is what many bank collection front-ends use for message integrity.
- Amounts: yuan with two decimals, as strings.
- Daily reconciliation file: UTF-8, "|"-separated. First line "笔数|总金额" (count and net
  total, payments less reversals), then one line per transaction
  "交易日期|交易流水号|客户编号|缴费金额|二级渠道|交易类型" with 交易类型 缴费 or 冲正.
  We fetch it with GET <statement URL>/statements/<CompanyId>/<yyyyMMdd>, signed like a
  request with the path in place of the body; the bank signs the file in its reply. HTTP
  404 means the bank has not written the day's file yet.
"""

import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

from app.i18n import M_, N_, Message
from app.integrations import channel

SIGNATURE_HEADER = "X-Bank-Signature"
TIMESTAMP_HEADER = "X-Bank-Timestamp"
NONCE_HEADER = "X-Bank-Nonce"
REPLAY_WINDOW_SECONDS = 300
TRAN_CODES = ("query", "pay", "reverse")
TRAN_SEQ_MAX = 40
BILL_KEY_MAX = 35
# Reply codes.
OK = "AAAAAAA"
NO_RECORD = "DEF0001"
AMOUNT_MISMATCH = "DEF0002"
NOTHING_OWED = "DEF0003"
REVERSAL_TOO_LATE = "DEF0004"
# A payment whose reversal arrived first: the bank has already cancelled it.
ALREADY_REVERSED = "DEF0005"
BAD_REQUEST = "DEF0009"
SYSTEM_ERROR = "SYS1001"
SIGNATURE_ERROR = "SEC2001"
STATEMENT_SOURCE = N_("银行对账文件")
STATEMENT_COLUMNS = ("交易日期", "交易流水号", "客户编号", "缴费金额", "二级渠道", "交易类型")
STATEMENT_KINDS = {"缴费": "payment", "冲正": "reversal"}
STATEMENT_PATH = "/statements/{company_id}/{day:%Y%m%d}"
REQUEST_TIMEOUT_SECONDS = 10


class BankError(channel.ChannelError):
    """A bank request that is malformed or cannot be answered."""


def sign(key, timestamp, nonce, body):
    """Return the hex HMAC-SHA256 of "TIMESTAMP\\nNONCE\\nBODY\\n" under `key` (bytes)."""
    message = f"{timestamp}\n{nonce}\n".encode("ascii") + body + b"\n"
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_headers(key, body, timestamp=None, nonce=None):
    """Headers that sign a request or reply body."""
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_hex(16)
    return {
        TIMESTAMP_HEADER: timestamp, NONCE_HEADER: nonce, SIGNATURE_HEADER: sign(key, timestamp, nonce, body),
        "Content-Type": "application/json; charset=utf-8",
    }


def _header(headers, name):
    value = headers.get(name)
    if value is None and isinstance(headers, dict):
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return value


def verify_signature(headers, raw_body, key, now=None, window=REPLAY_WINDOW_SECONDS):
    """Check the HMAC and age of a bank message; raise NotificationRejected."""
    timestamp, nonce, signature = (_header(headers, name) for name in (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER))
    if not (timestamp and nonce and signature):
        raise channel.NotificationRejected(f"missing {TIMESTAMP_HEADER}, {NONCE_HEADER} or {SIGNATURE_HEADER}")
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise channel.NotificationRejected(f"invalid {TIMESTAMP_HEADER} {timestamp[:20]!r}")
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) >= window:
        raise channel.NotificationRejected(f"{TIMESTAMP_HEADER} {timestamp} is outside the {window}-second window")
    if not hmac.compare_digest(sign(key, timestamp, nonce, raw_body), signature.strip().lower()):
        raise channel.NotificationRejected("invalid signature")


def peek_inst_id(raw_body):
    """Read InstId before verification, only to choose the key that verifies the body."""
    try:
        message = json.loads(raw_body)
    except (ValueError, UnicodeDecodeError):
        raise channel.NotificationRejected("body is not JSON") from None
    if not isinstance(message, dict):
        raise channel.NotificationRejected("body is not a JSON object")
    return str(message.get("InstId", ""))[:16]


def request_event(raw_body):
    """Parse a verified request into a ChannelEvent whose kind is "query", "payment" or "reversal"."""
    message = json.loads(raw_body)
    tran_code = message.get("TranCode")
    if tran_code not in TRAN_CODES:
        raise BankError(f"TranCode {str(tran_code)[:16]!r} must be one of {', '.join(TRAN_CODES)}")
    tran_seq = str(message.get("TranSeq", ""))
    if not tran_seq or len(tran_seq) > TRAN_SEQ_MAX:
        raise BankError(f"TranSeq must have 1 to {TRAN_SEQ_MAX} characters")
    try:
        tran_date = datetime.strptime(str(message.get("TranDate", "")), "%Y%m%d").date()
    except ValueError:
        raise BankError(f"TranDate {str(message.get('TranDate'))[:16]!r} must be yyyyMMdd") from None
    bill_key = str(message.get("BillKey", ""))
    if len(bill_key) > BILL_KEY_MAX:
        raise BankError(f"BillKey must have at most {BILL_KEY_MAX} characters")
    amount = None
    if tran_code == "pay":
        try:
            amount = channel.yuan(message.get("PayAmount", ""))
        except (ValueError, ArithmeticError):
            raise BankError(f"PayAmount {str(message.get('PayAmount'))[:20]!r} must be yuan with two decimals") from None
        if amount <= 0:
            raise BankError(f"PayAmount {amount} must be positive")
    original = str(message.get("OriginalTranSeq", ""))
    if tran_code == "reverse" and not original:
        raise BankError("OriginalTranSeq is missing")
    kind = {"query": "query", "pay": "payment", "reverse": "reversal"}[tran_code]
    return channel.ChannelEvent(
        kind=kind, merchant_id=str(message.get("CompanyId", ""))[:32], out_trade_no=bill_key,
        channel_txn_id=tran_seq, amount=amount, notification_id=tran_seq, event_type=tran_code,
        extra={
            "bank_code": str(message.get("InstId", ""))[:16], "tran_date": tran_date, "original_tran_seq": original[:TRAN_SEQ_MAX],
            "sub_channel": str(message.get("SubChannel", ""))[:16],
        },
    )


def reply_body(event, code, message, **fields):
    """Build a reply object echoing the request's identifiers."""
    body = {
        "TranCode": event.event_type if event else "", "TranSeq": event.channel_txn_id if event else "",
        "RespCode": code, "RespMessage": message,
    }
    body.update(fields)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_reconciliation_file(data, bank_code, bank_company_id):
    """Read a daily reconciliation file into statement lines, checking its count and net total."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise channel.StatementError(M_("%(source)s不是 UTF-8 编码；请让银行按约定格式重新生成。", source=Message(STATEMENT_SOURCE))) from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise channel.StatementError(M_("%(source)s是空文件；请重新下载当日对账文件。", source=Message(STATEMENT_SOURCE)))
    totals = lines[0].split("|")
    try:
        expected_count, expected_total = int(totals[0]), channel.yuan(totals[1])
    except (IndexError, ValueError, ArithmeticError):
        raise channel.statement_error(STATEMENT_SOURCE, 1, "笔数|总金额", lines[0], M_("应为「%(header)s」，如 2|150.00", header="笔数|总金额")) from None
    result, net = [], channel.yuan("0")
    for number, line in enumerate(lines[1:], start=2):
        values = line.split("|")
        if len(values) != len(STATEMENT_COLUMNS):
            raise channel.StatementError(M_(
                "%(source)s第 %(line)s 行有 %(count)s 列，应为 %(expected)s 列：%(columns)s。",
                source=Message(STATEMENT_SOURCE), line=number, count=len(values), expected=len(STATEMENT_COLUMNS), columns="|".join(STATEMENT_COLUMNS),
            ))
        row = dict(zip(STATEMENT_COLUMNS, (value.strip() for value in values)))
        result.append(_statement_line(row, number, bank_code, bank_company_id))
        net += result[-1].amount if result[-1].kind == "payment" else -result[-1].amount
    if len(result) != expected_count:
        raise channel.StatementError(M_(
            "%(source)s第 1 行笔数为 %(expected)s，明细有 %(count)s 行；文件不完整，请重新下载。",
            source=Message(STATEMENT_SOURCE), expected=expected_count, count=len(result),
        ))
    if net != expected_total:
        raise channel.StatementError(M_(
            "%(source)s第 1 行总金额为 %(expected)s，明细合计 %(total)s；文件不完整，请重新下载。",
            source=Message(STATEMENT_SOURCE), expected=expected_total, total=net,
        ))
    return result


def _statement_line(row, number, bank_code, bank_company_id):
    try:
        trade_date = datetime.strptime(row["交易日期"], "%Y%m%d").replace(tzinfo=channel.CHINA_TIME)
    except ValueError:
        raise channel.statement_error(STATEMENT_SOURCE, number, "交易日期", row["交易日期"], M_("应为 yyyyMMdd")) from None
    try:
        amount = channel.yuan(row["缴费金额"])
    except (ValueError, ArithmeticError):
        raise channel.statement_error(STATEMENT_SOURCE, number, "缴费金额", row["缴费金额"], M_("不是以元为单位、最多两位小数的金额")) from None
    if amount <= 0:
        raise channel.statement_error(STATEMENT_SOURCE, number, "缴费金额", row["缴费金额"], M_("应为正数"))
    kind = STATEMENT_KINDS.get(row["交易类型"])
    if kind is None:
        raise channel.statement_error(STATEMENT_SOURCE, number, "交易类型", row["交易类型"], M_("应为「%(payment)s」或「%(reversal)s」", payment="缴费", reversal="冲正"))
    if not row["交易流水号"]:
        raise channel.statement_error(STATEMENT_SOURCE, number, "交易流水号", "", M_("流水号为空"))
    return channel.StatementLine(
        channel=f"bank:{bank_code}", merchant_id=bank_company_id,
        channel_txn_id=transaction_id(trade_date.date(), row["交易流水号"]), out_trade_no=row["客户编号"] or None,
        kind=kind, amount=amount, occurred_at=trade_date,
    )


def transaction_id(tran_date, tran_seq):
    """The id a bank transaction is stored and reconciled under: trade date and serial."""
    return f"{tran_date:%Y%m%d}:{tran_seq}"


class BankChannel(channel.PaymentChannel):
    """One collecting bank behind the channel interface.

    The bank starts every exchange, so placing orders, querying and refunding through it
    are not offered: a payment is refunded at the counter after the bank's same-day
    reversal window.
    """

    code = "bank"

    def __init__(self, bank_code, key, bank_company_id="", replay_window=REPLAY_WINDOW_SECONDS, statement_url=""):
        self.bank_code = bank_code
        self.key = key
        self.bank_company_id = bank_company_id
        self.replay_window = replay_window
        self.statement_url = statement_url

    def __repr__(self):
        return f"BankChannel(bank_code={self.bank_code!r})"

    def create_order(self, order):
        raise channel.NotSupported(M_("银行代收由银行发起查询和缴费，不能在本系统下单。"))

    def verify_notification(self, headers, raw_body, now=None):
        verify_signature(headers, raw_body, self.key, now=now, window=self.replay_window)
        try:
            event = request_event(raw_body)
        except BankError as error:
            raise channel.NotificationRejected(str(error)) from None
        if event.extra["bank_code"] != self.bank_code:
            raise channel.NotificationRejected(f"InstId {event.extra['bank_code']!r} is not bank {self.bank_code!r}")
        return event

    def reply(self, accepted, reason):
        code = OK if accepted else SIGNATURE_ERROR if "signature" in reason or "window" in reason else BAD_REQUEST
        return self.signed_reply(reply_body(None, code, reason))

    def signed_reply(self, body):
        """Sign a reply body; the HTTP status is 200 whatever the RespCode."""
        return channel.NotificationReply(200, body, "application/json; charset=utf-8")

    def reply_headers(self, body):
        return signed_headers(self.key, body)

    def query(self, merchant_id, out_trade_no, auth_token=None):
        raise channel.NotSupported(M_("银行代收没有订单查询接口；请以银行对账文件核对。"))

    def refund(self, request):
        raise channel.NotSupported(M_("银行代收只能由银行在当日冲正；过了当日请在柜台退费。"))

    def query_refund(self, request):
        raise channel.NotSupported(M_("银行代收没有退款接口，也就没有退款查询。"))

    def download_statement(self, merchant_id, day, auth_token=None):
        if not self.statement_url:
            raise BankError(f"No statement URL is configured for bank {self.bank_code!r} (BANK_STATEMENT_URLS).")
        return download_reconciliation_file(self.statement_url, self.key, merchant_id, day)

    def parse_statement(self, data):
        return parse_reconciliation_file(data, self.bank_code, self.bank_company_id)


def download_reconciliation_file(base_url, key, bank_company_id, day, timeout=REQUEST_TIMEOUT_SECONDS):
    """GET the bank's reconciliation file of a company and day and verify the bank's signature over it."""
    path = STATEMENT_PATH.format(company_id=urllib.parse.quote(bank_company_id, safe=""), day=day)
    headers = signed_headers(key, path.encode("ascii"))
    del headers["Content-Type"]
    request = urllib.request.Request(base_url.rstrip("/") + path, headers=headers, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data, reply_headers = response.read(), response.headers
    except urllib.error.HTTPError as error:
        if error.code == 404:
            raise channel.StatementNotReady(f"The bank has no reconciliation file of {bank_company_id} for {day} yet.") from None
        raise BankError(f"GET {path} failed with HTTP {error.code}.") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise BankError(f"GET {path} from {base_url} failed: {error}") from None
    try:
        verify_signature(reply_headers, data, key)
    except channel.NotificationRejected as error:
        raise BankError(f"The reconciliation file of {bank_company_id} for {day} failed verification: {error.reason}.") from None
    return data


def local_today(now=None):
    """Today's date in China Standard Time, the bank's trade date."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, channel.CHINA_TIME)
    return moment.date()

