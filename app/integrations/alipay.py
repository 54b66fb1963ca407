"""Alipay OpenAPI 2.0: RSA2 request signing, response and notification verification, bills.

Each company either has its own app ("direct": the company's app id and key pair) or has
authorised the group's third-party app ("isv": calls are signed by the group's app and
carry the company's app_auth_token; notifications carry the company's app id as
`auth_app_id`). Keys never leave this process: the caller loads them from files.

Wire format (Alipay open platform documentation, opendocs.alipay.com):
- Request: form-encoded public parameters plus `biz_content` (a JSON string). The signed
  text is every non-empty parameter except `sign`, sorted by name, joined as `k=v&k=v` with
  raw values (`sign_type` included), signed with SHA256withRSA (RSA2) and sent base64.
- Response: `{"<method with _ for .>_response": {...}, "sign": "..."}`; the signature covers
  the exact raw text of the `_response` object.
- Notification: a form-encoded POST. The signed text leaves out both `sign` and `sign_type`,
  sorts the rest and joins URL-decoded values as `k=v&k=v`. The receiver replies with the
  bare body `success`; anything else makes Alipay send it again with the same notify_id.
"""

import base64
import csv
import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from app.i18n import M_, N_, Message
from app.integrations import channel

SIGN_TYPE = "RSA2"
CHARSET = "utf-8"
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
SUCCESS_CODE = "10000"
# A notification whose notify_time is further than this from our clock is rejected. Alipay
# sets notify_time to the time of each send, so a retry carries a fresh one.
# NOTE: that renewal is reported, not specified; ALIPAY_REPLAY_WINDOW_SECONDS widens the window.
REPLAY_WINDOW_SECONDS = 600
REQUEST_TIMEOUT_SECONDS = 10
OUT_TRADE_NO_MAX = 64
SUBJECT_MAX = 256
MAX_TOTAL_AMOUNT = channel.yuan("100000000")
MIN_TOTAL_AMOUNT = channel.yuan("0.01")
# trade_status of a notification or query, mapped to channel-neutral order states.
TRADE_STATES = {"WAIT_BUYER_PAY": "pending", "TRADE_SUCCESS": "paid", "TRADE_FINISHED": "paid", "TRADE_CLOSED": "closed"}
NOTIFICATION_REQUIRED = ("notify_id", "notify_time", "app_id", "trade_no", "out_trade_no", "trade_status", "sign", "sign_type")
BILL_SOURCE = N_("支付宝业务明细")
BILL_DETAIL_MARKER = "业务明细列表"
BILL_END_MARKER = "业务明细列表结束"
BILL_REQUIRED_COLUMNS = ("支付宝交易号", "商户订单号", "业务类型", "完成时间", "订单金额（元）")


class AlipayError(channel.ChannelError):
    """A request that cannot be built or sent, or an error reply from Alipay; `sub_code` is Alipay's, when it sent one."""

    def __init__(self, message, sub_code=""):
        super().__init__(message)
        self.sub_code = sub_code


@dataclass(frozen=True)
class AppKeys:
    """One Alipay app: its id, its private key and Alipay's public key for that app."""

    app_id: str
    private_key: rsa.RSAPrivateKey
    alipay_public_key: rsa.RSAPublicKey

    def __repr__(self):
        return f"AppKeys(app_id={self.app_id!r})"


def signing_text(params, exclude=("sign",)):
    """Join the non-empty parameters other than `exclude`, sorted by name, as k=v&k=v."""
    items = sorted((key, value) for key, value in params.items() if key not in exclude and value not in (None, ""))
    return "&".join(f"{key}={value}" for key, value in items)


def rsa2_sign(private_key, text):
    """Sign text with SHA256withRSA (PKCS#1 v1.5) and return it base64-encoded."""
    return base64.b64encode(private_key.sign(text.encode(CHARSET), padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def rsa2_verify(public_key, text, signature_b64):
    """Check a base64 SHA256withRSA signature over text; False for any malformed input."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        public_key.verify(signature, text.encode(CHARSET), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def signed_request_params(keys, method, biz_content, notify_url="", app_auth_token=None, timestamp=None):
    """Build the public parameters of a call, `biz_content` included, and sign them with the app key."""
    params = {
        "app_id": keys.app_id,
        "method": method,
        "format": "JSON",
        "charset": CHARSET,
        "sign_type": SIGN_TYPE,
        "timestamp": (timestamp or datetime.now(channel.CHINA_TIME)).strftime(TIMESTAMP_FORMAT),
        "version": "1.0",
        "biz_content": json.dumps(biz_content, ensure_ascii=False, separators=(",", ":")),
    }
    if notify_url:
        params["notify_url"] = notify_url
    if app_auth_token:
        params["app_auth_token"] = app_auth_token
    params["sign"] = rsa2_sign(keys.private_key, signing_text(params))
    return params


def response_key(method):
    return method.replace(".", "_") + "_response"


def raw_response_object(text, method):
    """Return the exact raw text of the `<method>_response` object in a gateway reply."""
    marker = f'"{response_key(method)}"'
    start = text.find(marker)
    if start < 0:
        raise AlipayError(f"{method}: the reply has no {response_key(method)} object.")
    colon = text.index(":", start + len(marker))
    begin = colon + 1
    while text[begin] in " \t\r\n":
        begin += 1
    try:
        _, end = json.JSONDecoder().raw_decode(text, begin)
    except ValueError:
        raise AlipayError(f"{method}: the {response_key(method)} object is not valid JSON.") from None
    return text[begin:end]


def verify_response(text, method, alipay_public_key):
    """Verify a gateway reply's signature over its raw `_response` object and return that object."""
    raw = raw_response_object(text, method)
    try:
        signature = json.loads(text).get("sign", "")
    except ValueError:
        raise AlipayError(f"{method}: the reply is not JSON.") from None
    response = json.loads(raw)
    if not signature:
        # Alipay leaves a reply unsigned only for gateway-level errors (e.g. an invalid app_id).
        raise AlipayError(f"{method} failed: {response.get('code')} {response.get('msg')} {response.get('sub_msg', '')}".strip())
    if not rsa2_verify(alipay_public_key, raw, signature):
        raise AlipayError(f"{method}: the reply signature is invalid.")
    return response


def call(gateway, keys, method, biz_content, notify_url="", app_auth_token=None, timeout=REQUEST_TIMEOUT_SECONDS):
    """Call a gateway method and return its verified response object.

    Raises AlipayError for a transport failure, a bad signature or a code other than 10000,
    with Alipay's code, sub_code and sub_msg.
    """
    params = signed_request_params(keys, method, biz_content, notify_url, app_auth_token)
    data = urllib.parse.urlencode(params).encode("ascii")
    request = urllib.request.Request(gateway, data=data, method="POST")
    request.add_header("Content-Type", f"application/x-www-form-urlencoded;charset={CHARSET}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            text = reply.read().decode(CHARSET)
    except urllib.error.HTTPError as error:
        raise AlipayError(f"{method} to {gateway} failed with HTTP {error.code}.") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise AlipayError(f"{method} to {gateway} failed: {error}") from None
    response = verify_response(text, method, keys.alipay_public_key)
    if response.get("code") != SUCCESS_CODE:
        raise AlipayError(
            f"{method} failed: {response.get('code')} {response.get('msg')} {response.get('sub_code', '')} {response.get('sub_msg', '')}".strip(),
            sub_code=str(response.get("sub_code", "")),
        )
    return response


def download_bill(gateway, keys, day, app_auth_token=None, timeout=REQUEST_TIMEOUT_SECONDS):
    """Download the trade bill of a day: ask the gateway for its short-lived URL, then GET the zip.

    isp.bill_not_exist (no bill for the day) returns b"".
    """
    try:
        response = call(
            gateway, keys, "alipay.data.dataservice.bill.downloadurl.query",
            {"bill_type": "trade", "bill_date": day.isoformat()}, app_auth_token=app_auth_token,
        )
    except AlipayError as error:
        if error.sub_code == "isp.bill_not_exist":
            return b""
        raise
    url = response.get("bill_download_url") or ""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise AlipayError(f"bill_download_url {url[:80]!r} is not an HTTP address.")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.read()
    except urllib.error.HTTPError as error:
        raise AlipayError(f"Download of the bill for {day} failed with HTTP {error.code}; the URL is valid for 30 s, so ask again.") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise AlipayError(f"Download of the bill for {day} failed: {error}") from None


def check_out_trade_no(out_trade_no):
    if not out_trade_no or len(out_trade_no) > OUT_TRADE_NO_MAX or not all(c.isascii() and (c.isalnum() or c == "_") for c in out_trade_no):
        raise AlipayError(f"out_trade_no {out_trade_no!r} must be 1 to {OUT_TRADE_NO_MAX} letters, digits or underscores.")


def precreate_content(out_trade_no, amount, subject, attach="", expires_at=None):
    """Build the biz_content of alipay.trade.precreate, checking Alipay's limits."""
    check_out_trade_no(out_trade_no)
    if not MIN_TOTAL_AMOUNT <= amount <= MAX_TOTAL_AMOUNT:
        raise AlipayError(f"total_amount {amount} must be between {MIN_TOTAL_AMOUNT} and {MAX_TOTAL_AMOUNT} yuan.")
    if not subject:
        raise AlipayError("subject must not be empty.")
    content = {"out_trade_no": out_trade_no, "total_amount": f"{amount:.2f}", "subject": subject[:SUBJECT_MAX]}
    if attach:
        content["passback_params"] = urllib.parse.quote(attach)
    if expires_at is not None:
        content["time_expire"] = expires_at.astimezone(channel.CHINA_TIME).strftime(TIMESTAMP_FORMAT)
    return content


def parse_form(raw_body):
    """Decode a form-encoded body into a dict, rejecting repeated fields."""
    try:
        text = raw_body.decode(CHARSET)
    except UnicodeDecodeError:
        raise channel.NotificationRejected("body is not UTF-8") from None
    pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=False)
    params = {}
    for key, value in pairs:
        if key in params:
            raise channel.NotificationRejected(f"field {key[:32]!r} appears twice")
        params[key] = value
    return params


def verify_notification(params, alipay_public_key, now=None, window=REPLAY_WINDOW_SECONDS):
    """Verify the signature and age of a decoded notification; raise NotificationRejected."""
    missing = [name for name in NOTIFICATION_REQUIRED if not params.get(name)]
    if missing:
        raise channel.NotificationRejected(f"missing field {', '.join(missing)}")
    if params["sign_type"] != SIGN_TYPE:
        raise channel.NotificationRejected(f"unsupported sign_type {params['sign_type'][:16]!r}")
    # Alipay notifies in the charset of the request that created the order, and every order is
    # created with UTF-8, so another charset means the order was not created by Heatflow.
    declared = params.get("charset", CHARSET)
    if declared.lower().replace("-", "") != CHARSET.lower().replace("-", ""):
        raise channel.NotificationRejected(
            f"unsupported charset {declared[:16]!r}: orders are created with charset {CHARSET}, so notifications must use it"
        )
    if not rsa2_verify(alipay_public_key, signing_text(params, exclude=("sign", "sign_type")), params["sign"]):
        raise channel.NotificationRejected("invalid signature")
    try:
        sent_at = channel.parse_china_time(params["notify_time"])
    except ValueError:
        raise channel.NotificationRejected(f"invalid notify_time {params['notify_time'][:24]!r}") from None
    now = time.time() if now is None else now
    if abs(now - sent_at.timestamp()) >= window:
        raise channel.NotificationRejected(f"notify_time {params['notify_time']} is outside the {window}-second window")


def notification_event(params):
    """Turn a verified notification into a ChannelEvent.

    TRADE_SUCCESS and TRADE_FINISHED pay the order. A refund keeps TRADE_SUCCESS (partial) or
    becomes TRADE_CLOSED (full) and adds refund_fee and out_biz_no, so a notification with
    out_biz_no reports a refund. TRADE_CLOSED without one is an unpaid order that timed out.
    """
    merchant_id = params.get("auth_app_id") or params["app_id"]
    common = {
        "merchant_id": merchant_id, "out_trade_no": params["out_trade_no"], "channel_txn_id": params["trade_no"],
        "notification_id": params["notify_id"], "event_type": params["trade_status"],
        "extra": {"app_id": params["app_id"], "auth_app_id": params.get("auth_app_id", ""), "seller_id": params.get("seller_id", "")},
    }
    status = params["trade_status"]
    if params.get("out_biz_no") and params.get("refund_fee"):
        common["extra"]["cumulative_refund"] = True
        return channel.ChannelEvent(
            kind="refund", amount=_amount(params, "refund_fee"), out_refund_no=params["out_biz_no"],
            refund_status="succeeded", occurred_at=_time(params.get("gmt_refund")), **common,
        )
    if status in ("TRADE_SUCCESS", "TRADE_FINISHED"):
        return channel.ChannelEvent(kind="payment", amount=_amount(params, "total_amount"), occurred_at=_time(params.get("gmt_payment")), **common)
    if status == "TRADE_CLOSED":
        return channel.ChannelEvent(kind="closed", amount=None, **common)
    return channel.ChannelEvent(kind="other", amount=None, **common)


def _amount(params, name):
    try:
        return channel.yuan(params.get(name, ""))
    except (ValueError, ArithmeticError):
        raise channel.NotificationRejected(f"{name} {str(params.get(name))[:20]!r} is not a yuan amount") from None


def _time(text):
    try:
        return channel.parse_china_time(text)
    except (TypeError, ValueError, AttributeError):
        return None


def _zip_name(info):
    """The member name of an Alipay bill zip: GBK bytes, which zipfile decodes as CP437 without the UTF-8 flag."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("gbk")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


def _bill_csv_text(data):
    """Return the text of a daily bill: the detail CSV inside Alipay's zip, or a bare CSV, in GBK."""
    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                details = [info for info in archive.infolist() if info.filename.endswith(".csv") and "汇总" not in _zip_name(info)]
                if not details:
                    raise channel.StatementError(M_("%(source)s压缩包中没有明细 CSV 文件；请重新下载账单。", source=Message(BILL_SOURCE)))
                data = archive.read(details[0])
        except zipfile.BadZipFile:
            raise channel.StatementError(M_("%(source)s不是有效的 zip 文件；请重新下载账单。", source=Message(BILL_SOURCE))) from None
    for encoding in ("gbk", "utf-8-sig"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise channel.StatementError(M_("%(source)s既不是 GBK 也不是 UTF-8 编码；请下载支付宝原始账单。", source=Message(BILL_SOURCE)))


def parse_trade_bill(data, merchant_id):
    """Read Alipay's daily trade bill into statement lines.

    The file carries no app id, so the caller names the merchant it was downloaded for.
    Rows of 业务类型 交易 are payments of 订单金额; rows of 退款 are refunds, whose negative
    amount becomes a positive refund line keyed by 支付宝交易号 and 商户订单号 plus the
    refund batch number (退款批次号/请求号) when present.
    """
    lines_in = _bill_csv_text(data).splitlines()
    header_at = None
    for index, line in enumerate(lines_in):
        if BILL_DETAIL_MARKER in line and BILL_END_MARKER not in line:
            header_at = index + 1
            break
    if header_at is None or header_at >= len(lines_in):
        raise channel.StatementError(M_("%(source)s没有「#…%(marker)s…」开始行；请下载 trade 类型的日账单。", source=Message(BILL_SOURCE), marker=BILL_DETAIL_MARKER))
    header = [name.strip() for name in next(csv.reader([lines_in[header_at]]))]
    missing = [name for name in BILL_REQUIRED_COLUMNS if name not in header]
    if missing:
        raise channel.StatementError(M_("%(source)s第 %(line)s 行缺少列：%(columns)s。", source=Message(BILL_SOURCE), line=header_at + 1, columns=missing))
    result = []
    for index in range(header_at + 1, len(lines_in)):
        line, number = lines_in[index], index + 1
        if line.startswith("#"):
            break
        if not line.strip():
            continue
        values = [value.strip() for value in next(csv.reader([line]))]
        if len(values) < len(header):
            raise channel.StatementError(M_(
                "%(source)s第 %(line)s 行有 %(count)s 列，表头有 %(header_count)s 列；请重新下载账单。",
                source=Message(BILL_SOURCE), line=number, count=len(values), header_count=len(header),
            ))
        row = dict(zip(header, values))
        result.append(_bill_line(row, number, merchant_id))
    return result


def _bill_line(row, number, merchant_id):
    try:
        amount = channel.yuan(row["订单金额（元）"])
    except (ValueError, ArithmeticError):
        raise channel.statement_error(BILL_SOURCE, number, "订单金额（元）", row["订单金额（元）"], M_("不是以元为单位、最多两位小数的金额")) from None
    try:
        occurred_at = channel.parse_china_time(row["完成时间"])
    except ValueError:
        raise channel.statement_error(BILL_SOURCE, number, "完成时间", row["完成时间"], M_("应为 yyyy-MM-dd HH:mm:ss")) from None
    kind = {"交易": "payment", "退款": "refund"}.get(row["业务类型"])
    if kind is None:
        raise channel.statement_error(BILL_SOURCE, number, "业务类型", row["业务类型"], M_("应为「%(payment)s」或「%(refund)s」", payment="交易", refund="退款"))
    if (kind == "payment") != (amount > 0):
        raise channel.statement_error(BILL_SOURCE, number, "订单金额（元）", row["订单金额（元）"], M_("交易应为正数，退款应为负数"))
    txn_id = row["支付宝交易号"]
    if not txn_id:
        raise channel.statement_error(BILL_SOURCE, number, "支付宝交易号", txn_id, M_("交易号为空"))
    if kind == "refund":
        batch = row.get("退款批次号/请求号") or ""
        txn_id = f"{txn_id}:{batch}" if batch else txn_id
    return channel.StatementLine(
        channel="alipay", merchant_id=merchant_id, channel_txn_id=txn_id, out_trade_no=row["商户订单号"] or None,
        kind=kind, amount=abs(amount), occurred_at=occurred_at,
    )


class AlipayChannel(channel.PaymentChannel):
    """Alipay behind the channel interface.

    `apps` maps app ids to AppKeys: the companies' own apps and the group's third-party app.
    An order or refund with an `auth_token` is signed by `isv_app_id` on the company's behalf.
    `statement_merchant_id` names the app whose bill parse_statement reads.
    """

    code = "alipay"

    def __init__(self, gateway, apps, isv_app_id="", replay_window=REPLAY_WINDOW_SECONDS, statement_merchant_id=""):
        self.gateway = gateway
        self.apps = apps
        self.isv_app_id = isv_app_id
        self.replay_window = replay_window
        self.statement_merchant_id = statement_merchant_id

    def _keys(self, merchant_id, auth_token):
        app_id = self.isv_app_id if auth_token else merchant_id
        keys = self.apps.get(app_id)
        if keys is None:
            raise AlipayError(f"No keys are configured for Alipay app {app_id!r}.")
        return keys

    def create_order(self, order):
        content = precreate_content(order.out_trade_no, order.amount, order.subject, order.attach, order.expires_at)
        response = call(
            self.gateway, self._keys(order.merchant_id, order.auth_token), "alipay.trade.precreate", content,
            notify_url=order.notify_url, app_auth_token=order.auth_token,
        )
        return channel.PlacedOrder(order.out_trade_no, response.get("qr_code", ""))

    def verify_notification(self, headers, raw_body, now=None):
        params = parse_form(raw_body)
        keys = self.apps.get(params.get("app_id", ""))
        if keys is None:
            raise channel.NotificationRejected(f"unknown app_id {str(params.get('app_id'))[:32]!r}")
        verify_notification(params, keys.alipay_public_key, now=now, window=self.replay_window)
        return notification_event(params)

    def reply(self, accepted, reason):
        # Alipay reads only the body: exactly "success" stops the retries.
        return channel.NotificationReply(200 if accepted else 400, b"success" if accepted else b"fail")

    def query(self, merchant_id, out_trade_no, auth_token=None):
        response = call(
            self.gateway, self._keys(merchant_id, auth_token), "alipay.trade.query", {"out_trade_no": out_trade_no},
            app_auth_token=auth_token,
        )
        status = response.get("trade_status")
        state = TRADE_STATES.get(status)
        if state is None:
            raise AlipayError(f"Order {out_trade_no} has unknown trade_status {status!r}.")
        amount = response.get("total_amount")
        return channel.TradeState(out_trade_no, state, response.get("trade_no"), channel.yuan(amount) if amount else None)

    def refund(self, request):
        content = {
            "out_trade_no": request.out_trade_no, "trade_no": request.channel_txn_id,
            "refund_amount": f"{request.amount:.2f}", "out_request_no": request.out_refund_no,
        }
        if request.reason:
            content["refund_reason"] = request.reason[:256]
        try:
            response = call(
                self.gateway, self._keys(request.merchant_id, request.auth_token), "alipay.trade.refund", content,
                app_auth_token=request.auth_token,
            )
        except AlipayError as error:
            if "40004" in str(error):
                # A business refusal (e.g. ACQ.TRADE_HAS_FINISHED) is final; transport errors are not.
                return channel.RefundResult(request.out_refund_no, "failed", "", str(error))
            raise
        # fund_change "N" on a repeated out_request_no means the money already moved the first time.
        return channel.RefundResult(request.out_refund_no, "succeeded", response.get("trade_no", ""), response.get("fund_change", ""))

    def query_refund(self, request):
        content = {"out_trade_no": request.out_trade_no, "out_request_no": request.out_refund_no}
        response = call(
            self.gateway, self._keys(request.merchant_id, request.auth_token), "alipay.trade.fastpay.refund.query", content,
            app_auth_token=request.auth_token,
        )
        # Alipay answers an unknown out_request_no with an empty success; a refund it made has
        # refund_amount, and refund_status REFUND_SUCCESS (or no refund_status at all).
        if not response.get("refund_amount"):
            return channel.RefundResult(request.out_refund_no, "not_found", "", "no refund under this out_request_no")
        if response.get("refund_status") not in (None, "", "REFUND_SUCCESS"):
            return channel.RefundResult(request.out_refund_no, "processing", "", str(response.get("refund_status")))
        return channel.RefundResult(request.out_refund_no, "succeeded", response.get("trade_no", ""), "REFUND_SUCCESS")

    def download_statement(self, merchant_id, day, auth_token=None):
        return download_bill(self.gateway, self._keys(merchant_id, auth_token), day, app_auth_token=auth_token)

    def parse_statement(self, data):
        return parse_trade_bill(data, self.statement_merchant_id)
