"""WSGI route of `POST /payments/notify/wechat`, served before the Flask request stack.

The WeChat Pay notification needs none of what Flask's request hooks prepare for pages: the
session cookie, the logged-in user, the language, the CSRF check and the user's tenant
scope. The channel signs the request itself, and `receive_notification` verifies it
(signature, replay window, AES-256-GCM decryption) and sets the company scope it stores
under. So this middleware serves that one path inside an app context only, with the same
code as the Flask view, and hands every other request to Flask unchanged. Under cProfile
(1,000 notifications through `app.wsgi_app` on PostgreSQL) the request hooks, the request
context and the response object took about a third of the endpoint's CPU time.
"""

import json
import logging

import sqlalchemy as sa
from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wsgi import get_input_stream

from app.extensions import db
from app.payments.inbox import apply_requests, receive_notification
from app.tenancy import scoped

logger = logging.getLogger(__name__)
NOTIFY_PATH = "/payments/notify/wechat"
# Seconds the channel is asked to wait after the database connection broke.
DATABASE_RETRY_AFTER_S = 5


class NotificationEndpoint:
    """WSGI middleware that serves WeChat Pay notifications and passes the rest to `wsgi_app`."""

    def __init__(self, app, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != NOTIFY_PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.wsgi_app(environ, start_response)
        status, headers, body = self._answer(environ)
        start_response(status, headers + [("Content-Length", str(len(body)))])
        return [body]

    def _answer(self, environ):
        from app.web import NO_COMPANIES, security_headers

        extra = list(security_headers(self.app.config))
        try:
            raw_body = get_input_stream(environ, max_content_length=self.app.config.get("MAX_CONTENT_LENGTH")).read()
        except RequestEntityTooLarge:
            return "413 REQUEST ENTITY TOO LARGE", extra + _json_type(), _fail_body("request body is too large")
        except ClientDisconnected:
            # The body ended before its Content-Length. Nothing was verified, so nothing is stored.
            logger.warning("POST %s rejected: body shorter than Content-Length %s", NOTIFY_PATH, environ.get("CONTENT_LENGTH"))
            return "400 BAD REQUEST", extra + _json_type(), _fail_body("request body is shorter than its Content-Length")
        with self.app.app_context(), scoped(NO_COMPANIES):
            try:
                receipt, reply = receive_notification("wechat", EnvironHeaders(environ), raw_body)
                if receipt.outcome == "pending":
                    # After the commit, so the task finds the row.
                    apply_requests.request(receipt.company_id)
            except sa.exc.OperationalError as error:
                db.session.rollback()
                logger.error("Database connection failed on POST %s: %s", NOTIFY_PATH, error)
                retry = [("Retry-After", str(DATABASE_RETRY_AFTER_S))]
                return "503 SERVICE UNAVAILABLE", extra + retry + _json_type(), _fail_body("database unavailable, nothing stored")
            except Exception:
                db.session.rollback()
                logger.exception("Unhandled error on POST %s", NOTIFY_PATH)
                return "500 INTERNAL SERVER ERROR", extra + _json_type(), _fail_body("internal error, nothing stored")
        headers = extra + ([("Content-Type", reply.content_type)] if reply.body else [])
        return _status_line(reply.status), headers, reply.body


def _json_type():
    return [("Content-Type", "application/json")]


def _fail_body(message):
    # The reply format of WeChat Pay API v3: any non-2xx reply makes the channel send the notification again.
    return json.dumps({"code": "FAIL", "message": message}).encode("utf-8")


def _status_line(status):
    from http import HTTPStatus

    return f"{status} {HTTPStatus(status).phrase.upper()}"


def install_notification_endpoint(app):
    """Put the WeChat Pay notification route in front of the app's WSGI callable."""
    app.wsgi_app = NotificationEndpoint(app, app.wsgi_app)
