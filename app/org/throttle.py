"""Login throttling: failed-login counters per username and per client address.

A username is locked after LOGIN_USERNAME_MAX_FAILURES failures within
LOGIN_FAILURE_WINDOW_MINUTES, a client address after LOGIN_IP_MAX_FAILURES; either lock
lasts LOGIN_LOCKOUT_MINUTES. Counters are keyed by the username as typed, whether or not
a user has it, so the responses do not reveal which usernames exist.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from flask import current_app
from flask_babel import gettext as _

from app.clock import format_local
from app.extensions import db
from app.org.audit import LoginThrottle

USERNAME = "username"
IP = "ip"


@dataclass(frozen=True)
class Lock:
    """An active lock: which counter ("username" or "ip") and when it ends (UTC)."""

    kind: str
    until: datetime

    def message(self):
        """Return the message with the time after which a retry is allowed."""
        retry_at = format_local(_round_up_to_minute(self.until))
        if self.kind == USERNAME:
            return _("该用户名登录失败次数过多，已暂时锁定。请在 %(time)s 之后重试。", time=retry_at)
        return _("本机所在网络地址登录失败次数过多，已暂时禁止登录。请在 %(time)s 之后重试。", time=retry_at)


def _aware(moment):
    """SQLite returns naive UTC timestamps; PostgreSQL returns aware ones."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _round_up_to_minute(moment):
    """Round up, so a message that names a minute never invites a retry before the lock ends."""
    moment = _aware(moment)
    seconds = moment.timestamp()
    return datetime.fromtimestamp(math.ceil(seconds / 60) * 60, tz=timezone.utc)


def _keys(username, ip):
    keys = [(USERNAME, username[:255])]
    if ip:
        keys.append((IP, ip))
    return keys


def active_lock(username, ip, now=None):
    """Return the Lock that rejects a login of `username` from `ip` now, or None."""
    now = now or datetime.now(timezone.utc)
    conditions = [sa.and_(LoginThrottle.kind == kind, LoginThrottle.key == key) for kind, key in _keys(username, ip)]
    rows = db.session.execute(
        sa.select(LoginThrottle.kind, LoginThrottle.locked_until).where(
            sa.or_(*conditions), LoginThrottle.locked_until.is_not(None)
        )
    ).all()
    locks = [Lock(kind, _aware(until)) for kind, until in rows if _aware(until) > now]
    # When both are locked, name the later end, because only then can a retry succeed.
    return max(locks, key=lambda lock: lock.until, default=None)


def _upsert_statement(kind, key, now, window_start_cutoff):
    """Build an atomic INSERT … ON CONFLICT that counts one failure and returns the new count.

    The increment runs in the database, so concurrent failures from several app processes
    are all counted. A window older than the cutoff restarts at one failure.
    """
    if db.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert

    table = LoginThrottle.__table__
    window_over = table.c.window_started_at < window_start_cutoff
    statement = insert(table).values(kind=kind, key=key, failures=1, window_started_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.kind, table.c.key],
        set_={
            "failures": sa.case((window_over, 1), else_=table.c.failures + 1),
            "window_started_at": sa.case((window_over, now), else_=table.c.window_started_at),
        },
    )
    return statement.returning(table.c.failures)


def record_failure(username, ip, now=None):
    """Count a failed login for the username and the address; return the Lock it caused, or None.

    The caller commits. Attempts rejected by an active lock are not counted, so a lock ends
    LOGIN_LOCKOUT_MINUTES after the failure that set it.
    """
    config = current_app.config
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(minutes=config["LOGIN_FAILURE_WINDOW_MINUTES"])
    until = now + timedelta(minutes=config["LOGIN_LOCKOUT_MINUTES"])
    limits = {USERNAME: config["LOGIN_USERNAME_MAX_FAILURES"], IP: config["LOGIN_IP_MAX_FAILURES"]}
    caused = None
    for kind, key in _keys(username, ip):
        failures = db.session.execute(_upsert_statement(kind, key, now, cutoff)).scalar_one()
        if failures >= limits[kind]:
            db.session.execute(
                sa.update(LoginThrottle).where(LoginThrottle.kind == kind, LoginThrottle.key == key).values(locked_until=until)
            )
            # The username lock is the one the user can act on, so it wins the message.
            if caused is None or kind == USERNAME:
                caused = Lock(kind, until)
    return caused


def clear_username(username):
    """Forget the failures of a username after a successful login; the caller commits.

    The address counter is kept, so one valid account cannot reset the count of an
    address that is guessing passwords of other accounts.
    """
    db.session.execute(sa.delete(LoginThrottle).where(LoginThrottle.kind == USERNAME, LoginThrottle.key == username[:255]))
