"""Login throttling: lockout per username, limit per client address, reset on success."""

import re
from datetime import timedelta

import sqlalchemy as sa

from app.demo import DEMO_PASSWORD
from app.extensions import db
from app.org.audit import LoginThrottle
from config import DefaultConfig

WRONG = "not-the-password"
LOCKED_TEXT = "该用户名登录失败次数过多"
ADDRESS_LOCKED_TEXT = "本机所在网络地址登录失败次数过多"


def _post(client, username, password, ip="127.0.0.1"):
    return client.post("/login", data={"username": username, "password": password}, environ_base={"REMOTE_ADDR": ip})


def _fail(client, username, times, ip="127.0.0.1"):
    return [_post(client, username, WRONG, ip) for _ in range(times)]


def _age_counters(minutes):
    """Move every counter and lock `minutes` into the past, as if that time had passed."""
    for row in db.session.scalars(sa.select(LoginThrottle)):
        row.window_started_at = row.window_started_at - timedelta(minutes=minutes)
        if row.locked_until is not None:
            row.locked_until = row.locked_until - timedelta(minutes=minutes)
    db.session.commit()


def test_defaults_match_policy():
    assert DefaultConfig.LOGIN_USERNAME_MAX_FAILURES == 5
    assert DefaultConfig.LOGIN_IP_MAX_FAILURES == 30
    assert DefaultConfig.LOGIN_FAILURE_WINDOW_MINUTES == 15
    assert DefaultConfig.LOGIN_LOCKOUT_MINUTES == 15


def test_fifth_failure_locks_username(demo, client):
    responses = _fail(client, "tj_clerk", 5)

    assert [r.status_code for r in responses] == [401, 401, 401, 401, 429]
    assert "用户名或密码不正确" in responses[0].get_data(as_text=True)
    body = responses[-1].get_data(as_text=True)
    assert LOCKED_TEXT in body
    assert re.search(r"请在 \d{4}-\d{2}-\d{2} \d{2}:\d{2} 之后重试", body)


def test_locked_username_rejects_right_password(demo, client):
    _fail(client, "tj_clerk", 5)

    response = _post(client, "tj_clerk", DEMO_PASSWORD)

    assert response.status_code == 429
    assert LOCKED_TEXT in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_lock_leaves_other_usernames_alone(demo, client):
    _fail(client, "tj_clerk", 5)

    assert _post(client, "tj_cashier", DEMO_PASSWORD).status_code == 302


def test_lock_ends_after_lockout_time(demo, client):
    _fail(client, "tj_clerk", 5)
    _age_counters(16)

    assert _post(client, "tj_clerk", DEMO_PASSWORD).status_code == 302


def test_failures_outside_window_restart_count(demo, client):
    _fail(client, "tj_clerk", 4)
    _age_counters(16)

    responses = _fail(client, "tj_clerk", 4)

    assert [r.status_code for r in responses] == [401, 401, 401, 401]


def test_unknown_username_gets_same_responses(demo, app_ctx):
    def run(username):
        client = app_ctx.test_client()
        responses = _fail(client, username, 6)
        bodies = [re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", "TIME", r.get_data(as_text=True)) for r in responses]
        return [r.status_code for r in responses], [b.replace(username, "NAME") for b in bodies]

    known_statuses, known_bodies = run("tj_clerk")
    unknown_statuses, unknown_bodies = run("tj_nobody")

    assert known_statuses == unknown_statuses
    assert known_bodies == unknown_bodies


def test_success_resets_username_counter(demo, app_ctx):
    client = app_ctx.test_client()
    _fail(client, "tj_clerk", 4)
    assert _post(client, "tj_clerk", DEMO_PASSWORD).status_code == 302

    responses = _fail(app_ctx.test_client(), "tj_clerk", 4)

    assert [r.status_code for r in responses] == [401, 401, 401, 401]
    failures = db.session.scalar(sa.select(LoginThrottle.failures).filter_by(kind="username", key="tj_clerk"))
    assert failures == 4


def test_address_limited_after_thirty_failures(demo, client):
    # At most four failures per username, so no username lock hides the address limit.
    responses = []
    for number in range(7):
        responses += _fail(client, f"guess_{number}", 4, ip="10.9.8.7")
    responses += _fail(client, "guess_extra", 3, ip="10.9.8.7")

    assert [r.status_code for r in responses[:29]] == [401] * 29
    assert responses[29].status_code == 429
    assert ADDRESS_LOCKED_TEXT in responses[29].get_data(as_text=True)
    assert ADDRESS_LOCKED_TEXT in responses[30].get_data(as_text=True)
    assert _post(client, "tj_cashier", DEMO_PASSWORD, ip="10.9.8.7").status_code == 429
    assert _post(client, "tj_cashier", DEMO_PASSWORD, ip="10.9.8.8").status_code == 302


def test_success_keeps_address_counter(demo, client):
    _fail(client, "guess_a", 3, ip="10.9.8.7")
    _post(client, "tj_cashier", DEMO_PASSWORD, ip="10.9.8.7")

    failures = db.session.scalar(sa.select(LoginThrottle.failures).filter_by(kind="ip", key="10.9.8.7"))

    assert failures == 3


def test_limits_come_from_config(demo, client, monkeypatch):
    monkeypatch.setitem(client.application.config, "LOGIN_USERNAME_MAX_FAILURES", 2)

    responses = _fail(client, "tj_clerk", 2)

    assert [r.status_code for r in responses] == [401, 429]


def test_locked_attempts_are_not_counted(demo, client):
    _fail(client, "tj_clerk", 5)
    _fail(client, "tj_clerk", 3)

    failures = db.session.scalar(sa.select(LoginThrottle.failures).filter_by(kind="username", key="tj_clerk"))

    assert failures == 5
