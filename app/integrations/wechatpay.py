"""WeChat Pay API v3 in partner (service provider) mode: order requests, signatures and notifications.

The group is the service provider (sp_mchid) and each subsidiary a sub-merchant (sub_mchid),
so money settles directly to the subsidiary. The provider's merchant key signs every request
and the provider's APIv3 key decrypts every notification. This module deals only in channel
data (fen, merchant ids, order numbers); it knows nothing of accounts or the ledger.

Wire format (WeChat Pay API v3 documentation, pay.weixin.qq.com):
- Request signature: RSA PKCS#1 v1.5 with SHA-256 over "METHOD\\nPATH\\nTIMESTAMP\\nNONCE\\nBODY\\n",
  sent as `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",timestamp="…",serial_no="…",signature="…"`.
- Notification signature: the same scheme over "TIMESTAMP\\nNONCE\\nRAW_BODY\\n", taken from the
  Wechatpay-Timestamp, Wechatpay-Nonce and Wechatpay-Signature headers and checked with the
  platform key named by Wechatpay-Serial.
- Notification resource: AES-256-GCM with the 32-byte APIv3 key, the 12-byte `nonce` as IV,
  `associated_data` as AAD and the tag as the last 16 bytes of the base64 `ciphertext`.
"""

import base64
import csv
import gzip
import hashlib
import json
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.i18n import M_, N_, Message
from app.integrations import channel

SCHEMA = "WECHATPAY2-SHA256-RSA2048"
NATIVE_ORDER_PATH = "/v3/pay/partner/transactions/native"
# Notifications older or newer than this many seconds are rejected as replays. The official
# Go SDK (wechatpay-go, core/consts) uses 5 minutes.
REPLAY_WINDOW_SECONDS = 300
APIV3_KEY_BYTES = 32
GCM_NONCE_BYTES = 12
OUT_TRADE_NO_PATTERN = re.compile(r"[0-9A-Za-z_\-*]{6,32}")
MCHID_MAX = 32
DESCRIPTION_MAX = 127
ATTACH_MAX = 128
NOTIFICATION_HEADERS = ("Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial")
REQUEST_TIMEOUT_SECONDS = 10
LOCAL_HOSTS = ("127.0.0.1", "localhost")


class WechatPayError(channel.ChannelError):
    """A request that cannot be built or sent, or an error reply from WeChat Pay.

    `status` and `code` are the HTTP status and the channel's error code of an error reply,
    or None and "" when no reply came.
    """

    def __init__(self, message, status=None, code=""):
        super().__init__(message)
        self.status = status
        self.code = code


NotificationRejected = channel.NotificationRejected


@dataclass(frozen=True)
class MerchantCredentials:
    """The service provider's merchant id, its certificate serial and private key, and the APIv3 key."""

    mchid: str
    serial_no: str
    private_key: rsa.RSAPrivateKey
    apiv3_key: bytes

    def __repr__(self):
        return f"MerchantCredentials(mchid={self.mchid!r}, serial_no={self.serial_no!r})"


@dataclass(frozen=True)
class Notification:
    """A verified and decrypted notification: the envelope fields and the resource plaintext."""

    id: str
    event_type: str
    resource_type: str
    original_type: str
    resource: dict


def load_private_key(path):
    """Read a PEM RSA private key (PKCS#8 or PKCS#1, unencrypted) from a file."""
    with open(path, "rb") as handle:
        key = serialization.load_pem_private_key(handle.read(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise WechatPayError(f"{path} does not contain an RSA private key.")
    return key


def load_public_key(path):
    """Read a PEM RSA public key or an X.509 certificate from a file and return its public key."""
    with open(path, "rb") as handle:
        data = handle.read()
    if b"BEGIN CERTIFICATE" in data:
        from cryptography import x509

        key = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise WechatPayError(f"{path} does not contain an RSA public key.")
    return key


def load_apiv3_key(path):
    """Read the APIv3 key: 32 ASCII characters, surrounding whitespace ignored."""
    with open(path, "rb") as handle:
        key = handle.read().strip()
    if len(key) != APIV3_KEY_BYTES:
        raise WechatPayError(f"The APIv3 key in {path} has {len(key)} bytes; it must have exactly {APIV3_KEY_BYTES}.")
    return key


def sign_message(private_key, message):
    """Sign text with RSA PKCS#1 v1.5 SHA-256 and return the base64 signature."""
    signature = private_key.sign(message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def signature_is_valid(public_key, message, signature_b64):
    """Check a base64 RSA PKCS#1 v1.5 SHA-256 signature over `message` (str or bytes)."""
    if isinstance(message, str):
        message = message.encode("utf-8")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (ValueError, TypeError):
        return False
    try:
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def request_message(method, path, timestamp, nonce, body):
    """The text a request signature covers: method, path with query, timestamp, nonce and body, each ending in a newline."""
    return f"{method}\n{path}\n{timestamp}\n{nonce}\n{body}\n"


def authorization_header(credentials, method, path, body, timestamp=None, nonce=None):
    """Build the Authorization header value of a request signed with the provider's merchant key."""
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_hex(16)
    signature = sign_message(credentials.private_key, request_message(method, path, timestamp, nonce, body))
    return (
        f'{SCHEMA} mchid="{credentials.mchid}",nonce_str="{nonce}",timestamp="{timestamp}",'
        f'serial_no="{credentials.serial_no}",signature="{signature}"'
    )


AUTHORIZATION_FIELD = re.compile(r'(\w+)="([^"]*)"')


def parse_authorization(header):
    """Split an Authorization header into its fields, or raise WechatPayError when the schema is wrong."""
    schema, _, params = (header or "").partition(" ")
    if schema != SCHEMA:
        raise WechatPayError(f"Authorization schema {schema!r} is not {SCHEMA}.")
    fields = dict(AUTHORIZATION_FIELD.findall(params))
    missing = [name for name in ("mchid", "nonce_str", "timestamp", "serial_no", "signature") if not fields.get(name)]
    if missing:
        raise WechatPayError(f"Authorization header is missing {', '.join(missing)}.")
    return fields


def _check_notify_url(url):
    parts = urllib.parse.urlsplit(url)
    if parts.query or parts.fragment:
        raise WechatPayError(f"notify_url {url!r} must not have a query string or fragment.")
    # The channel only calls HTTPS addresses. Plain HTTP is allowed for a local simulator.
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOCAL_HOSTS):
        raise WechatPayError(f"notify_url {url!r} must use https.")


def native_order_body(*, sp_appid, sp_mchid, sub_mchid, out_trade_no, total_fen, description, notify_url, attach="", time_expire=None):
    """Build the JSON body of a partner-mode Native order, checking the channel's field limits.

    `total_fen` is the amount in fen as an int. `time_expire` is an aware datetime or None.
    """
    for name, value in (("sp_mchid", sp_mchid), ("sub_mchid", sub_mchid)):
        if not value or len(value) > MCHID_MAX:
            raise WechatPayError(f"{name} {value!r} must have 1 to {MCHID_MAX} characters.")
    if not OUT_TRADE_NO_PATTERN.fullmatch(out_trade_no or ""):
        raise WechatPayError(f"out_trade_no {out_trade_no!r} must be 6 to 32 characters of 0-9, A-Z, a-z, _, - or *.")
    if isinstance(total_fen, bool) or not isinstance(total_fen, int) or total_fen <= 0:
        raise WechatPayError(f"amount.total {total_fen!r} must be a positive int in fen.")
    if not description or len(description) > DESCRIPTION_MAX:
        raise WechatPayError(f"description must have 1 to {DESCRIPTION_MAX} characters, not {len(description or '')}.")
    if len(attach) > ATTACH_MAX:
        raise WechatPayError(f"attach must have at most {ATTACH_MAX} characters, not {len(attach)}.")
    _check_notify_url(notify_url)
    body = {
        "sp_appid": sp_appid,
        "sp_mchid": sp_mchid,
        "sub_mchid": sub_mchid,
        "description": description,
        "out_trade_no": out_trade_no,
        "notify_url": notify_url,
        "amount": {"total": total_fen, "currency": "CNY"},
    }
    if attach:
        body["attach"] = attach
    if time_expire is not None:
        body["time_expire"] = time_expire.isoformat(timespec="seconds")
    return body


def send_request(base_url, credentials, method, path, body=None, timeout=REQUEST_TIMEOUT_SECONDS):
    """Send a signed request and return (status, parsed JSON or None, response headers).

    Raises WechatPayError for a 4xx or 5xx reply or a transport failure, with the channel's
    code and message when it sent them.
    """
    status, payload, headers = send_raw_request(base_url, credentials, method, path, body, timeout)
    return status, (json.loads(payload) if payload else None), headers


def send_raw_request(base_url, credentials, method, path, body=None, timeout=REQUEST_TIMEOUT_SECONDS):
    """Send a signed request and return (status, body bytes, response headers); errors as in send_request."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":")) if body is not None else ""
    request = urllib.request.Request(base_url.rstrip("/") + path, data=text.encode("utf-8") if body is not None else None, method=method)
    request.add_header("Authorization", authorization_header(credentials, method, path, text))
    request.add_header("Accept", "application/json")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        payload = error.read()
        try:
            detail = json.loads(payload)
        except ValueError:
            detail = {"code": "", "message": payload[:200].decode("utf-8", "replace")}
        raise WechatPayError(
            f"{method} {path} failed with HTTP {error.code}: {detail.get('code')} {detail.get('message')}",
            status=error.code, code=str(detail.get("code") or ""),
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise WechatPayError(f"{method} {path} to {base_url} failed: {error}") from None


def _header(headers, name):
    # Flask's Headers and http.client's messages are case-insensitive; a plain dict may not be.
    value = headers.get(name)
    if value is None and isinstance(headers, dict):
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return value


def verify_notification(headers, raw_body, platform_keys, apiv3_key, now=None):
    """Verify a notification's signature and age, then decrypt its resource.

    `platform_keys` maps Wechatpay-Serial values to platform public keys. `raw_body` is the
    request body exactly as received (bytes). Raises NotificationRejected with the reason.
    """
    values = {name: _header(headers, name) for name in NOTIFICATION_HEADERS}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise NotificationRejected(f"missing header {', '.join(missing)}")
    signature_type = _header(headers, "Wechatpay-Signature-Type")
    if signature_type and signature_type != SCHEMA:
        raise NotificationRejected(f"unsupported Wechatpay-Signature-Type {signature_type[:40]!r}")
    serial = values["Wechatpay-Serial"]
    public_key = platform_keys.get(serial)
    if public_key is None:
        raise NotificationRejected(f"unknown Wechatpay-Serial {serial[:64]!r}")
    timestamp = values["Wechatpay-Timestamp"]
    # isdigit() alone accepts digits such as "²" that int() rejects; header values arrive as Latin-1.
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise NotificationRejected(f"invalid Wechatpay-Timestamp {timestamp[:20]!r}")
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) >= REPLAY_WINDOW_SECONDS:
        raise NotificationRejected(f"Wechatpay-Timestamp {timestamp} is outside the {REPLAY_WINDOW_SECONDS}-second window")
    message = timestamp.encode() + b"\n" + values["Wechatpay-Nonce"].encode() + b"\n" + raw_body + b"\n"
    if not signature_is_valid(public_key, message, values["Wechatpay-Signature"]):
        raise NotificationRejected("invalid signature")

    try:
        envelope = json.loads(raw_body)
        resource = envelope["resource"]
        plaintext = decrypt_resource(resource, apiv3_key)
        return Notification(
            id=str(envelope.get("id", "")),
            event_type=str(envelope.get("event_type", "")),
            resource_type=str(envelope.get("resource_type", "")),
            original_type=str(resource.get("original_type", "")),
            resource=json.loads(plaintext),
        )
    except NotificationRejected:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        # A validly signed body that does not parse is a channel fault, not an attack.
        raise NotificationRejected(f"malformed notification body: {type(error).__name__}") from None


def decrypt_resource(resource, apiv3_key):
    """Decrypt an AEAD_AES_256_GCM `resource` and return the plaintext bytes."""
    if resource.get("algorithm") != "AEAD_AES_256_GCM":
        raise NotificationRejected(f"unsupported resource algorithm {str(resource.get('algorithm'))[:40]!r}")
    nonce = resource["nonce"].encode("utf-8")
    if len(nonce) != GCM_NONCE_BYTES:
        raise NotificationRejected(f"resource nonce has {len(nonce)} bytes, expected {GCM_NONCE_BYTES}")
    associated_data = (resource.get("associated_data") or "").encode("utf-8")
    ciphertext = base64.b64decode(resource["ciphertext"], validate=True)
    try:
        return AESGCM(apiv3_key).decrypt(nonce, ciphertext, associated_data or None)
    except InvalidTag:
        raise NotificationRejected("resource decryption failed (authentication tag mismatch)") from None


def encrypt_resource(plaintext, apiv3_key, associated_data="transaction", original_type="transaction", nonce=None):
    """Encrypt a resource as the channel does. Used by the simulator and tests."""
    nonce = nonce or secrets.token_hex(GCM_NONCE_BYTES // 2)
    ciphertext = AESGCM(apiv3_key).encrypt(nonce.encode("utf-8"), plaintext, associated_data.encode("utf-8") or None)
    return {
        "original_type": original_type,
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": base64.b64encode(ciphertext).decode("ascii"),
        "associated_data": associated_data,
        "nonce": nonce,
    }


def notification_headers(platform_key, serial, raw_body, timestamp=None, nonce=None):
    """Sign a notification body with a platform key and return its Wechatpay-* headers."""
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_hex(16)
    message = f"{timestamp}\n{nonce}\n{raw_body.decode('utf-8')}\n"
    return {
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": sign_message(platform_key, message),
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature-Type": SCHEMA,
    }


REFUND_PATH = "/v3/refund/domestic/refunds"
TRADE_BILL_PATH = "/v3/bill/tradebill"
QUERY_PATH = "/v3/pay/partner/transactions/out-trade-no/"
OUT_REFUND_NO_PATTERN = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
# trade_state values of a queried order, mapped to channel-neutral states. NOTPAY and
# USERPAYING are the only non-terminal ones.
TRADE_STATES = {
    "NOTPAY": "pending", "USERPAYING": "pending", "SUCCESS": "paid", "REFUND": "refunded",
    "CLOSED": "closed", "REVOKED": "closed", "PAYERROR": "closed",
}
REFUND_STATUSES = {"SUCCESS": "succeeded", "PROCESSING": "processing", "CLOSED": "failed", "ABNORMAL": "failed"}
BILL_SOURCE = N_("微信支付对账单")
BILL_SUMMARY_HEADER = "总交易单数"
BILL_REQUIRED_COLUMNS = ("交易时间", "商户号", "微信订单号", "商户订单号", "交易状态", "应结订单金额")
BILL_REFUND_COLUMNS = ("微信退款单号", "商户退款单号", "退款金额")


def refund_body(*, sub_mchid, transaction_id, out_refund_no, refund_fen, total_fen, reason="", notify_url=""):
    """Build the JSON body of a refund request, checking the channel's field limits."""
    if not OUT_REFUND_NO_PATTERN.fullmatch(out_refund_no or ""):
        raise WechatPayError(f"out_refund_no {out_refund_no!r} must be 1 to 64 characters of 0-9, A-Z, a-z, _-|*@.")
    if not 0 < refund_fen <= total_fen:
        raise WechatPayError(f"amount.refund {refund_fen} must be positive and at most amount.total {total_fen}.")
    body = {
        "sub_mchid": sub_mchid,
        "transaction_id": transaction_id,
        "out_refund_no": out_refund_no,
        "amount": {"refund": refund_fen, "total": total_fen, "currency": "CNY"},
    }
    if reason:
        body["reason"] = reason[:80]
    if notify_url:
        _check_notify_url(notify_url)
        body["notify_url"] = notify_url
    return body


def _bill_rows(data):
    """Split a trade bill into (header, [(line number, row)]), stopping at the summary header."""
    text = data.decode("utf-8-sig")
    lines = text.splitlines()
    if not lines:
        raise channel.StatementError(M_("%(source)s是空文件；请重新下载当日账单。", source=Message(BILL_SOURCE)))
    header = next(csv.reader([lines[0]]))
    missing = [name for name in BILL_REQUIRED_COLUMNS if name not in header]
    if missing:
        raise channel.StatementError(M_("%(source)s第 1 行缺少列：%(columns)s；请下载 bill_type=ALL 的交易账单。", source=Message(BILL_SOURCE), columns=missing))
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        if line.startswith(BILL_SUMMARY_HEADER):
            break
        values = [value[1:] if value.startswith("`") else value for value in next(csv.reader([line]))]
        if len(values) != len(header):
            raise channel.StatementError(M_(
                "%(source)s第 %(line)s 行有 %(count)s 列，表头有 %(header_count)s 列；请重新下载账单。",
                source=Message(BILL_SOURCE), line=number, count=len(values), header_count=len(header),
            ))
        rows.append((number, dict(zip(header, values))))
    return header, rows


def _bill_amount(number, row, column):
    try:
        return channel.yuan(row[column])
    except (ValueError, ArithmeticError):
        raise channel.statement_error(BILL_SOURCE, number, column, row[column], M_("不是以元为单位、最多两位小数的金额")) from None


def parse_trade_bill(data):
    """Read a WeChat Pay trade bill (bill_type ALL or SUCCESS) into statement lines.

    A row with 交易状态 SUCCESS is a payment of 应结订单金额; a row with REFUND is a refund of
    退款金额 under the 微信退款单号. An order paid and then refunded appears once as each.
    The merchant is the 特约商户号 (sub-merchant) when given, else the 商户号.
    """
    header, rows = _bill_rows(data)
    lines = []
    for number, row in rows:
        try:
            occurred_at = channel.parse_china_time(row["交易时间"])
        except ValueError:
            raise channel.statement_error(BILL_SOURCE, number, "交易时间", row["交易时间"], M_("应为 yyyy-MM-dd HH:mm:ss")) from None
        merchant_id = row.get("特约商户号") or row["商户号"]
        state = row["交易状态"]
        if state == "REFUND":
            missing = [name for name in BILL_REFUND_COLUMNS if name not in header]
            if missing:
                raise channel.StatementError(M_("%(source)s第 %(line)s 行是退款，但表头缺少列：%(columns)s。", source=Message(BILL_SOURCE), line=number, columns=missing))
            kind, txn_id, amount = "refund", row["微信退款单号"], _bill_amount(number, row, "退款金额")
        elif state in ("SUCCESS", "REVOKED"):
            # A revoked order was paid first and then cancelled; the cancellation shows as REFUND.
            kind, txn_id, amount = "payment", row["微信订单号"], _bill_amount(number, row, "应结订单金额")
        else:
            raise channel.statement_error(BILL_SOURCE, number, "交易状态", state, M_("应为 SUCCESS、REFUND 或 REVOKED"))
        if not txn_id:
            raise channel.statement_error(BILL_SOURCE, number, "微信订单号", txn_id, M_("交易号为空"))
        lines.append(
            channel.StatementLine(
                channel="wechatpay", merchant_id=merchant_id, channel_txn_id=txn_id,
                out_trade_no=row["商户订单号"] or None, kind=kind, amount=amount, occurred_at=occurred_at,
            )
        )
    return lines


class WechatPayChannel(channel.PaymentChannel):
    """WeChat Pay in partner mode behind the channel interface.

    `platform_keys` maps Wechatpay-Serial values to platform public keys; `sp_appid` is the
    provider's app id sent with orders.
    """

    code = "wechat"

    def __init__(self, api_base, credentials, platform_keys, sp_appid=""):
        self.api_base = api_base
        self.credentials = credentials
        self.platform_keys = platform_keys
        self.sp_appid = sp_appid

    def create_order(self, order):
        body = native_order_body(
            sp_appid=self.sp_appid, sp_mchid=self.credentials.mchid, sub_mchid=order.merchant_id,
            out_trade_no=order.out_trade_no, total_fen=channel.yuan_to_fen(order.amount),
            description=order.subject[:DESCRIPTION_MAX], notify_url=order.notify_url, attach=order.attach,
            time_expire=order.expires_at,
        )
        _, reply, _ = send_request(self.api_base, self.credentials, "POST", NATIVE_ORDER_PATH, body)
        return channel.PlacedOrder(order.out_trade_no, (reply or {}).get("code_url", ""))

    def verify_notification(self, headers, raw_body, now=None):
        notification = verify_notification(headers, raw_body, self.platform_keys, self.credentials.apiv3_key, now=now)
        return notification_event(notification)

    def reply(self, accepted, reason):
        if accepted:
            return channel.NotificationReply(204, b"")
        body = json.dumps({"code": "FAIL", "message": reason}, ensure_ascii=False).encode("utf-8")
        return channel.NotificationReply(400, body, "application/json")

    def query(self, merchant_id, out_trade_no, auth_token=None):
        query = urllib.parse.urlencode({"sp_mchid": self.credentials.mchid, "sub_mchid": merchant_id})
        _, reply, _ = send_request(self.api_base, self.credentials, "GET", f"{QUERY_PATH}{out_trade_no}?{query}")
        reply = reply or {}
        state = TRADE_STATES.get(reply.get("trade_state"))
        if state is None:
            raise WechatPayError(f"Order {out_trade_no} has unknown trade_state {reply.get('trade_state')!r}.")
        total = (reply.get("amount") or {}).get("total")
        return channel.TradeState(
            out_trade_no, state, reply.get("transaction_id"), channel.fen_to_yuan(total) if isinstance(total, int) else None
        )

    def refund(self, request):
        body = refund_body(
            sub_mchid=request.merchant_id, transaction_id=request.channel_txn_id, out_refund_no=request.out_refund_no,
            refund_fen=channel.yuan_to_fen(request.amount), total_fen=channel.yuan_to_fen(request.order_total),
            reason=request.reason, notify_url=request.notify_url,
        )
        _, reply, _ = send_request(self.api_base, self.credentials, "POST", REFUND_PATH, body)
        reply = reply or {}
        status = REFUND_STATUSES.get(reply.get("status"), "processing")
        return channel.RefundResult(request.out_refund_no, status, str(reply.get("refund_id", "")), str(reply.get("status", "")))

    def query_refund(self, request):
        query = urllib.parse.urlencode({"sub_mchid": request.merchant_id})
        path = f"{REFUND_PATH}/{urllib.parse.quote(request.out_refund_no, safe='')}?{query}"
        try:
            _, reply, _ = send_request(self.api_base, self.credentials, "GET", path)
        except WechatPayError as error:
            if error.status == 404 and error.code == "RESOURCE_NOT_EXISTS":
                return channel.RefundResult(request.out_refund_no, "not_found", "", error.code)
            raise
        reply = reply or {}
        status = REFUND_STATUSES.get(reply.get("status"))
        if status is None:
            raise WechatPayError(f"Refund {request.out_refund_no} has unknown status {reply.get('status')!r}.")
        return channel.RefundResult(request.out_refund_no, status, str(reply.get("refund_id", "")), str(reply.get("status", "")))

    def download_statement(self, merchant_id, day, auth_token=None):
        return download_trade_bill(self.api_base, self.credentials, merchant_id, day)

    def parse_statement(self, data):
        return parse_trade_bill(data)


def download_trade_bill(api_base, credentials, sub_mchid, day, compressed=True):
    """Download a sub-merchant's ALL trade bill of a day and check it against the SHA-1 the channel sent.

    The channel first returns a download_url on its own host, which is fetched with a signed
    GET. With `compressed` the bill is requested as GZIP (tar_type=GZIP) and returned
    decompressed; the SHA-1 covers the decompressed bill. NO_STATEMENT_EXIST (no trade that
    day) returns b""; STATEMENT_CREATING raises StatementNotReady.
    """
    params = {"bill_date": day.isoformat(), "sub_mchid": sub_mchid, "bill_type": "ALL"}
    if compressed:
        params["tar_type"] = "GZIP"
    query = urllib.parse.urlencode(params)
    try:
        _, reply, _ = send_request(api_base, credentials, "GET", f"{TRADE_BILL_PATH}?{query}")
    except WechatPayError as error:
        if error.code == "NO_STATEMENT_EXIST":
            return b""
        if error.code == "STATEMENT_CREATING":
            raise channel.StatementNotReady(f"WeChat Pay is still generating the trade bill of {sub_mchid} for {day}.") from None
        raise
    reply = reply or {}
    url = urllib.parse.urlsplit(str(reply.get("download_url", "")))
    base = urllib.parse.urlsplit(api_base)
    # The signed request must only go to the channel's own host, whatever the reply names.
    if (url.scheme, url.netloc) != (base.scheme, base.netloc):
        raise WechatPayError(f"download_url {reply.get('download_url')!r} is not on {api_base}.")
    path = url.path + (f"?{url.query}" if url.query else "")
    _, data, _ = send_raw_request(f"{base.scheme}://{base.netloc}", credentials, "GET", path)
    if compressed:
        data = _gunzip_bill(data, sub_mchid, day)
    if reply.get("hash_type") != "SHA1" or hashlib.sha1(data).hexdigest() != str(reply.get("hash_value", "")).lower():
        raise WechatPayError(f"The trade bill of {sub_mchid} for {day} does not match its {reply.get('hash_type')} hash; download it again.")
    return data


def _gunzip_bill(data, sub_mchid, day):
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        raise WechatPayError(f"The trade bill of {sub_mchid} for {day} is not a valid GZIP file; download it again.") from None


def notification_event(notification):
    """Turn a decrypted notification into a ChannelEvent: TRANSACTION.SUCCESS or REFUND.*."""
    resource = notification.resource
    amount = resource.get("amount") if isinstance(resource.get("amount"), dict) else {}
    sub_mchid = str(resource.get("sub_mchid", ""))
    common = {
        "merchant_id": sub_mchid, "out_trade_no": str(resource.get("out_trade_no", "")),
        "channel_txn_id": str(resource.get("transaction_id", "")), "notification_id": notification.id,
        "event_type": notification.event_type,
        "extra": {"sp_mchid": resource.get("sp_mchid"), "currency": amount.get("currency", "CNY")},
    }
    if notification.original_type == "refund" and notification.event_type.startswith("REFUND."):
        refund = amount.get("refund")
        status = "succeeded" if notification.event_type == "REFUND.SUCCESS" else "failed"
        return channel.ChannelEvent(
            kind="refund", amount=_fen_amount(refund), out_refund_no=str(resource.get("out_refund_no", "")),
            channel_refund_id=str(resource.get("refund_id", "")), refund_status=status, **common,
        )
    if notification.event_type != "TRANSACTION.SUCCESS" or notification.original_type != "transaction":
        return channel.ChannelEvent(kind="other", amount=None, **common)
    if resource.get("trade_state") != "SUCCESS":
        return channel.ChannelEvent(kind="other", amount=None, **{**common, "event_type": f"trade_state {resource.get('trade_state')}"})
    return channel.ChannelEvent(
        kind="payment", amount=_fen_amount(amount.get("total")), occurred_at=_parse_time(resource.get("success_time")), **common
    )


def _fen_amount(fen):
    if isinstance(fen, int) and not isinstance(fen, bool) and abs(fen) < 10**12:
        return channel.fen_to_yuan(fen)
    return None


def _parse_time(text):
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
