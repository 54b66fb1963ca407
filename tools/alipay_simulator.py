"""A local Alipay OpenAPI gateway simulator for QR (precreate) orders, on 127.0.0.1 only.

It verifies the RSA2 signature of every gateway call with the calling app's public key,
signs every reply with its own "Alipay" key, and on `pay` sends a form-encoded, signed
trade_status_sync notification to the order's notify_url. Deliveries follow Alipay's retry
schedule (4m, 10m, 10m, 1h, 2h, 6h, 15h) divided by --time-scale, keep the notify_id and
renew notify_time on every send, and stop at a reply body of exactly `success`.

    python tools/alipay_simulator.py --port 8766 --key-dir /tmp/alisim

Without key files the simulator writes fresh ones into --key-dir: app_private.pem (configure
it with alipay_public.pem as ALIPAY_APP_KEY_FILES for the app id printed at start),
app_public.pem and alipay_private.pem.

Gateway methods: alipay.trade.precreate, alipay.trade.query, alipay.trade.refund,
alipay.trade.fastpay.refund.query, alipay.trade.close and
alipay.data.dataservice.bill.downloadurl.query, whose URL serves the day's trade bill as a
zip of GBK CSV files (a day without trades gets the business error isp.bill_not_exist). A
call with app_auth_token acts for the app that granted the token (ISV mode); its
notifications carry that app as auth_app_id. Endpoints besides the gateway:
    POST /simulator/pay   {"app_id": "...", "out_trade_no": "...", "total_amount": "optional"}
    GET  /simulator/deliveries
"""

import argparse
import csv
import io
import json
import logging
import secrets
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from datetime import date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from tools.simulator_server import SimulatorServer, run_until_interrupted, write_key_pairs  # noqa: E402
from app.integrations import alipay, wechatpay  # noqa: E402
from app.integrations.channel import CHINA_TIME  # noqa: E402

logger = logging.getLogger("alipay_simulator")
# Delays before each resend, in seconds: 4m, 10m, 10m, 1h, 2h, 6h, 15h (8 sends in about 25 h).
RETRY_SCHEDULE_SECONDS = (240, 600, 600, 3600, 7200, 21600, 54000)
DELIVERY_TIMEOUT_SECONDS = 5
GATEWAY_PATH = "/gateway.do"
BILL_PATH = "/downloadBillFile.resource"
BILL_HEADER = (
    "支付宝交易号", "商户订单号", "业务类型", "商品名称", "创建时间", "完成时间", "门店编号", "门店名称", "操作员", "终端号", "对方账户",
    "订单金额（元）", "商家实收（元）", "支付宝红包（元）", "集分宝（元）", "支付宝优惠（元）", "商家优惠（元）", "券核销金额（元）", "券名称",
    "商家红包消费金额（元）", "卡消费金额（元）", "退款批次号/请求号", "服务费（元）", "分润（元）", "备注",
)


class Simulator(SimulatorServer):
    """Orders, keys and delivery threads of one simulated Alipay gateway."""

    def __init__(self, app_public_keys, alipay_private_key, auth_tokens=None, time_scale=1000.0, max_attempts=8):
        # app_public_keys: {app_id: RSA public key} of the apps allowed to call.
        # auth_tokens: {app_auth_token: company app id} granted to the ISV app.
        self.app_public_keys = app_public_keys
        self.alipay_private_key = alipay_private_key
        self.auth_tokens = auth_tokens or {}
        self.time_scale = time_scale
        self.max_attempts = max(1, min(max_attempts, len(RETRY_SCHEDULE_SECONDS) + 1))
        self.orders = {}  # (merchant app id, out_trade_no) -> order dict
        self.deliveries = []
        self.calls = []
        # One dict per line of the daily trade bills: merchant, trade_no, out_trade_no, kind
        # (交易 or 退款), amount (negative for a refund), time, batch (out_request_no of a
        # refund). Tests edit it to plant differences.
        self.bill_rows = []
        self.bill_files = {}
        self.base_url = ""
        # False loses the refund notifications; True also answers refund calls with HTTP 504
        # after making the refund, as a timed-out proxy would.
        self.refund_notifications = True
        self.lose_refund_replies = False
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    # -- gateway --------------------------------------------------------------------------

    def handle_call(self, params):
        """Verify and run one gateway call; return (response object, method, whether the reply is signed)."""
        method = params.get("method", "")
        app_id = params.get("app_id", "")
        key = self.app_public_keys.get(app_id)
        if key is None:
            return {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-app-id", "sub_msg": "无效的AppID参数"}, method, False
        if params.get("sign_type") != alipay.SIGN_TYPE or not alipay.rsa2_verify(key, alipay.signing_text(params), params.get("sign", "")):
            return {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-signature", "sub_msg": "验签出错"}, method, True
        merchant = app_id
        token = params.get("app_auth_token")
        if token:
            merchant = self.auth_tokens.get(token)
            if merchant is None:
                return {"code": "20001", "msg": "Insufficient Token Permissions", "sub_code": "aop.invalid-app-auth-token"}, method, True
        try:
            content = json.loads(params.get("biz_content") or "{}")
        except ValueError:
            return _business_error("ACQ.INVALID_PARAMETER", "biz_content 不是 JSON"), method, True
        with self.lock:
            self.calls.append({"method": method, "app_id": app_id, "merchant": merchant, "content": content})
        handler = {
            "alipay.trade.precreate": self._precreate, "alipay.trade.query": self._query,
            "alipay.trade.refund": self._refund, "alipay.trade.close": self._close,
            "alipay.trade.fastpay.refund.query": self._refund_query,
            "alipay.data.dataservice.bill.downloadurl.query": self._bill_url,
        }.get(method)
        if handler is None:
            return {"code": "40004", "msg": "Business Failed", "sub_code": "isv.invalid-method"}, method, True
        return handler(params, merchant, content), method, True

    def _precreate(self, params, merchant, content):
        try:
            alipay.check_out_trade_no(content.get("out_trade_no"))
            amount = alipay.channel.yuan(content.get("total_amount", ""))
        except (alipay.AlipayError, ValueError, ArithmeticError) as error:
            return _business_error("ACQ.INVALID_PARAMETER", str(error))
        key = (merchant, content["out_trade_no"])
        with self.lock:
            existing = self.orders.get(key)
            if existing is not None:
                if existing["amount"] != amount:
                    return _business_error("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
                return {"code": "10000", "msg": "Success", "out_trade_no": content["out_trade_no"], "qr_code": existing["qr_code"]}
            order = {
                "app_id": params["app_id"], "merchant": merchant, "out_trade_no": content["out_trade_no"], "amount": amount,
                "subject": content.get("subject", ""), "notify_url": params.get("notify_url", ""), "status": "WAIT_BUYER_PAY",
                "trade_no": None, "refunds": {}, "qr_code": f"https://qr.alipay.com/bax{secrets.token_hex(10)}",
            }
            self.orders[key] = order
        return {"code": "10000", "msg": "Success", "out_trade_no": content["out_trade_no"], "qr_code": order["qr_code"]}

    def _order(self, merchant, content):
        return self.orders.get((merchant, content.get("out_trade_no")))

    def _query(self, params, merchant, content):
        order = self._order(merchant, content)
        if order is None:
            return _business_error("ACQ.TRADE_NOT_EXIST", "交易不存在")
        return {
            "code": "10000", "msg": "Success", "out_trade_no": order["out_trade_no"], "trade_no": order["trade_no"] or "",
            "trade_status": order["status"], "total_amount": f"{order['amount']:.2f}",
        }

    def _close(self, params, merchant, content):
        order = self._order(merchant, content)
        if order is None:
            return _business_error("ACQ.TRADE_NOT_EXIST", "交易不存在")
        with self.lock:
            if order["status"] != "WAIT_BUYER_PAY":
                return _business_error("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
            order["status"] = "TRADE_CLOSED"
        return {"code": "10000", "msg": "Success", "out_trade_no": order["out_trade_no"]}

    def _refund(self, params, merchant, content):
        order = self._order(merchant, content)
        if order is None:
            return _business_error("ACQ.TRADE_NOT_EXIST", "交易不存在")
        request_no = content.get("out_request_no") or order["out_trade_no"]
        try:
            amount = alipay.channel.yuan(content.get("refund_amount", ""))
        except (ValueError, ArithmeticError):
            return _business_error("ACQ.INVALID_PARAMETER", "refund_amount 无效")
        with self.lock:
            if order["status"] not in ("TRADE_SUCCESS", "TRADE_CLOSED") or order["trade_no"] is None:
                return _business_error("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
            if request_no in order["refunds"]:
                # The same out_request_no is the same refund: no money moves again.
                return self._refund_reply(order, "N")
            refunded = sum(order["refunds"].values(), Decimal("0"))
            if amount <= 0 or refunded + amount > order["amount"]:
                return _business_error("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
            order["refunds"][request_no] = amount
            if refunded + amount == order["amount"]:
                order["status"] = "TRADE_CLOSED"
            notify_url = order["notify_url"] if self.refund_notifications else ""
            self.bill_rows.append({
                "merchant": merchant, "trade_no": order["trade_no"], "out_trade_no": order["out_trade_no"], "kind": "退款",
                "amount": -amount, "time": datetime.now(CHINA_TIME), "batch": request_no,
            })
        if notify_url:
            extra = {"out_biz_no": request_no, "refund_fee": f"{refunded + amount:.2f}", "gmt_refund": _now_text()}
            self._start_delivery(order, extra)
        return self._refund_reply(order, "Y")

    def _refund_query(self, params, merchant, content):
        order = self._order(merchant, content)
        if order is None:
            return _business_error("ACQ.TRADE_NOT_EXIST", "交易不存在")
        request_no = content.get("out_request_no") or order["out_trade_no"]
        amount = order["refunds"].get(request_no)
        reply = {"code": "10000", "msg": "Success", "trade_no": order["trade_no"] or "", "out_trade_no": order["out_trade_no"]}
        if amount is None:
            # Alipay answers a refund it never made with an empty success.
            return reply
        return {**reply, "out_request_no": request_no, "refund_amount": f"{amount:.2f}", "total_amount": f"{order['amount']:.2f}",
                "refund_status": "REFUND_SUCCESS"}

    def _bill_url(self, params, merchant, content):
        if content.get("bill_type") != "trade":
            return _business_error("isv.invalid-bill-type", "账单类型不合法；模拟器只生成 trade 账单")
        try:
            day = date.fromisoformat(content.get("bill_date", ""))
        except ValueError:
            return _business_error("isp.bill_date_error", "账单日期格式不正确")
        with self.lock:
            traded = any(row["merchant"] == merchant and row["time"].astimezone(CHINA_TIME).date() == day for row in self.bill_rows)
        if not traded:
            # Alipay writes no bill for a day without trades and replies isp.bill_not_exist instead of an empty one.
            return _business_error("isp.bill_not_exist", "账单不存在")
        token = secrets.token_hex(12)
        data = self.trade_bill(merchant, day)
        with self.lock:
            self.bill_files[token] = data
        return {"code": "10000", "msg": "Success", "bill_download_url": f"{self.base_url}{BILL_PATH}?fileId={token}"}

    def trade_bill(self, merchant, day):
        """The trade bill of an app and day as Alipay zips it: a GBK detail CSV and a summary CSV."""
        with self.lock:
            rows = [row for row in self.bill_rows if row["merchant"] == merchant and row["time"].astimezone(CHINA_TIME).date() == day]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        for line in ("#支付宝业务明细查询", f"#账号：[{merchant}]", f"#起始日期：[{day:%Y年%m月%d日} 00:00:00]",
                     "#-----------------------------------------业务明细列表----------------------------------------"):
            buffer.write(line + "\r\n")
        writer.writerow(BILL_HEADER)
        for row in rows:
            stamp = row["time"].astimezone(CHINA_TIME).strftime(alipay.TIMESTAMP_FORMAT)
            amount = f"{row['amount']:.2f}"
            writer.writerow([
                row["trade_no"], row["out_trade_no"], row["kind"], "热费", stamp, stamp, "", "", "", "", "buyer@example.com",
                amount, amount, "0.00", "0.00", "0.00", "0.00", "0.00", "", "0.00", "0.00", row.get("batch", ""), "0.00", "0.00", "",
            ])
        buffer.write("#-----------------------------------------业务明细列表结束------------------------------------\r\n")
        buffer.write(f"#交易合计：{sum(1 for r in rows if r['kind'] == '交易')}笔\r\n")
        archive_bytes = io.BytesIO()
        with zipfile.ZipFile(archive_bytes, "w") as archive:
            archive.writestr(f"{merchant}_{day:%Y%m%d}_业务明细.csv", buffer.getvalue().encode("gbk"))
            archive.writestr(f"{merchant}_{day:%Y%m%d}_业务明细(汇总).csv", "#汇总\r\n".encode("gbk"))
        return archive_bytes.getvalue()

    def _refund_reply(self, order, fund_change):
        return {
            "code": "10000", "msg": "Success", "trade_no": order["trade_no"], "out_trade_no": order["out_trade_no"],
            "fund_change": fund_change, "refund_fee": f"{sum(order['refunds'].values(), Decimal('0')):.2f}",
        }

    def signed_reply(self, method, response):
        """Serialize a reply as the gateway does: the response object's raw text is what the sign covers."""
        raw = json.dumps(response, ensure_ascii=False, separators=(",", ":"))
        signature = alipay.rsa2_sign(self.alipay_private_key, raw)
        return f'{{"{alipay.response_key(method)}":{raw},"sign":"{signature}"}}'.encode("utf-8")

    # -- notifications --------------------------------------------------------------------

    def pay(self, merchant, out_trade_no, total_amount=None):
        """Mark an order paid and start delivering its notification; return the trade_no."""
        with self.lock:
            order = self.orders.get((merchant, out_trade_no))
            if order is None:
                raise KeyError(f"order {out_trade_no} of app {merchant} not found")
            if order["status"] != "WAIT_BUYER_PAY":
                raise ValueError(f"order {out_trade_no} is {order['status']}, not WAIT_BUYER_PAY")
            order["status"] = "TRADE_SUCCESS"
            order["trade_no"] = new_trade_no()
            order["gmt_payment"] = _now_text()
            self.bill_rows.append({
                "merchant": merchant, "trade_no": order["trade_no"], "out_trade_no": out_trade_no, "kind": "交易",
                "amount": order["amount"], "time": channel_time(order["gmt_payment"]), "batch": "",
            })
        extra = {"total_amount": total_amount} if total_amount is not None else {}
        self._start_delivery(order, extra)
        return order["trade_no"]

    def notification_params(self, order, extra=None, notify_id=None, notify_time=None):
        """The fields of a trade_status_sync notification of an order, without sign."""
        params = {
            "notify_time": notify_time or _now_text(), "notify_type": "trade_status_sync",
            "notify_id": notify_id or secrets.token_hex(16), "app_id": order["app_id"], "charset": "utf-8", "version": "1.0",
            "trade_no": order["trade_no"], "out_trade_no": order["out_trade_no"], "buyer_id": "2088" + secrets.token_hex(6)[:12],
            "seller_id": "2088000000000001", "trade_status": order["status"], "total_amount": f"{order['amount']:.2f}",
            "receipt_amount": f"{order['amount']:.2f}", "buyer_pay_amount": f"{order['amount']:.2f}", "subject": order["subject"],
            "gmt_create": _now_text(), "gmt_payment": order.get("gmt_payment", _now_text()),
            "fund_bill_list": json.dumps([{"amount": f"{order['amount']:.2f}", "fundChannel": "ALIPAYACCOUNT"}]),
        }
        if order["merchant"] != order["app_id"]:
            params["auth_app_id"] = order["merchant"]
        params.update(extra or {})
        return params

    def sign_notification(self, params):
        """Sign notification fields and return the form-encoded body."""
        signed = dict(params)
        signed["sign_type"] = alipay.SIGN_TYPE
        signed["sign"] = alipay.rsa2_sign(self.alipay_private_key, alipay.signing_text(signed, exclude=("sign", "sign_type")))
        return urllib.parse.urlencode(signed).encode("utf-8")

    def _start_delivery(self, order, extra):
        notify_id = secrets.token_hex(16)
        snapshot = dict(order)
        thread = threading.Thread(target=self._deliver, args=(snapshot, extra, notify_id), daemon=True)
        thread.start()

    def _deliver(self, order, extra, notify_id):
        url = order["notify_url"]
        for attempt in range(1, self.max_attempts + 1):
            body = self.sign_notification(self.notification_params(order, extra, notify_id=notify_id))
            status, reply = post(url, body)
            with self.lock:
                self.deliveries.append({"trade_no": order["trade_no"], "notify_id": notify_id, "attempt": attempt, "status": status, "reply": reply})
            if reply == b"success":
                return
            if attempt > len(RETRY_SCHEDULE_SECONDS) or self.stopping.is_set():
                break
            logger.info("Delivery %d of %s got %s %r; resending", attempt, order["trade_no"], status, reply[:20] if reply else reply)
            if self.stopping.wait(RETRY_SCHEDULE_SECONDS[attempt - 1] / self.time_scale):
                break
        logger.warning("Gave up delivering %s after %d attempts", order["trade_no"], attempt)

    # -- server ---------------------------------------------------------------------------

    def start(self, port=0):
        """Serve on 127.0.0.1:`port` in a daemon thread; return the gateway URL."""
        port = self.serve(_Handler, port, "alipay-simulator")
        self.base_url = f"http://127.0.0.1:{port}"
        return f"{self.base_url}{GATEWAY_PATH}"


def _business_error(sub_code, sub_msg):
    return {"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg}


def channel_time(text):
    return datetime.strptime(text, alipay.TIMESTAMP_FORMAT).replace(tzinfo=CHINA_TIME)


def _now_text():
    return datetime.now(CHINA_TIME).strftime(alipay.TIMESTAMP_FORMAT)


def new_trade_no():
    return datetime.now(CHINA_TIME).strftime("%Y%m%d") + "22001" + "".join(secrets.choice("0123456789") for _ in range(15))


def post(url, body):
    """POST a form-encoded notification; return (HTTP status, reply body), or (None, b"") when unreachable."""
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    try:
        with urllib.request.urlopen(request, timeout=DELIVERY_TIMEOUT_SECONDS) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        logger.warning("Delivery to %s failed: %s", url, error)
        return None, b""


class _Handler(BaseHTTPRequestHandler):
    simulator = None
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        logger.debug("%s " + format, self.address_string(), *args)

    def _send(self, status, body, content_type="application/json;charset=utf-8"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status, payload):
        self._send(status, json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8"))

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        if path == "/simulator/pay":
            return self._simulate_pay(body)
        if path != GATEWAY_PATH:
            return self._json(404, {"error": f"{self.path} is not simulated"})
        params = dict(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        response, method, sign = self.simulator.handle_call(params)
        if method == "alipay.trade.refund" and self.simulator.lose_refund_replies:
            return self._json(504, {"error": "gateway timeout (simulated after the refund was made)"})
        if not sign:
            # The gateway sends unsigned replies for errors before the app is known.
            return self._send(200, json.dumps({"error_response": response}, ensure_ascii=False).encode("utf-8"))
        return self._send(200, self.simulator.signed_reply(method or "error", response))

    def _simulate_pay(self, body):
        try:
            request = json.loads(body)
            trade_no = self.simulator.pay(request["app_id"], request["out_trade_no"], request.get("total_amount"))
        except KeyError as error:
            return self._json(404, {"error": str(error)})
        except ValueError as error:
            return self._json(400, {"error": str(error)})
        return self._json(200, {"trade_no": trade_no})

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path == BILL_PATH:
            data = self.simulator.bill_files.get(dict(urllib.parse.parse_qsl(query)).get("fileId", ""))
            if data is None:
                return self._json(404, {"error": "bill file unknown or expired"})
            return self._send(200, data, "application/zip")
        if self.path == "/simulator/deliveries":
            with self.simulator.lock:
                return self._json(200, {"deliveries": [dict(d, reply=(d["reply"] or b"").decode("utf-8", "replace")) for d in self.simulator.deliveries]})
        return self._json(404, {"error": f"{self.path} is not simulated"})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 to listen on")
    parser.add_argument("--key-dir", type=Path, default=Path("instance/alipay-simulator"), help="directory with (or to receive) the key files")
    parser.add_argument("--app-id", action="append", default=None,
                        help="app id allowed to call with app_public.pem (repeatable; default 2021000000000001)")
    parser.add_argument("--auth-token", action="append", default=[],
                        help="TOKEN=APPID: an app_auth_token the calling app may use to act for APPID (repeatable)")
    parser.add_argument("--time-scale", type=float, default=1000.0, help="divisor of the resend delays (1000: the first resend after 0.24 s)")
    parser.add_argument("--max-attempts", type=int, default=len(RETRY_SCHEDULE_SECONDS) + 1, help="sends per notification before giving up (at most 8)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if not (args.key_dir / "alipay_private.pem").exists():
        write_key_pairs(args.key_dir, ("app", "alipay"))
    app_key = wechatpay.load_public_key(args.key_dir / "app_public.pem")
    app_ids = args.app_id or ["2021000000000001"]
    simulator = Simulator(
        app_public_keys={app_id: app_key for app_id in app_ids},
        alipay_private_key=wechatpay.load_private_key(args.key_dir / "alipay_private.pem"),
        auth_tokens=dict(item.split("=", 1) for item in args.auth_token if "=" in item),
        time_scale=args.time_scale, max_attempts=args.max_attempts,
    )
    url = simulator.start(args.port)
    logger.info("Alipay simulator gateway on %s for apps %s, keys in %s", url, ", ".join(app_ids), args.key_dir)
    run_until_interrupted(simulator)


if __name__ == "__main__":
    main()
