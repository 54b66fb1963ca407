"""Constants and helpers of the Alipay tests."""

import urllib.error
import urllib.request

TJ_APP_ID = "2021000000000101"
QD_APP_ID = "2021000000000202"
ISV_APP_ID = "2021000000009999"
QD_AUTH_TOKEN = "202601BBqd0000000000000000000000auth"
FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


def post_form(url, body):
    """POST a form-encoded body to the app and return (status, body bytes)."""
    request = urllib.request.Request(url, data=body, headers=FORM, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def paid_params(simulator, order, **changes):
    """Mark an order paid inside the simulator without delivering; return its notification fields."""
    stored = simulator.orders[(order.sub_mchid, order.out_trade_no)]
    stored["status"] = "TRADE_SUCCESS"
    stored["trade_no"] = stored["trade_no"] or "2026011022001" + order.out_trade_no[-15:]
    params = simulator.notification_params(stored)
    params.update(changes)
    return params
