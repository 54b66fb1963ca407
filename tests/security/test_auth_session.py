"""Session renewal at login, cookie flags and security headers on every page."""

import pytest

from app.demo import DEMO_PASSWORD
from app.extensions import login_manager
from config import DefaultConfig, ProductionConfig, TestingConfig

SECURITY_HEADERS = ["Content-Security-Policy", "Permissions-Policy", "Cross-Origin-Opener-Policy", "X-Content-Type-Options"]


def _login(client, username="tj_clerk"):
    return client.post("/login", data={"username": username, "password": DEMO_PASSWORD})


def test_session_cookie_changes_at_login(demo, client):
    with client.session_transaction() as session:
        session["planted"] = "before-login"
    before = client.get_cookie("session").value

    response = _login(client)

    after = client.get_cookie("session").value
    assert response.status_code == 302
    assert after != before
    with client.session_transaction() as session:
        assert "planted" not in session
        assert session.get("_user_id")


def test_login_sets_no_remember_cookie(demo, client):
    response = _login(client)

    set_cookies = response.headers.getlist("Set-Cookie")
    assert response.status_code == 302
    assert not [c for c in set_cookies if c.startswith("remember_token=")]
    assert client.get_cookie("remember_token") is None


def test_session_protection_is_strong(app_ctx):
    assert login_manager.session_protection == "strong"


def test_session_from_other_browser_is_dropped(demo, client):
    _login(client)

    response = client.get("/", headers={"User-Agent": "another-browser/1.0"})

    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_logout_ends_session(demo, client):
    _login(client)

    client.post("/logout")

    assert client.get("/").status_code == 302


def test_cookie_flags_per_config(monkeypatch):
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "HEATFLOW_SECRET_KEY"):
        monkeypatch.setenv(name, "set-for-test")
    production = ProductionConfig()

    assert production.SESSION_COOKIE_SECURE is True
    assert production.STRICT_TRANSPORT_SECURITY.startswith("max-age=")
    for config in (DefaultConfig, TestingConfig, ProductionConfig):
        assert config.SESSION_COOKIE_SAMESITE == "Lax"
        assert config.SESSION_COOKIE_HTTPONLY is True
    assert DefaultConfig.STRICT_TRANSPORT_SECURITY is None
    assert getattr(DefaultConfig, "SESSION_COOKIE_SECURE", False) is False


def test_session_cookie_is_lax_and_httponly(demo, client):
    response = _login(client)

    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("session="))
    assert "SameSite=Lax" in cookie
    assert "HttpOnly" in cookie


def _page_urls(app):
    """GET routes without URL parameters except logout, plus one static file and a missing page."""
    for rule in app.url_map.iter_rules():
        if "GET" in rule.methods and not rule.arguments and rule.endpoint not in ("static", "org.logout"):
            yield rule.rule
    yield "/static/css/app.css"
    yield "/no-such-page"


@pytest.mark.parametrize("username", [None, "tj_admin", "tj_cashier", "hq_admin"])
def test_every_page_carries_security_headers(demo, app_ctx, username):
    client = app_ctx.test_client()
    if username:
        assert _login(client, username).status_code == 302
    checked = 0

    for url in _page_urls(app_ctx):
        response = client.get(url)
        for header in SECURITY_HEADERS:
            assert header in response.headers, f"{username} GET {url} ({response.status_code}) lacks {header}"
        assert "Strict-Transport-Security" not in response.headers
        checked += 1

    assert checked > 10


def test_csp_forbids_inline_code(demo, client):
    policy = client.get("/login").headers["Content-Security-Policy"]

    assert "'unsafe-inline'" not in policy
    assert "script-src 'self'" in policy
    assert "style-src 'self'" in policy


def test_hsts_sent_when_configured(demo, client, monkeypatch):
    monkeypatch.setitem(client.application.config, "STRICT_TRANSPORT_SECURITY", "max-age=31536000; includeSubDomains")

    response = client.get("/login")

    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_permissions_policy_denies_device_features(demo, client):
    policy = client.get("/login").headers["Permissions-Policy"]

    for feature in ("camera=()", "microphone=()", "geolocation=()"):
        assert feature in policy
    assert client.get("/login").headers["Cross-Origin-Opener-Policy"] == "same-origin"
