"""CSRF checks on the login and administration forms.

The testing config turns CSRF checks off for the Flask test client, so each test turns
them on for its own requests.
"""

import re

import sqlalchemy as sa

from app.demo import DEMO_PASSWORD
from app.extensions import db
from app.org.models import Role


def _token(client, url):
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get(url).get_data(as_text=True))
    assert match, f"no CSRF token on {url}"
    return match.group(1)


def test_login_without_token_rejected(demo, client, monkeypatch):
    monkeypatch.setitem(client.application.config, "WTF_CSRF_ENABLED", True)

    response = client.post("/login", data={"username": "tj_clerk", "password": DEMO_PASSWORD})

    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_login_with_token_accepted(demo, client, monkeypatch):
    monkeypatch.setitem(client.application.config, "WTF_CSRF_ENABLED", True)
    token = _token(client, "/login")

    response = client.post("/login", data={"username": "tj_clerk", "password": DEMO_PASSWORD, "csrf_token": token})

    assert response.status_code == 302


def test_role_form_without_token_rejected(demo, login, monkeypatch):
    client = login("tj_admin")
    monkeypatch.setitem(client.application.config, "WTF_CSRF_ENABLED", True)

    response = client.post("/admin/roles", data={"code": "forged", "name": "伪造", "permissions": ["account.read"]})

    assert response.status_code == 400
    assert db.session.scalar(sa.select(Role).filter_by(code="forged")) is None


def test_logout_without_token_rejected(demo, login, monkeypatch):
    client = login("tj_clerk")
    monkeypatch.setitem(client.application.config, "WTF_CSRF_ENABLED", True)

    response = client.post("/logout")

    assert response.status_code == 400
    assert client.get("/").status_code == 200
