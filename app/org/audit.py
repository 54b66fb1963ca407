"""Security audit log and login throttling counters.

Both tables live in the database because the app runs as several processes. A counter
kept in one process's memory would let an attacker spread attempts over the others.
"""

import sqlalchemy as sa
from flask import has_request_context, request
from flask_babel import gettext as _

from app.extensions import db
from app.i18n import N_, join_items, translate_label
from app.org.models import utcnow
from app.tenancy import CompanyOwned

# Event codes stored in AuthEvent.event, with the Chinese label shown (translated) on the audit page.
EVENT_LABELS = {
    "login_success": N_("登录成功"),
    "login_failure": N_("登录失败"),
    "lockout": N_("账号锁定"),
    "logout": N_("退出登录"),
    "functions_changed": N_("功能授权变更"),
    "role_created": N_("新建角色"),
    "role_changed": N_("修改角色"),
    "user_roles_changed": N_("人员角色变更"),
    "company_onboarded": N_("新公司接入"),
    "value_maps_changed": N_("旧系统编码映射变更"),
    "decision_changed": N_("集团审批规则表变更"),
}


class AuthEvent(CompanyOwned, db.Model):
    """One security-relevant event: a login, a logout or a change of grants and roles."""

    __table_args__ = (sa.Index("ix_auth_event_company_id_at", "company_id", "at"),)

    id = sa.Column(sa.Integer, primary_key=True)
    # The company the event concerns. NULL only for a failed login or a lockout of a username
    # that matches no user, because such an attempt belongs to no company and attributing it
    # to the headquarters would mislabel it. The tenant filter `company_id IN (...)` never matches
    # NULL, so only scopes that see every company (headquarters users) list these rows.
    company_id = sa.Column(sa.Integer, sa.ForeignKey("company.id"), nullable=True, index=True)
    # The user the event is about (who logged in, whose roles changed); NULL when unknown.
    user_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"), nullable=True)
    # The user who made the change; equal to user_id for logins and logouts.
    actor_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"), nullable=True)
    event = sa.Column(sa.String(32), nullable=False)
    detail = sa.Column(sa.JSON, nullable=False, default=dict)
    # Client address from request.remote_addr. An IPv6 address needs up to 45 characters.
    ip = sa.Column(sa.String(45), nullable=True)
    at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow, index=True)

    company = db.relationship("Company")
    user = db.relationship("User", foreign_keys=[user_id])
    actor = db.relationship("User", foreign_keys=[actor_id])

    @property
    def label(self):
        return translate_label(EVENT_LABELS.get(self.event, self.event))

    @property
    def detail_text(self):
        """The detail as "key: value" pairs for the audit page, lists joined by 、 (a comma in English)."""
        parts = []
        for key, value in (self.detail or {}).items():
            if isinstance(value, list):
                value = join_items(value) or _("无")
            parts.append(f"{key}: {value}")
        return _("；").join(parts)


class LoginThrottle(db.Model):
    """Failed-login counter of one username or one client address.

    The window starts at the first failure and lasts LOGIN_FAILURE_WINDOW_MINUTES; the next
    failure after it starts a new window. Not company-owned, because counting must work for
    usernames that match no user, and a username counter must not reveal whether it does.
    """

    __table_args__ = (sa.UniqueConstraint("kind", "key"),)

    id = sa.Column(sa.Integer, primary_key=True)
    # "username" or "ip".
    kind = sa.Column(sa.String(16), nullable=False)
    key = sa.Column(sa.String(255), nullable=False)
    failures = sa.Column(sa.Integer, nullable=False, default=0)
    window_started_at = sa.Column(sa.DateTime(timezone=True), nullable=False)
    # Logins for this key are rejected until this time; NULL when never locked.
    locked_until = sa.Column(sa.DateTime(timezone=True), nullable=True)


def client_ip():
    """Return the client address of the current request, or None outside a request.

    NOTE: behind a reverse proxy this is the proxy's address unless the deployment wraps
    the app in werkzeug's ProxyFix. Without it, per-address throttling counts every client as one.
    """
    if not has_request_context():
        return None
    return (request.remote_addr or "")[:45] or None


def record_event(event, *, company_id=None, user=None, actor=None, **detail):
    """Add an AuthEvent to the session; the caller's commit writes it with the change it records."""
    if event not in EVENT_LABELS:
        raise KeyError(f"Unknown audit event {event!r}; add it to EVENT_LABELS.")
    if company_id is None and user is not None:
        company_id = user.company_id
    entry = AuthEvent(
        company_id=company_id,
        user_id=user.id if user is not None else None,
        actor_id=actor.id if actor is not None else None,
        event=event,
        detail=detail,
        ip=client_ip(),
        at=utcnow(),
    )
    db.session.add(entry)
    return entry
