"""WSGI route of the online channels' notifications, served before the Flask request stack.

`POST /payments/notify/wechat` (WeChat Pay) and `POST /payments/notify/alipay` (Alipay)
need none of what Flask's request hooks prepare for pages: the session cookie, the
logged-in user, the language, the CSRF check and the user's tenant scope. The channel signs
the request itself, and `receive_notification` verifies it (signature, replay window and,
for WeChat Pay, AES-256-GCM decryption) and sets the company scope it stores under. So this
middleware serves those paths inside an app context only, with the same code as the Flask
views, and hands every other request to Flask unchanged. Under cProfile (1,000 WeChat Pay
notifications through `app.wsgi_app` on PostgreSQL) the request hooks, the request context
and the response object took about a third of the endpoint's CPU time.

Every reply keeps the format its channel reads. WeChat Pay API v3 takes any 2xx as
received and reads `{"code": "FAIL", "message": ...}` on an error. Alipay reads only the
body, and exactly `success` stops its resends, so every error reply's body is `fail`.
"""

import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Callable

import sqlalchemy as sa
from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wsgi import get_input_stream

from app.extensions import db
from app.payments.inbox import apply_requests, receive_notification
from app.tenancy import scoped

logger = logging.getLogger(__name__)
# Seconds the channel is asked to wait after the database connection broke.
DATABASE_RETRY_AFTER_S = 5


def _wechat_fail(message):
    # Any non-2xx reply makes WeChat Pay send the notification again.
    return "application/json", json.dumps({"code": "FAIL", "message": message}).encode("utf-8")


def _alipay_fail(message):
    # Alipay reads only the body, so the message is dropped: any body other than "success" makes it send again.
    return "text/plain; charset=utf-8", b"fail"


@dataclass(frozen=True)
class NotifyRoute:
    """One channel's notification path: the channel code and the error reply in its format."""

    channel: str
    # message -> (Content-Type, body) of a reply that makes the channel send the notification again.
    fail_reply: Callable[[str], tuple[str, bytes]]


NOTIFY_ROUTES = {
    "/payments/notify/wechat": NotifyRoute("wechat", _wechat_fail),
    "/payments/notify/alipay": NotifyRoute("alipay", _alipay_fail),
}


class NotificationEndpoint:
    """WSGI middleware that serves the paths of NOTIFY_ROUTES and passes the rest to `wsgi_app`."""

    def __init__(self, app, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO")
        route = NOTIFY_ROUTES.get(path)
        if route is None or environ.get("REQUEST_METHOD") != "POST":
            return self.wsgi_app(environ, start_response)
        status, headers, body = self._answer(route, path, environ)
        start_response(status, headers + [("Content-Length", str(len(body)))])
        return [body]

    def _answer(self, route, path, environ):
        from app.web import NO_COMPANIES, security_headers

        extra = list(security_headers(self.app.config))

        def fail(status, message, more_headers=()):
            content_type, body = route.fail_reply(message)
            return _status_line(status), extra + list(more_headers) + [("Content-Type", content_type)], body

        try:
            raw_body = get_input_stream(environ, max_content_length=self.app.config.get("MAX_CONTENT_LENGTH")).read()
        except RequestEntityTooLarge:
            logger.warning("POST %s rejected: Content-Length %s is over the limit", path, environ.get("CONTENT_LENGTH"))
            return fail(413, "request body is too large")
        except ClientDisconnected:
            # The body ended before its Content-Length. Nothing was verified, so nothing is stored.
            logger.warning("POST %s rejected: body shorter than Content-Length %s", path, environ.get("CONTENT_LENGTH"))
            return fail(400, "request body is shorter than its Content-Length")
        with self.app.app_context(), scoped(NO_COMPANIES):
            try:
                receipt, reply = receive_notification(route.channel, EnvironHeaders(environ), raw_body)
                if receipt.outcome == "pending":
                    # After the commit, so the task finds the row.
                    apply_requests.request(receipt.company_id)
            except sa.exc.OperationalError as error:
                db.session.rollback()
                logger.error("Database connection failed on POST %s: %s", path, error)
                retry = [("Retry-After", str(DATABASE_RETRY_AFTER_S))]
                return fail(503, "database unavailable, nothing stored", retry)
            except Exception:
                db.session.rollback()
                logger.exception("Unhandled error on POST %s", path)
                return fail(500, "internal error, nothing stored")
        headers = extra + ([("Content-Type", reply.content_type)] if reply.body else [])
        return _status_line(reply.status), headers, reply.body


def _status_line(status):
    return f"{status} {HTTPStatus(status).phrase.upper()}"


def install_notification_endpoint(app):
    """Put the notification routes of WeChat Pay and Alipay in front of the app's WSGI callable."""
    app.wsgi_app = NotificationEndpoint(app, app.wsgi_app)
