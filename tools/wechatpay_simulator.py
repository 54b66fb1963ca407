"""A local WeChat Pay API v3 simulator for partner-mode Native orders, on 127.0.0.1 only.

It verifies the Authorization header of every request with the merchant public key, holds
orders as NOTPAY, and on `pay` sends a signed, encrypted TRANSACTION.SUCCESS notification to
the order's notify_url. Deliveries follow the channel's retry schedule divided by
--time-scale until the receiver replies 2xx or --max-attempts is reached.

    python tools/wechatpay_simulator.py --port 8765 --key-dir /tmp/wxsim

Without key files the simulator writes fresh keys into --key-dir: merchant_private.pem
(configure it as WECHATPAY_MERCHANT_KEY_FILE), platform_public.pem (under the serial printed
at start), and apiv3.key.

It also takes refunds (POST /v3/refund/domestic/refunds): a refund is answered PROCESSING
and confirmed by a REFUND.SUCCESS notification; GET /v3/refund/domestic/refunds/{out_refund_no}
queries it. The trade bill of a sub-merchant and day (GET /v3/bill/tradebill, bill_type ALL)
lists every payment and successful refund it made, and is fetched from the download_url it
returns, with a SHA-1 of the uncompressed bill to check; tar_type=GZIP serves it gzipped.

Endpoints besides the channel's own:
    POST /simulator/pay   {"sub_mchid": "...", "out_trade_no": "..."}  mark paid, start delivery
    GET  /simulator/deliveries                                          delivery attempts so far
"""

import argparse
import csv
import gzip
import hashlib
import io
import json
import logging
import secrets
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from tools.simulator_server import SimulatorServer, run_until_interrupted, write_key_pairs  # noqa: E402
from app.integrations import wechatpay  # noqa: E402

logger = logging.getLogger("wechatpay_simulator")
# Delays before each retry, in seconds, as the channel documents for payment notifications
# (15s, 15s, 30s, 3m, 10m, 20m, 30m, 30m, 30m, 60m, 3h, 3h, 3h, 6h, 6h).
RETRY_SCHEDULE_SECONDS = (15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600, 21600)
CHINA_TIME = timezone(timedelta(hours=8))
DELIVERY_TIMEOUT_SECONDS = 5
BILL_DOWNLOAD_PATH = "/v3/billdownload/file"
BILL_HEADER = (
    "交易时间", "公众账号ID", "商户号", "特约商户号", "设备号", "微信订单号", "商户订单号", "用户标识", "交易类型", "交易状态", "付款银行",
    "货币种类", "应结订单金额", "代金券金额", "微信退款单号", "商户退款单号", "退款金额", "充值券退款金额", "退款类型", "退款状态", "商品名称",
    "商户数据包", "手续费", "费率", "订单金额", "申请退款金额", "费率备注",
)
BILL_SUMMARY_HEADER = ("总交易单数", "应结订单总金额", "退款总金额", "充值券退款总金额", "手续费总金额", "订单总金额", "申请退款总金额")


class Simulator(SimulatorServer):
    """Orders, keys and delivery threads of one simulated channel."""

    def __init__(self, merchant_public_keys, platform_private_key, platform_serial, apiv3_key, time_scale=1000.0, max_attempts=16):
        # merchant_public_keys: {mchid: RSA public key} of the service providers allowed to call.
        self.merchant_public_keys = merchant_public_keys
        self.platform_private_key = platform_private_key
        self.platform_serial = platform_serial
        self.apiv3_key = apiv3_key
        self.time_scale = time_scale
        self.max_attempts = max(1, min(max_attempts, len(RETRY_SCHEDULE_SECONDS) + 1))
        self.orders = {}
        self.deliveries = []
        # One dict per line of the trade bills: time, sub_mchid, state (SUCCESS or REFUND),
        # transaction_id, out_trade_no, total_fen, and refund_id, out_refund_no, refund_fen
        # for a refund. Tests edit it to plant differences.
        self.bill_rows = []
        self.bill_files = {}
        # Query parameters of every GET /v3/bill/tradebill, oldest first.
        self.bill_requests = []
        # Final status of each refund (SUCCESS, ABNORMAL or CLOSED) by out_refund_no; set
        # `refund_outcome` before a refund to choose it, and `refund_notifications` False to
        # lose the refund notifications as a broken network would.
        self.refund_states = {}
        self.refund_outcome = "SUCCESS"
        self.refund_notifications = True
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    # -- channel side ---------------------------------------------------------------------

    def create_order(self, body):
        """Store a Native order as NOTPAY and return its code_url; the same order twice returns the same link."""
        key = (body["sub_mchid"], body["out_trade_no"])
        with self.lock:
            existing = self.orders.get(key)
            if existing is not None:
                if existing["request"] != body:
                    raise ValueError("out_trade_no was already used with other parameters")
                return existing["code_url"]
            code_url = f"weixin://wxpay/bizpayurl?pr={secrets.token_urlsafe(8)}"
            self.orders[key] = {"request": body, "state": "NOTPAY", "code_url": code_url, "transaction_id": None}
            return code_url

    def transaction(self, sub_mchid, out_trade_no, total=None):
        """Build the decrypted resource of a successful payment of a stored order."""
        order = self.orders[(sub_mchid, out_trade_no)]
        request = order["request"]
        total = request["amount"]["total"] if total is None else total
        return {
            "sp_appid": request.get("sp_appid", ""), "sp_mchid": request["sp_mchid"], "sub_mchid": sub_mchid,
            "out_trade_no": out_trade_no, "transaction_id": order["transaction_id"] or new_transaction_id(),
            "trade_type": "NATIVE", "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "bank_type": "OTHERS",
            "attach": request.get("attach", ""), "success_time": datetime.now(CHINA_TIME).isoformat(timespec="seconds"),
            "payer": {"sp_openid": "o" + secrets.token_hex(13)},
            "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"},
        }

    def notification(self, resource, timestamp=None, event_type="TRANSACTION.SUCCESS"):
        """Encrypt and sign a resource; return (raw body bytes, headers)."""
        return build_notification(resource, self.platform_private_key, self.platform_serial, self.apiv3_key, timestamp, event_type)

    def pay(self, sub_mchid, out_trade_no):
        """Mark an order paid and start delivering its notification in a background thread."""
        with self.lock:
            order = self.orders.get((sub_mchid, out_trade_no))
            if order is None:
                raise KeyError(f"order {out_trade_no} of sub_mchid {sub_mchid} not found")
            if order["state"] != "NOTPAY":
                raise ValueError(f"order {out_trade_no} is {order['state']}, not NOTPAY")
            order["state"] = "SUCCESS"
            order["transaction_id"] = new_transaction_id()
        resource = self.transaction(sub_mchid, out_trade_no)
        with self.lock:
            self.bill_rows.append({
                "time": datetime.fromisoformat(resource["success_time"]), "sub_mchid": sub_mchid, "state": "SUCCESS",
                "transaction_id": resource["transaction_id"], "out_trade_no": out_trade_no, "total_fen": resource["amount"]["total"],
            })
        thread = threading.Thread(target=self._deliver, args=(order["request"]["notify_url"], resource), daemon=True)
        thread.start()
        return resource["transaction_id"]

    def refund(self, body):
        """Accept a refund of a paid order as PROCESSING and deliver REFUND.SUCCESS; the same out_refund_no is the same refund."""
        with self.lock:
            order = next((o for o in self.orders.values() if o["transaction_id"] == body.get("transaction_id")), None)
            if order is None:
                raise KeyError(f"transaction {body.get('transaction_id')} not found")
            if order["request"]["sub_mchid"] != body.get("sub_mchid"):
                raise ValueError("sub_mchid does not match the order")
            refunds = order.setdefault("refunds", {})
            existing = refunds.get(body["out_refund_no"])
            if existing is not None:
                return existing
            amount = body["amount"]
            if amount["total"] != order["request"]["amount"]["total"]:
                raise ValueError("amount.total does not match the order")
            refunded = sum(r["amount"]["refund"] for r in refunds.values())
            if not 0 < amount["refund"] <= amount["total"] - refunded:
                raise ValueError("NOT_ENOUGH: refund exceeds what is left on the order")
            reply = {
                "refund_id": "50000" + "".join(secrets.choice("0123456789") for _ in range(24)),
                "out_refund_no": body["out_refund_no"], "transaction_id": order["transaction_id"],
                "out_trade_no": order["request"]["out_trade_no"], "channel": "ORIGINAL", "status": "PROCESSING",
                "amount": {"total": amount["total"], "refund": amount["refund"], "payer_total": amount["total"], "payer_refund": amount["refund"], "currency": "CNY"},
            }
            refunds[body["out_refund_no"]] = reply
            if refunded + amount["refund"] == amount["total"]:
                order["state"] = "REFUND"
            outcome = self.refund_outcome
            self.refund_states[body["out_refund_no"]] = outcome
            now = datetime.now(CHINA_TIME)
            if outcome == "SUCCESS":
                self.bill_rows.append({
                    "time": now, "sub_mchid": body["sub_mchid"], "state": "REFUND", "transaction_id": reply["transaction_id"],
                    "out_trade_no": reply["out_trade_no"], "total_fen": amount["total"], "refund_id": reply["refund_id"],
                    "out_refund_no": reply["out_refund_no"], "refund_fen": amount["refund"],
                })
        resource = {
            "sp_mchid": order["request"]["sp_mchid"], "sub_mchid": body["sub_mchid"], "out_trade_no": reply["out_trade_no"],
            "transaction_id": reply["transaction_id"], "out_refund_no": reply["out_refund_no"], "refund_id": reply["refund_id"],
            "refund_status": outcome, "success_time": now.isoformat(timespec="seconds"),
            "user_received_account": "支付用户零钱", "amount": reply["amount"],
        }
        url = body.get("notify_url") or order["request"]["notify_url"]
        if self.refund_notifications:
            threading.Thread(target=self._deliver, args=(url, resource, f"REFUND.{outcome}"), daemon=True).start()
        return reply

    def refund_state(self, sub_mchid, out_refund_no):
        """The reply to a refund query: the stored refund with its final status."""
        with self.lock:
            for order in self.orders.values():
                reply = order.get("refunds", {}).get(out_refund_no)
                if reply is not None and order["request"]["sub_mchid"] == sub_mchid:
                    return {**reply, "status": self.refund_states.get(out_refund_no, "PROCESSING")}
        raise KeyError(f"refund {out_refund_no} of sub_mchid {sub_mchid} not found")

    def trade_bill(self, sub_mchid, day):
        """The ALL trade bill of a sub-merchant and day as the channel writes it, or None when it had no trade."""
        with self.lock:
            rows = [row for row in self.bill_rows if row["sub_mchid"] == sub_mchid and row["time"].astimezone(CHINA_TIME).date() == day]
        if not rows:
            return None
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(BILL_HEADER)
        settled = refunded = 0
        for row in rows:
            writer.writerow(["`" + value for value in _bill_values(row)])
            settled += row["total_fen"] if row["state"] == "SUCCESS" else 0
            refunded += row.get("refund_fen", 0)
        writer.writerow(BILL_SUMMARY_HEADER)
        writer.writerow(["`" + value for value in (str(len(rows)), _yuan(settled), _yuan(refunded), "0.00", "0.00", _yuan(settled), _yuan(refunded))])
        return buffer.getvalue().encode("utf-8")

    def bill_download(self, query, base_url):
        """Answer GET /v3/bill/tradebill: (HTTP status, reply object)."""
        params = dict(urllib.parse.parse_qsl(query))
        try:
            day = date.fromisoformat(params.get("bill_date", ""))
        except ValueError:
            return 400, {"code": "PARAM_ERROR", "message": "bill_date must be yyyy-MM-dd"}
        if params.get("bill_type", "ALL") != "ALL":
            return 400, {"code": "PARAM_ERROR", "message": "the simulator only writes bill_type ALL"}
        tar_type = params.get("tar_type", "")
        if tar_type not in ("", "GZIP"):
            return 400, {"code": "PARAM_ERROR", "message": "tar_type must be GZIP or left out"}
        with self.lock:
            self.bill_requests.append(params)
        data = self.trade_bill(params.get("sub_mchid", ""), day)
        if data is None:
            return 400, {"code": "NO_STATEMENT_EXIST", "message": "账单文件不存在"}
        token = secrets.token_urlsafe(16)
        with self.lock:
            # The hash is always of the uncompressed bill, as the channel documents.
            self.bill_files[token] = gzip.compress(data) if tar_type == "GZIP" else data
        url = f"{base_url}{BILL_DOWNLOAD_PATH}?token={token}"
        return 200, {"hash_type": "SHA1", "hash_value": hashlib.sha1(data).hexdigest(), "download_url": url}

    def _deliver(self, url, resource, event_type="TRANSACTION.SUCCESS"):
        for attempt in range(1, self.max_attempts + 1):
            # Each attempt is signed anew, as the channel does, so its timestamp stays fresh.
            body, headers = self.notification(resource, event_type=event_type)
            status = post(url, body, headers)
            with self.lock:
                self.deliveries.append({"transaction_id": resource["transaction_id"], "event_type": event_type, "attempt": attempt, "status": status})
            if status is not None and 200 <= status < 300:
                return
            if attempt > len(RETRY_SCHEDULE_SECONDS) or self.stopping.is_set():
                break
            logger.info("Delivery %d of %s got %s; retrying", attempt, resource["transaction_id"], status)
            if self.stopping.wait(RETRY_SCHEDULE_SECONDS[attempt - 1] / self.time_scale):
                break
        logger.warning("Gave up delivering %s after %d attempts", resource["transaction_id"], attempt)

    # -- server ---------------------------------------------------------------------------

    def start(self, port=0):
        """Serve on 127.0.0.1:`port` in a daemon thread; return the base URL."""
        port = self.serve(_Handler, port, "wechatpay-simulator")
        return f"http://127.0.0.1:{port}"


def _yuan(fen):
    return f"{fen // 100}.{fen % 100:02d}"


def _bill_values(row):
    refund = row["state"] == "REFUND"
    total = _yuan(row["total_fen"])
    refund_amount = _yuan(row.get("refund_fen", 0))
    return (
        row["time"].astimezone(CHINA_TIME).strftime("%Y-%m-%d %H:%M:%S"), "wx0000000000000001", "1900000100", row["sub_mchid"], "",
        row["transaction_id"], row["out_trade_no"], "oSimulatedPayer", "NATIVE", row["state"], "OTHERS", "CNY",
        "0.00" if refund else total, "0.00", row.get("refund_id", "0"), row.get("out_refund_no", "0"), refund_amount, "0.00",
        "ORIGINAL" if refund else "", "SUCCESS" if refund else "", "热费", "", "0.00", "0.60%", "0.00" if refund else total,
        refund_amount, "",
    )


def new_transaction_id():
    return "42000" + "".join(secrets.choice("0123456789") for _ in range(23))


def build_notification(resource, platform_private_key, platform_serial, apiv3_key, timestamp=None, event_type="TRANSACTION.SUCCESS"):
    """Encrypt a transaction or refund resource into a notification body and sign it; return (body, headers)."""
    plaintext = json.dumps(resource, ensure_ascii=False).encode("utf-8")
    original_type = "refund" if event_type.startswith("REFUND.") else "transaction"
    envelope = {
        "id": secrets.token_hex(16),
        "create_time": datetime.now(CHINA_TIME).isoformat(timespec="seconds"),
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": "退款成功" if original_type == "refund" else "支付成功",
        "resource": wechatpay.encrypt_resource(plaintext, apiv3_key, associated_data=original_type, original_type=original_type),
    }
    body = json.dumps(envelope, ensure_ascii=False).encode("utf-8")
    headers = wechatpay.notification_headers(platform_private_key, platform_serial, body, timestamp=timestamp)
    headers["Content-Type"] = "application/json"
    return body, headers


def post(url, body, headers):
    """POST a notification and return the HTTP status, or None when the receiver was unreachable."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=DELIVERY_TIMEOUT_SECONDS) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        logger.warning("Delivery to %s failed: %s", url, error)
        return None


class _Handler(BaseHTTPRequestHandler):
    simulator = None
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        logger.debug("%s " + format, self.address_string(), *args)

    def _reply(self, status, payload=None):
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8") if payload is not None else b""
        self.send_response(status)
        # 2xx replies are signed by the platform key like the channel's, so clients can verify them.
        if 200 <= status < 300:
            headers = wechatpay.notification_headers(self.simulator.platform_private_key, self.simulator.platform_serial, body)
            for name, value in headers.items():
                self.send_header(name, value)
        self.send_header("Request-ID", secrets.token_hex(12))
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_file(self, data):
        # The channel does not sign bill downloads; the SHA-1 from the tradebill reply protects them.
        self.send_response(200)
        gzipped = data[:2] == b"\x1f\x8b"
        self.send_header("Content-Type", "application/gzip" if gzipped else "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _fail(self, status, code, message):
        self._reply(status, {"code": code, "message": message})

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self, body):
        try:
            fields = wechatpay.parse_authorization(self.headers.get("Authorization"))
        except wechatpay.WechatPayError as error:
            self._fail(401, "SIGN_ERROR", str(error))
            return None
        key = self.simulator.merchant_public_keys.get(fields["mchid"])
        message = wechatpay.request_message(self.command, self.path, fields["timestamp"], fields["nonce_str"], body.decode("utf-8"))
        if key is None or not wechatpay.signature_is_valid(key, message, fields["signature"]):
            self._fail(401, "SIGN_ERROR", "signature verification failed")
            return None
        if abs(time.time() - int(fields["timestamp"])) >= wechatpay.REPLAY_WINDOW_SECONDS:
            self._fail(401, "SIGN_ERROR", "timestamp is outside the 5-minute window")
            return None
        return fields

    def do_POST(self):
        body = self._body()
        if self.path == "/simulator/pay":
            return self._simulate_pay(body)
        fields = self._authorized(body)
        if fields is None:
            return None
        if self.path == wechatpay.REFUND_PATH:
            try:
                return self._reply(200, self.simulator.refund(json.loads(body)))
            except KeyError as error:
                return self._fail(404, "RESOURCE_NOT_EXISTS", str(error))
            except (ValueError, TypeError) as error:
                return self._fail(400, "INVALID_REQUEST", str(error))
        if self.path != wechatpay.NATIVE_ORDER_PATH:
            return self._fail(404, "NOT_FOUND", f"{self.path} is not simulated")
        try:
            order = json.loads(body)
            if order["sp_mchid"] != fields["mchid"]:
                return self._fail(400, "INVALID_REQUEST", "sp_mchid does not match the signing merchant")
            wechatpay.native_order_body(
                sp_appid=order.get("sp_appid", ""), sp_mchid=order["sp_mchid"], sub_mchid=order["sub_mchid"],
                out_trade_no=order["out_trade_no"], total_fen=order["amount"]["total"], description=order["description"],
                notify_url=order["notify_url"], attach=order.get("attach", ""),
            )
            code_url = self.simulator.create_order(order)
        except (ValueError, KeyError, TypeError, wechatpay.WechatPayError) as error:
            return self._fail(400, "INVALID_REQUEST", str(error))
        return self._reply(200, {"code_url": code_url})

    def _simulate_pay(self, body):
        try:
            request = json.loads(body)
            transaction_id = self.simulator.pay(request["sub_mchid"], request["out_trade_no"])
        except KeyError as error:
            return self._fail(404, "ORDER_NOT_EXIST", str(error))
        except ValueError as error:
            return self._fail(400, "INVALID_REQUEST", str(error))
        return self._reply(200, {"transaction_id": transaction_id})

    def do_GET(self):
        if self.path == "/simulator/deliveries":
            with self.simulator.lock:
                return self._reply(200, {"deliveries": list(self.simulator.deliveries)})
        fields = self._authorized(b"")
        if fields is None:
            return None
        path, _, query = self.path.partition("?")
        if path == wechatpay.TRADE_BILL_PATH:
            return self._reply(*self.simulator.bill_download(query, f"http://127.0.0.1:{self.server.server_port}"))
        if path == BILL_DOWNLOAD_PATH:
            data = self.simulator.bill_files.get(dict(urllib.parse.parse_qsl(query)).get("token", ""))
            if data is None:
                return self._fail(404, "RESOURCE_NOT_EXISTS", "download token unknown or expired")
            return self._send_file(data)
        if path.startswith(wechatpay.REFUND_PATH + "/"):
            out_refund_no = urllib.parse.unquote(path[len(wechatpay.REFUND_PATH) + 1:])
            try:
                return self._reply(200, self.simulator.refund_state(dict(urllib.parse.parse_qsl(query)).get("sub_mchid"), out_refund_no))
            except KeyError as error:
                return self._fail(404, "RESOURCE_NOT_EXISTS", str(error))
        prefix = "/v3/pay/partner/transactions/out-trade-no/"
        if not self.path.startswith(prefix):
            return self._fail(404, "NOT_FOUND", f"{self.path} is not simulated")
        out_trade_no, _, query = self.path[len(prefix):].partition("?")
        params = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
        order = self.simulator.orders.get((params.get("sub_mchid"), out_trade_no))
        if order is None:
            return self._fail(404, "ORDER_NOT_EXIST", f"order {out_trade_no} not found")
        return self._reply(200, {"out_trade_no": out_trade_no, "trade_state": order["state"], "transaction_id": order["transaction_id"]})


def _write_keys(key_dir):
    """Generate a merchant key pair, a platform key pair and an APIv3 key into `key_dir`."""
    write_key_pairs(key_dir, ("merchant", "platform"))
    (key_dir / "apiv3.key").write_text(secrets.token_hex(16))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 to listen on")
    parser.add_argument("--key-dir", type=Path, default=Path("instance/wechatpay-simulator"),
                        help="directory with (or to receive) the key files")
    parser.add_argument("--sp-mchid", default="1900000100", help="service provider merchant id allowed to call")
    parser.add_argument("--platform-serial", default="PUB_KEY_ID_0100000000000000000000000000000000",
                        help="Wechatpay-Serial sent with notifications")
    parser.add_argument("--time-scale", type=float, default=1000.0,
                        help="divisor of the retry delays (1000: the first retry after 15 ms)")
    parser.add_argument("--max-attempts", type=int, default=len(RETRY_SCHEDULE_SECONDS) + 1,
                        help="deliveries per notification before giving up (at most 16)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if not (args.key_dir / "platform_private.pem").exists():
        _write_keys(args.key_dir)
    simulator = Simulator(
        merchant_public_keys={args.sp_mchid: wechatpay.load_public_key(args.key_dir / "merchant_public.pem")},
        platform_private_key=wechatpay.load_private_key(args.key_dir / "platform_private.pem"),
        platform_serial=args.platform_serial,
        apiv3_key=wechatpay.load_apiv3_key(args.key_dir / "apiv3.key"),
        time_scale=args.time_scale,
        max_attempts=args.max_attempts,
    )
    url = simulator.start(args.port)
    logger.info("WeChat Pay simulator on %s, keys in %s, platform serial %s", url, args.key_dir, args.platform_serial)
    run_until_interrupted(simulator)


if __name__ == "__main__":
    main()
