"""E-invoice vendor adapter in the style of the Nuonuo open platform (诺诺开放平台): signed calls,
asynchronous results and red-letter reversal. It deals only in vendor data (order numbers,
serials, yuan strings) and contains no payment or account logic.

Wire format:
- POST {base}?senid=…&nonce=…&timestamp=…&appkey=… with a JSON body and the headers
  Content-Type, X-Nuonuo-Sign, accessToken, userTax (the seller's tax id) and method.
- X-Nuonuo-Sign = Base64(HMAC-SHA1(appSecret, "a=services&l=v1&p=open&k={appKey}&i={senid}&n={nonce}&t={timestamp}&f={body}")),
  computed over the body bytes exactly as sent.
- Reply envelope {"code", "describe", "result"}; "E0000" is success.
- Issue: method nuonuo.OpeMplatform.requestBillingNew with {"order": {...}} returns
  {"invoiceSerialNum"}. invoiceType 1 is a blue invoice, 2 a red one that names the blue
  invoice's number. A repeated orderNo is rejected with E9106.
- Result: method nuonuo.OpeMplatform.queryInvoiceResult with {"orderNos": [...]} returns a
  list with status 2 (issued), 20/21 (in progress), 22/24 (failed, failCause), and when issued
  allElectronicInvoiceNumber, invoiceTime (epoch ms) and pdfUrl.
"""

import base64
import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

SIGN_PREFIX = "a=services&l=v1&p=open"
ISSUE_METHOD = "nuonuo.OpeMplatform.requestBillingNew"
QUERY_METHOD = "nuonuo.OpeMplatform.queryInvoiceResult"
SUCCESS_CODE = "E0000"
DUPLICATE_ORDER_CODE = "E9106"
NOT_FOUND_CODE = "E9500"
# queryInvoiceResult status codes, by what they mean for the caller.
ISSUED_STATUSES = {"2"}
IN_PROGRESS_STATUSES = {"20", "21"}
FAILED_STATUSES = {"22", "24"}
REQUEST_TIMEOUT_SECONDS = 10
# Tax classification code of heat supply (供暖), sent on every line.
HEAT_GOODS_CODE = "1100102010100000000"
LOCAL_HOSTS = ("127.0.0.1", "localhost")


class VendorError(Exception):
    """The vendor replied with an error code; `code` and `describe` are the vendor's."""

    def __init__(self, code, describe):
        super().__init__(f"{code} {describe}")
        self.code = code
        self.describe = describe


class VendorUnavailable(Exception):
    """The vendor could not be reached, timed out or replied with HTTP 5xx, so a retry may succeed."""


@dataclass(frozen=True)
class VendorCredentials:
    """The platform app key and secret and the access token of the seller's authorisation."""

    app_key: str
    app_secret: str
    access_token: str

    def __repr__(self):
        return f"VendorCredentials(app_key={self.app_key!r})"


@dataclass(frozen=True)
class InvoiceResult:
    """One row of queryInvoiceResult."""

    order_no: str
    serial: str
    status: str
    fail_cause: str
    invoice_number: str
    invoice_time_ms: int | None
    pdf_url: str

    @property
    def issued(self):
        return self.status in ISSUED_STATUSES

    @property
    def in_progress(self):
        return self.status in IN_PROGRESS_STATUSES

    @property
    def failed(self):
        return self.status in FAILED_STATUSES


def signature(app_secret, app_key, senid, nonce, timestamp, body):
    """Return the X-Nuonuo-Sign value of a request whose body text is `body`."""
    message = f"{SIGN_PREFIX}&k={app_key}&i={senid}&n={nonce}&t={timestamp}&f={body}"
    digest = hmac.new(app_secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_is_valid(app_secret, app_key, senid, nonce, timestamp, body, received):
    """Check a received X-Nuonuo-Sign in constant time."""
    expected = signature(app_secret, app_key, senid, nonce, timestamp, body)
    return hmac.compare_digest(expected, received or "")


class NuonuoClient:
    """Signed calls to one vendor endpoint for one seller (userTax)."""

    def __init__(self, base_url, credentials, user_tax, timeout=REQUEST_TIMEOUT_SECONDS):
        self.base_url = base_url
        self.credentials = credentials
        self.user_tax = user_tax
        self.timeout = timeout

    def call(self, method, payload):
        """Send one signed call and return its `result`, or raise VendorError or VendorUnavailable."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        senid = secrets.token_hex(16)
        nonce = str(secrets.randbelow(90_000_000) + 10_000_000)
        timestamp = str(int(time.time()))
        query = urllib.parse.urlencode({"senid": senid, "nonce": nonce, "timestamp": timestamp, "appkey": self.credentials.app_key})
        request = urllib.request.Request(f"{self.base_url}?{query}", data=body.encode("utf-8"), method="POST")
        request.add_header("Content-Type", "application/json")
        request.add_header("X-Nuonuo-Sign", signature(self.credentials.app_secret, self.credentials.app_key, senid, nonce, timestamp, body))
        request.add_header("accessToken", self.credentials.access_token)
        request.add_header("userTax", self.user_tax)
        request.add_header("method", method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                envelope = json.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code >= 500:
                raise VendorUnavailable(f"{method} failed with HTTP {error.code}") from None
            raise VendorError(f"HTTP{error.code}", error.read()[:200].decode("utf-8", "replace")) from None
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise VendorUnavailable(f"{method} to {self.base_url} failed: {error}") from None
        except ValueError:
            raise VendorUnavailable(f"{method} returned a body that is not JSON") from None
        code = str(envelope.get("code", ""))
        if code != SUCCESS_CODE:
            raise VendorError(code, str(envelope.get("describe", "")))
        return envelope.get("result")

    def request_billing(self, order):
        """Submit an invoice order; return the vendor serial. A repeated orderNo raises VendorError E9106."""
        result = self.call(ISSUE_METHOD, {"order": order})
        return str((result or {}).get("invoiceSerialNum", ""))

    def query_result(self, order_no):
        """Return the InvoiceResult of one order, or None when the vendor has no such order (E9500)."""
        try:
            rows = self.call(QUERY_METHOD, {"orderNos": [order_no], "isOfferInvoiceDetail": "0"})
        except VendorError as error:
            if error.code == NOT_FOUND_CODE:
                return None
            raise
        for row in rows or []:
            if row.get("orderNo") == order_no:
                return InvoiceResult(
                    order_no=order_no,
                    serial=str(row.get("serialNo", "")),
                    status=str(row.get("status", "")),
                    fail_cause=str(row.get("failCause", "")),
                    invoice_number=str(row.get("allElectronicInvoiceNumber", "")),
                    invoice_time_ms=row.get("invoiceTime"),
                    pdf_url=str(row.get("pdfUrl", "")),
                )
        return None

    def download(self, url, max_bytes=5 * 1024 * 1024):
        """Fetch an issued invoice's PDF from the link the vendor returned."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOCAL_HOSTS):
            raise VendorError("URL", f"PDF link {url!r} is not https")
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                data = response.read(max_bytes + 1)
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise VendorUnavailable(f"PDF download from {url} failed: {error}") from None
        if len(data) > max_bytes:
            raise VendorError("PDF", f"PDF at {url} is larger than {max_bytes} bytes")
        if not data.startswith(b"%PDF"):
            raise VendorError("PDF", f"{url} did not return a PDF")
        return data


def invoice_line(*, goods_name, amount, tax, rate, exempt, position_kind="0"):
    """One invoiceDetail entry for a tax-inclusive yuan amount; exempt lines carry the preferential-policy flags."""
    detail = {
        "goodsName": goods_name,
        "goodsCode": HEAT_GOODS_CODE,
        "withTaxFlag": "1",
        "num": "1",
        "unit": "项",
        "price": f"{amount:.2f}",
        "taxIncludedAmount": f"{amount:.2f}",
        "taxExcludedAmount": f"{amount - tax:.2f}",
        "tax": f"{tax:.2f}",
        "taxRate": f"{rate.normalize():f}" if rate else "0",
        "invoiceLineProperty": position_kind,
    }
    if exempt:
        # 免税: preferential policy applied, zero-rate kind 1 (exempt).
        detail.update({"favouredPolicyFlag": "1", "favouredPolicyName": "免税", "zeroRateFlag": "1"})
    else:
        detail.update({"favouredPolicyFlag": "0", "zeroRateFlag": ""})
    return detail
