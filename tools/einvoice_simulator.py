"""A local e-invoice vendor simulator in the style of the Nuonuo open platform, on 127.0.0.1 only.

It checks the X-Nuonuo-Sign of every call, accepts blue and red invoice orders, and reports
each as in progress (status 20) until --delay seconds after submission, then as issued
(status 2, with a 20-digit number and a PDF link) or, for a share --failure-rate of orders,
as failed (status 22). A share --unavailable-rate of calls gets HTTP 503 instead of an answer.

    python tools/einvoice_simulator.py --port 8766 --app-key SIMKEY --app-secret SIMSECRET

Set HEATFLOW_EINVOICE_API_BASE=http://127.0.0.1:8766/open/v1/services and the same key and
secret as HEATFLOW_EINVOICE_APP_KEY and HEATFLOW_EINVOICE_APP_SECRET.

Endpoints besides the vendor's own:
    GET  /pdf/<serial>.pdf                 the issued invoice as PDF
    POST /simulator/fail-next {"count": n}  the next n orders fail whatever the failure rate
    GET  /simulator/orders                  orders received so far
"""

import argparse
import html
import json
import logging
import random
import secrets
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.integrations import nuonuo  # noqa: E402
from tools.simulator_server import run_until_interrupted  # noqa: E402

logger = logging.getLogger("einvoice_simulator")
CHINA_TIME = timezone(timedelta(hours=8))
SERVICES_PATH = "/open/v1/services"
SIGN_WINDOW_SECONDS = 300


class EinvoiceSimulator:
    """Orders, outcomes and the HTTP server of one simulated vendor."""

    def __init__(self, app_key, app_secret, access_token="", delay_seconds=1.0, failure_rate=0.0, unavailable_rate=0.0, seed=None):
        self.app_key = app_key
        self.app_secret = app_secret
        self.access_token = access_token
        self.delay_seconds = delay_seconds
        self.failure_rate = failure_rate
        self.unavailable_rate = unavailable_rate
        self.random = random.Random(seed)
        self.orders = {}
        self.by_serial = {}
        self.pdfs = {}
        self.fail_next = 0
        self.calls = 0
        self.lock = threading.Lock()
        self.server = None
        self.thread = None
        self.base_url = ""

    # -- vendor side ----------------------------------------------------------------------

    def submit(self, user_tax, order):
        """Store an order and decide its outcome now; raise nuonuo.VendorError as the vendor would reject it."""
        order_no = str(order.get("orderNo", ""))
        if not order_no or len(order_no) > 40:
            raise nuonuo.VendorError("E9101", "orderNo 须为 1 到 40 个字符")
        if order.get("salerTaxNum") != user_tax:
            raise nuonuo.VendorError("E9102", "salerTaxNum 与 userTax 不一致")
        total = _order_total(order)
        with self.lock:
            if order_no in self.orders:
                raise nuonuo.VendorError(nuonuo.DUPLICATE_ORDER_CODE, f"订单编号 {order_no} 已存在")
            if str(order.get("invoiceType")) == "2":
                self._check_red(order, total)
            fails = self.fail_next > 0 or self.random.random() < self.failure_rate
            self.fail_next = max(0, self.fail_next - 1)
            serial = datetime.now(CHINA_TIME).strftime("%y%m%d%H%M%S") + secrets.token_hex(5)
            self.orders[order_no] = {
                "order": order, "serial": serial, "total": total, "submitted": time.monotonic(),
                "fails": fails, "number": "", "invoice_time": None,
            }
            self.by_serial[serial] = order_no
        return serial

    def _check_red(self, order, total):
        blue_number = str(order.get("invoiceNum", ""))
        blue = next((o for o in self.orders.values() if o["number"] == blue_number and str(o["order"].get("invoiceType")) == "1"), None)
        if blue is None:
            raise nuonuo.VendorError("E9210", f"原蓝字发票 {blue_number} 不存在或尚未开具")
        reversed_before = sum(
            (-o["total"] for o in self.orders.values() if str(o["order"].get("invoiceNum", "")) == blue_number and str(o["order"].get("invoiceType")) == "2"),
            Decimal("0"),
        )
        if total >= 0 or -total + reversed_before > blue["total"]:
            raise nuonuo.VendorError("E9211", f"红字金额 {total} 无效：须为负数且累计不超过原发票金额 {blue['total']}")

    def result(self, order_no):
        """Return the queryInvoiceResult row of an order, or None."""
        with self.lock:
            entry = self.orders.get(order_no)
            if entry is None:
                return None
            row = {"orderNo": order_no, "serialNo": entry["serial"], "status": "20", "failCause": ""}
            if time.monotonic() - entry["submitted"] < self.delay_seconds:
                return row
            if entry["fails"]:
                row.update(status="22", failCause="模拟开票失败：税控服务暂不可用，请重新开票")
                return row
            if not entry["number"]:
                entry["number"] = "25" + "".join(str(self.random.randrange(10)) for _ in range(18))
                entry["invoice_time"] = int(time.time() * 1000)
            row.update(
                status="2", allElectronicInvoiceNumber=entry["number"], invoiceTime=entry["invoice_time"],
                pdfUrl=f"{self.base_url}/pdf/{entry['serial']}.pdf",
            )
            return row

    def pdf(self, serial):
        """Render (once) and return the PDF of an issued invoice, or None."""
        with self.lock:
            order_no = self.by_serial.get(serial)
            entry = self.orders.get(order_no) if order_no else None
            if entry is None or not entry["number"]:
                return None
            cached = self.pdfs.get(serial)
        if cached is not None:
            return cached
        data = render_invoice_pdf(entry)
        with self.lock:
            self.pdfs[serial] = data
        return data

    # -- server ---------------------------------------------------------------------------

    def start(self, port=0):
        handler = type("Handler", (_Handler,), {"simulator": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="einvoice-simulator", daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"
        return self.base_url

    @property
    def services_url(self):
        return self.base_url + SERVICES_PATH

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=10)


def _order_total(order):
    details = order.get("invoiceDetail")
    if not isinstance(details, list) or not details:
        raise nuonuo.VendorError("E9103", "invoiceDetail 不能为空")
    total = Decimal("0")
    for index, line in enumerate(details, start=1):
        try:
            included = Decimal(str(line["taxIncludedAmount"]))
            excluded = Decimal(str(line["taxExcludedAmount"]))
            tax = Decimal(str(line["tax"]))
        except (KeyError, InvalidOperation) as error:
            raise nuonuo.VendorError("E9104", f"第 {index} 行金额无效：{error}") from None
        if excluded + tax != included:
            raise nuonuo.VendorError("E9105", f"第 {index} 行不含税金额 {excluded} 加税额 {tax} 不等于含税金额 {included}")
        total += included
    return total


def render_invoice_pdf(entry):
    """Draw a simple invoice page with WeasyPrint; the system's Noto CJK font covers the Chinese text."""
    from weasyprint import HTML

    order = entry["order"]
    red = str(order.get("invoiceType")) == "2"
    rows = "".join(
        f"<tr><td>{html.escape(str(d.get('goodsName', '')))}</td><td>{html.escape(str(d.get('taxRate', '')))}</td>"
        f"<td>{html.escape(str(d.get('taxExcludedAmount')))}</td><td>{html.escape(str(d.get('tax')))}</td>"
        f"<td>{html.escape(str(d.get('taxIncludedAmount')))}</td></tr>"
        for d in order["invoiceDetail"]
    )
    page = f"""<html><head><meta charset="utf-8"><style>
      body {{ font-family: "Noto Sans CJK SC", sans-serif; font-size: 11pt; }}
      table {{ border-collapse: collapse; width: 100%; }} td, th {{ border: 1px solid #999; padding: 3pt; }}
      h1 {{ text-align: center; color: {'#b00' if red else '#036'}; }}
    </style></head><body>
    <h1>电子发票（{'红字' if red else '普通发票'}）</h1>
    <p>发票号码：{entry['number']}　开票日期：{datetime.fromtimestamp(entry['invoice_time'] / 1000, CHINA_TIME):%Y-%m-%d}</p>
    <p>购买方：{html.escape(str(order.get('buyerName', '')))}</p>
    <p>销售方纳税人识别号：{html.escape(str(order.get('salerTaxNum', '')))}</p>
    <table><tr><th>项目名称</th><th>税率</th><th>金额</th><th>税额</th><th>价税合计</th></tr>{rows}</table>
    <p>价税合计（小写）：¥{entry['total']:.2f}</p>
    <p>备注：{html.escape(str(order.get('remark', '')))}</p>
    <p>订单编号：{html.escape(str(order.get('orderNo', '')))}　模拟开票服务商生成，仅供测试</p>
    </body></html>"""
    return HTML(string=page).write_pdf()


class _Handler(BaseHTTPRequestHandler):
    simulator = None
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        logger.debug("%s " + format, self.address_string(), *args)

    def _send(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _envelope(self, code, describe, result=None):
        payload = {"code": code, "describe": describe, "result": result}
        self._send(200, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json")

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_POST(self):
        sim = self.simulator
        body = self._body()
        path, _, query = self.path.partition("?")
        if path == "/simulator/fail-next":
            with sim.lock:
                sim.fail_next += int(json.loads(body or b"{}").get("count", 1))
            return self._envelope(nuonuo.SUCCESS_CODE, "ok", {"failNext": sim.fail_next})
        if path != SERVICES_PATH:
            return self._send(404, b"not simulated", "text/plain")
        with sim.lock:
            sim.calls += 1
            unavailable = sim.random.random() < sim.unavailable_rate
        if unavailable:
            return self._send(503, b"service unavailable (simulated)", "text/plain")
        params = dict(urllib.parse.parse_qsl(query))
        text = body.decode("utf-8", "replace")
        missing = [name for name in ("senid", "nonce", "timestamp", "appkey") if not params.get(name)]
        if missing:
            return self._envelope("E1007", f"缺少参数 {', '.join(missing)}")
        if params["appkey"] != sim.app_key:
            return self._envelope("E1001", "appkey 无效")
        if not params["timestamp"].isdigit() or abs(time.time() - int(params["timestamp"])) > SIGN_WINDOW_SECONDS:
            return self._envelope("E1002", "timestamp 超出时间窗口")
        if not nuonuo.signature_is_valid(sim.app_secret, sim.app_key, params["senid"], params["nonce"], params["timestamp"], text, self.headers.get("X-Nuonuo-Sign")):
            return self._envelope("E1003", "签名验证失败")
        if sim.access_token and self.headers.get("accessToken") != sim.access_token:
            return self._envelope("E1004", "accessToken 无效")
        method = self.headers.get("method", "")
        try:
            payload = json.loads(text)
            if method == nuonuo.ISSUE_METHOD:
                serial = sim.submit(self.headers.get("userTax", ""), payload["order"])
                return self._envelope(nuonuo.SUCCESS_CODE, "调用成功", {"invoiceSerialNum": serial})
            if method == nuonuo.QUERY_METHOD:
                rows = [row for row in (sim.result(no) for no in payload.get("orderNos", [])) if row is not None]
                if not rows:
                    return self._envelope(nuonuo.NOT_FOUND_CODE, "未查询到发票")
                return self._envelope(nuonuo.SUCCESS_CODE, "调用成功", rows)
        except nuonuo.VendorError as error:
            return self._envelope(error.code, error.describe)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            return self._envelope("E9999", f"请求无效：{type(error).__name__}")
        return self._envelope("E1005", f"方法 {method} 未模拟")

    def do_GET(self):
        sim = self.simulator
        if self.path == "/simulator/orders":
            with sim.lock:
                orders = {no: {"serial": e["serial"], "total": str(e["total"]), "fails": e["fails"], "number": e["number"]} for no, e in sim.orders.items()}
            return self._send(200, json.dumps(orders, ensure_ascii=False).encode("utf-8"), "application/json")
        if self.path.startswith("/pdf/") and self.path.endswith(".pdf"):
            data = sim.pdf(self.path[len("/pdf/"):-len(".pdf")])
            if data is None:
                return self._send(404, b"no such invoice", "text/plain")
            return self._send(200, data, "application/pdf")
        return self._send(404, b"not simulated", "text/plain")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8766, help="TCP port on 127.0.0.1 to listen on")
    parser.add_argument("--app-key", default="SIMKEY", help="app key callers must sign with")
    parser.add_argument("--app-secret", default="SIMSECRET", help="app secret of the HMAC-SHA1 signature")
    parser.add_argument("--access-token", default="", help="accessToken callers must send; empty accepts any")
    parser.add_argument("--delay", type=float, default=2.0, help="seconds an order stays in progress before its result")
    parser.add_argument("--failure-rate", type=float, default=0.1, help="share of orders that fail (0 to 1)")
    parser.add_argument("--unavailable-rate", type=float, default=0.05, help="share of calls answered with HTTP 503 (0 to 1)")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable outcomes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    simulator = EinvoiceSimulator(
        args.app_key, args.app_secret, access_token=args.access_token, delay_seconds=args.delay,
        failure_rate=args.failure_rate, unavailable_rate=args.unavailable_rate, seed=args.seed,
    )
    simulator.start(args.port)
    logger.info("E-invoice simulator on %s (delay %ss, failure rate %s)", simulator.services_url, args.delay, args.failure_rate)
    run_until_interrupted(simulator)


if __name__ == "__main__":
    main()
