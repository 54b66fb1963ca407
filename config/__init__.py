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


class DefaultConfig:
    """Laptop default: SQLite file and an embedded Celery transport."""

    SECRET_KEY = os.environ.get("HEATFLOW_SECRET_KEY", "dev-only-secret-change-me")
    SQLALCHEMY_DATABASE_URI = os.environ.get("DATABASE_URL") or _sqlite_url("heatflow.db")
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "sqla+" + _sqlite_url("celery-broker.db")
    CELERY_TASK_ALWAYS_EAGER = os.environ.get("HEATFLOW_CELERY_EAGER", "") == "1"
    WTF_CSRF_ENABLED = True
    WTF_CSRF_TIME_LIMIT = None
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_HTTPONLY = True
    MAX_CONTENT_LENGTH = 32 * 1024 * 1024
    BABEL_DEFAULT_LOCALE = "zh_CN"
    # Largest ledger accepted by the importer, in data rows.
    LEDGER_MAX_ROWS = int(os.environ.get("HEATFLOW_LEDGER_MAX_ROWS", "200000"))
    # Font file embedded in receipt PDFs. It must contain Chinese glyphs (Debian package fonts-noto-cjk).
    RECEIPT_FONT_PATH = os.environ.get("HEATFLOW_RECEIPT_FONT_PATH", "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


class TestingConfig(DefaultConfig):
    """Used by the test suite; DATABASE_URL is set per test session."""

    TESTING = True
    WTF_CSRF_ENABLED = False
    CELERY_TASK_ALWAYS_EAGER = True
    ARGON2_FAST = True


class ProductionConfig(DefaultConfig):
    """PostgreSQL and RabbitMQ; both URLs must be given."""

    SESSION_COOKIE_SECURE = True
    REMEMBER_COOKIE_SECURE = True

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
