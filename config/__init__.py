"""Configuration classes; environment variables override the defaults.

`HEATFLOW_CONFIG` picks the class (default, testing, production). DATABASE_URL and
CELERY_BROKER_URL select the database and broker; with neither set the app runs on a
SQLite file under instance/ and Celery's SQLAlchemy transport on a second SQLite file,
so nothing outside the project is needed.
"""

import os
from pathlib import Path

INSTANCE_DIR = Path(__file__).resolve().parent.parent / "instance"


def _sqlite_url(name):
    return f"sqlite:///{INSTANCE_DIR / name}"


def _file_map(variable):
    """Read "KEY=/path,KEY2=/path2" from an environment variable into {KEY: "/path"}."""
    return dict(item.split("=", 1) for item in os.environ.get(variable, "").split(",") if "=" in item)


class DefaultConfig:
    """Laptop default: SQLite file and an embedded Celery transport."""

    SECRET_KEY = os.environ.get("HEATFLOW_SECRET_KEY", "dev-only-secret-change-me")
    SQLALCHEMY_DATABASE_URI = os.environ.get("DATABASE_URL") or _sqlite_url("heatflow.db")
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "sqla+" + _sqlite_url("celery-broker.db")
    CELERY_TASK_ALWAYS_EAGER = os.environ.get("HEATFLOW_CELERY_EAGER", "") == "1"
    # Queue the web processes send tasks to; workers consume it with `celery worker -Q NAME`.
    CELERY_TASK_DEFAULT_QUEUE = os.environ.get("HEATFLOW_CELERY_QUEUE", "celery")
    # Celery beat looks for due process timers this often, in seconds; a timer fires at most this late.
    PROCESS_TIMER_SCAN_SECONDS = float(os.environ.get("HEATFLOW_TIMER_SCAN_SECONDS", "30"))
    WTF_CSRF_ENABLED = True
    WTF_CSRF_TIME_LIMIT = None
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    # Logins never set the remember-me cookie; these flags only harden it should one appear.
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    # Login throttling (app/org/throttle.py): a username is locked after this many failures
    # within the window, a client address after LOGIN_IP_MAX_FAILURES; a lock lasts
    # LOGIN_LOCKOUT_MINUTES.
    LOGIN_USERNAME_MAX_FAILURES = int(os.environ.get("HEATFLOW_LOGIN_USERNAME_MAX_FAILURES", "5"))
    LOGIN_IP_MAX_FAILURES = int(os.environ.get("HEATFLOW_LOGIN_IP_MAX_FAILURES", "30"))
    LOGIN_FAILURE_WINDOW_MINUTES = int(os.environ.get("HEATFLOW_LOGIN_FAILURE_WINDOW_MINUTES", "15"))
    LOGIN_LOCKOUT_MINUTES = int(os.environ.get("HEATFLOW_LOGIN_LOCKOUT_MINUTES", "15"))
    # Value of the Strict-Transport-Security header, or None to send none. Only production
    # sets it, because a browser that saw it refuses plain HTTP to the host for max-age seconds.
    STRICT_TRANSPORT_SECURITY = None
    MAX_CONTENT_LENGTH = 32 * 1024 * 1024
    BABEL_DEFAULT_LOCALE = "zh_CN"
    # Largest ledger accepted by the importer, in data rows.
    LEDGER_MAX_ROWS = int(os.environ.get("HEATFLOW_LEDGER_MAX_ROWS", "200000"))
    # Seconds an uploaded ledger may wait as queued before the beat sweep sends its task again.
    LEDGER_IMPORT_SWEEP_S = float(os.environ.get("HEATFLOW_LEDGER_IMPORT_SWEEP_S", "60"))
    # Accounts per committed batch of a set-based billing run on PostgreSQL; unset, the run
    # uses app.billing.bulk.BATCH_SIZE (50,000).
    BILLING_BATCH_SIZE = int(os.environ["HEATFLOW_BILLING_BATCH_SIZE"]) if os.environ.get("HEATFLOW_BILLING_BATCH_SIZE") else None
    # Largest meter-reading file, in data rows; a longer one is rejected whole.
    METER_READINGS_MAX_ROWS = int(os.environ.get("HEATFLOW_METER_READINGS_MAX_ROWS", "100000"))
    # Checks of every uploaded .xlsx before it is opened (app/uploads.py): the sum of the
    # unzipped parts in bytes, the shared-strings part in bytes (openpyxl holds it in memory
    # whole), and the compression ratio of parts over 16 MB (sheet XML compresses 10 to 20
    # times; a zip bomb far more).
    XLSX_MAX_EXPANDED_BYTES = int(os.environ.get("HEATFLOW_XLSX_MAX_EXPANDED_BYTES", str(1024 * 1024 * 1024)))
    XLSX_MAX_SHARED_STRINGS_BYTES = int(os.environ.get("HEATFLOW_XLSX_MAX_SHARED_STRINGS_BYTES", str(64 * 1024 * 1024)))
    XLSX_MAX_COMPRESSION_RATIO = int(os.environ.get("HEATFLOW_XLSX_MAX_COMPRESSION_RATIO", "200"))
    # Font file embedded in receipt PDFs. It must contain Chinese glyphs (Debian package fonts-noto-cjk).
    RECEIPT_FONT_PATH = os.environ.get("HEATFLOW_RECEIPT_FONT_PATH", "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")

    # WeChat Pay, partner mode: the group is the service provider, each company a sub-merchant
    # (app/payments/models.py WechatMerchant). Keys are read from the files named here.
    WECHATPAY_API_BASE = os.environ.get("HEATFLOW_WECHATPAY_API_BASE", "https://api.mch.weixin.qq.com")
    WECHATPAY_SP_MCHID = os.environ.get("HEATFLOW_WECHATPAY_SP_MCHID", "")
    WECHATPAY_SP_APPID = os.environ.get("HEATFLOW_WECHATPAY_SP_APPID", "")
    WECHATPAY_MERCHANT_SERIAL = os.environ.get("HEATFLOW_WECHATPAY_MERCHANT_SERIAL", "")
    WECHATPAY_MERCHANT_KEY_FILE = os.environ.get("HEATFLOW_WECHATPAY_MERCHANT_KEY_FILE", "")
    WECHATPAY_APIV3_KEY_FILE = os.environ.get("HEATFLOW_WECHATPAY_APIV3_KEY_FILE", "")
    # Platform public keys by Wechatpay-Serial, as "SERIAL=/path/key.pem,SERIAL2=/path/other.pem".
    WECHATPAY_PLATFORM_KEY_FILES = dict(
        item.split("=", 1) for item in os.environ.get("HEATFLOW_WECHATPAY_PLATFORM_KEY_FILES", "").split(",") if "=" in item
    )
    # Public HTTPS address of POST /payments/notify/wechat, sent as every order's notify_url.
    WECHATPAY_NOTIFY_URL = os.environ.get("HEATFLOW_WECHATPAY_NOTIFY_URL", "")

    # Alipay (app/payments/models.py AlipayApp). Keys per app id as
    # "APPID=/path/app_private.pem|/path/alipay_public.pem,APPID2=...": the companies' own apps
    # and, for ISV mode, the group's third-party app named by ALIPAY_ISV_APP_ID.
    ALIPAY_GATEWAY = os.environ.get("HEATFLOW_ALIPAY_GATEWAY", "https://openapi.alipay.com/gateway.do")
    ALIPAY_APP_KEY_FILES = _file_map("HEATFLOW_ALIPAY_APP_KEY_FILES")
    ALIPAY_ISV_APP_ID = os.environ.get("HEATFLOW_ALIPAY_ISV_APP_ID", "")
    # The app_auth_token each company granted the ISV app, one file per company app id: "APPID=/path/token,...".
    ALIPAY_APP_AUTH_TOKEN_FILES = _file_map("HEATFLOW_ALIPAY_APP_AUTH_TOKEN_FILES")
    # Public HTTPS address of POST /payments/notify/alipay, sent as every order's notify_url.
    ALIPAY_NOTIFY_URL = os.environ.get("HEATFLOW_ALIPAY_NOTIFY_URL", "")
    ALIPAY_REPLAY_WINDOW_SECONDS = int(os.environ.get("HEATFLOW_ALIPAY_REPLAY_WINDOW_SECONDS", "600"))

    # Online-channel notifications (app/payments/inbox.py). Seconds a merchant's route stays
    # cached in a web process; 0 reads it from the database for every notification.
    NOTIFICATION_ROUTE_CACHE_S = float(os.environ.get("HEATFLOW_NOTIFICATION_ROUTE_CACHE_S", "30"))
    # A web process sends at most two apply tasks per company in this many seconds; 0 sends
    # one per notification. A notification waits at most this long before its task starts.
    NOTIFICATION_APPLY_WINDOW_S = float(os.environ.get("HEATFLOW_NOTIFICATION_APPLY_WINDOW_S", "0.05"))
    # Rows applied in one transaction, and seconds one apply task runs before it stops.
    NOTIFICATION_APPLY_BATCH = int(os.environ.get("HEATFLOW_NOTIFICATION_APPLY_BATCH", "50"))
    NOTIFICATION_APPLY_MAX_S = float(os.environ.get("HEATFLOW_NOTIFICATION_APPLY_MAX_S", "60"))
    # Celery beat applies notifications pending longer than this, this often.
    NOTIFICATION_SWEEP_S = float(os.environ.get("HEATFLOW_NOTIFICATION_SWEEP_S", "30"))
    # A notification whose application failed is tried again by the sweep after
    # base × 2^(attempt - 1) seconds, at most the cap, until this many attempts have failed.
    NOTIFICATION_RETRY_LIMIT = int(os.environ.get("HEATFLOW_NOTIFICATION_RETRY_LIMIT", "5"))
    NOTIFICATION_RETRY_BASE_S = float(os.environ.get("HEATFLOW_NOTIFICATION_RETRY_BASE_S", "60"))
    NOTIFICATION_RETRY_CAP_S = float(os.environ.get("HEATFLOW_NOTIFICATION_RETRY_CAP_S", "3600"))
    # A web process checks the channel key files for a replaced key at most this often, in seconds.
    CHANNEL_KEY_CHECK_S = float(os.environ.get("HEATFLOW_CHANNEL_KEY_CHECK_S", "5"))

    # Bank collection: the HMAC key agreed with each bank, as "BANKCODE=/path/key,...".
    BANK_KEY_FILES = _file_map("HEATFLOW_BANK_KEY_FILES")
    # Base URL each bank serves its daily reconciliation files from, as "BANKCODE=https://host/path,...".
    BANK_STATEMENT_URLS = _file_map("HEATFLOW_BANK_STATEMENT_URLS")
    # Seconds a refund may stay `processing` before the stuck-refund sweep asks its channel.
    REFUND_QUERY_AFTER_SECONDS = float(os.environ.get("HEATFLOW_REFUND_QUERY_AFTER_SECONDS", "600"))
    # E-invoice vendor (app/integrations/nuonuo.py). The group's app key and secret sign every
    # call; each company's seller tax id comes from its invoice settings. Without a key no
    # vendor call is made and e-invoices are listed as failed.
    EINVOICE_API_BASE = os.environ.get("HEATFLOW_EINVOICE_API_BASE", "")
    EINVOICE_APP_KEY = os.environ.get("HEATFLOW_EINVOICE_APP_KEY", "")
    EINVOICE_APP_SECRET = os.environ.get("HEATFLOW_EINVOICE_APP_SECRET", "")
    EINVOICE_ACCESS_TOKEN = os.environ.get("HEATFLOW_EINVOICE_ACCESS_TOKEN", "")
    # Backoff of the issue task: base × 2^retry seconds, at most the cap.
    EINVOICE_RETRY_BASE_SECONDS = float(os.environ.get("HEATFLOW_EINVOICE_RETRY_BASE_SECONDS", "5"))
    EINVOICE_RETRY_CAP_SECONDS = float(os.environ.get("HEATFLOW_EINVOICE_RETRY_CAP_SECONDS", "600"))
    # Celery beat queues e-invoices left pending this long (their task was lost) this often.
    EINVOICE_SWEEP_S = float(os.environ.get("HEATFLOW_EINVOICE_SWEEP_S", "300"))
    # RabbitMQ of the integrations (outbox relay and inbound consumers). Defaults to the Celery
    # broker when that is RabbitMQ; with the embedded broker the relay keeps events stored.
    OUTBOX_BROKER_URL = os.environ.get("HEATFLOW_OUTBOX_BROKER_URL") or (
        CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("amqp") else ""
    )
    # Seconds between relay runs on Celery beat.
    OUTBOX_RELAY_INTERVAL_S = float(os.environ.get("HEATFLOW_OUTBOX_RELAY_INTERVAL_S", "5"))


class TestingConfig(DefaultConfig):
    """Used by the test suite; DATABASE_URL is set per test session."""

    TESTING = True
    WTF_CSRF_ENABLED = False
    CELERY_TASK_ALWAYS_EAGER = True
    ARGON2_FAST = True
    # Each test builds its companies and merchants anew, so nothing is cached between
    # notifications, and each notification is applied within its own request.
    NOTIFICATION_ROUTE_CACHE_S = 0.0
    NOTIFICATION_APPLY_WINDOW_S = 0.0
    CHANNEL_KEY_CHECK_S = 0.0


class ProductionConfig(DefaultConfig):
    """PostgreSQL and RabbitMQ; both URLs must be given."""

    SESSION_COOKIE_SECURE = True
    REMEMBER_COOKIE_SECURE = True
    STRICT_TRANSPORT_SECURITY = "max-age=31536000; includeSubDomains"

    def __init__(self):
        missing = [name for name in ("DATABASE_URL", "CELERY_BROKER_URL", "HEATFLOW_SECRET_KEY") if not os.environ.get(name)]
        if missing:
            raise RuntimeError(f"Production configuration needs these environment variables: {', '.join(missing)}.")


CONFIGS = {"default": DefaultConfig, "testing": TestingConfig, "production": ProductionConfig}


def load_config(name=None):
    """Return a config object for `name` or for HEATFLOW_CONFIG."""
    name = name or os.environ.get("HEATFLOW_CONFIG", "default")
    if name not in CONFIGS:
        raise RuntimeError(f"Unknown HEATFLOW_CONFIG {name!r}; use one of {', '.join(CONFIGS)}.")
    return CONFIGS[name]()
