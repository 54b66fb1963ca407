"""Login, logout and the start page."""

from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user

from app.extensions import db
from app.forms.org import LoginForm
from app.i18n import LANGUAGES, LOCALE_COOKIE, LOCALE_COOKIE_MAX_AGE_S, valid_locale
from app.org.audit import client_ip, record_event
from app.org.permissions import PERMISSIONS
from app.org.services import authenticate, find_user, has_permission, user_permissions
from app.org.throttle import USERNAME, active_lock, clear_username, record_failure
from app.tenancy import SYSTEM_SCOPE, scoped

bp = Blueprint("org", __name__)


def safe_next_url(target):
    """Return `target` if it is a path on this site, else None (no open redirect)."""
    target = (target or "").strip()
    if not target.startswith("/") or "\\" in target or any(ord(c) < 32 or ord(c) == 127 for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return None
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Show the login form and sign a user in."""
    form = LoginForm()
    if form.validate_on_submit():
        # Throttle counters, audit entries and a password rehash are written before anyone
        # is logged in, so under the system scope rather than the anonymous one.
        with scoped(SYSTEM_SCOPE):
            return _sign_in(form, form.username.data.strip(), form.password.data)
    return render_template("org/login.html", form=form)


def _reject_login(form, message, status):
    flash(message, "error")
    return render_template("org/login.html", form=form), status


def _sign_in(form, username, password):
    """Check the lock, then the password; count failures and write the audit entries."""
    ip = client_ip()
    lock = active_lock(username, ip)
    if lock is not None:
        # Not audited, because an attacker could otherwise fill the audit table while locked out.
        return _reject_login(form, lock.message(), 429)

    user = authenticate(username, password)
    if user is None:
        # Attribute the failure to the user's company when the name exists; the response
        # below stays the same either way.
        known = find_user(username)
        new_lock = record_failure(username, ip)
        record_event("login_failure", user=known, username=username)
        if new_lock is not None:
            locked_user = known if new_lock.kind == USERNAME else None
            record_event("lockout", user=locked_user, username=username, kind=new_lock.kind, until=new_lock.until.isoformat())
        db.session.commit()
        if new_lock is not None:
            return _reject_login(form, new_lock.message(), 429)
        return _reject_login(form, _("用户名或密码不正确。"), 401)

    clear_username(username)
    record_event("login_success", user=user, actor=user)
    # A new session on every login: nothing stored before login (for example by an
    # attacker who planted a session cookie) survives into the logged-in session.
    session.clear()
    login_user(user, remember=False)
    db.session.commit()
    # The request started signed out, so its tenant scope shows no company yet.
    with scoped(SYSTEM_SCOPE):
        landing = landing_endpoint(user)
    return redirect(safe_next_url(request.args.get("next", "")) or url_for(landing))


# A role's main page, by a permission that marks the role, first match wins. A user whose
# permissions match none (administrators) lands on the start page, which lists every function.
LANDING_PAGES = (
    ("fieldwork.do", "fieldwork.index"),
    ("process.group_approve", "processes.inbox"),
    ("process.approve", "processes.inbox"),
    ("payment.collect", "payments.counter"),
    ("process.finance", "processes.inbox"),
    ("process.start", "network.accounts"),
)


def landing_endpoint(user):
    """Return the endpoint a user lands on after login: the main page of their role, else the start page."""
    if has_permission(user, "company.manage") or has_permission(user, "role.manage"):
        return "org.home"
    for permission, endpoint in LANDING_PAGES:
        if endpoint in current_app.view_functions and has_permission(user, permission):
            return endpoint
    if user.company.is_headquarters and has_permission(user, "hq.view"):
        return "hq.collection"
    return "org.home"


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """Sign the current user out."""
    user = current_user._get_current_object()
    # Read-only headquarters users may write no company rows, but their logout is audited.
    with scoped(SYSTEM_SCOPE):
        record_event("logout", user=user, actor=user)
        db.session.commit()
    logout_user()
    session.clear()
    return redirect(url_for("org.login"))


@bp.route("/language", methods=["POST"])
def set_language():
    """Switch the interface language: saved on the user when logged in, and in a cookie for the login page."""
    locale = valid_locale(request.form.get("locale"))
    if locale is None:
        choices = ", ".join(LANGUAGES)
        shown = request.form.get("locale", "")[:32]
        abort(400, _("不支持的语言“%(value)s”；请选择 %(choices)s 之一。", value=shown, choices=choices))
    if current_user.is_authenticated:
        # Users may change only their own language; read-only headquarters users may too,
        # so the write runs under the system scope like the login audit entries.
        with scoped(SYSTEM_SCOPE):
            current_user.locale = locale
            db.session.commit()
    response = redirect(safe_next_url(request.form.get("next", "")) or url_for("org.home"))
    response.set_cookie(LOCALE_COOKIE, locale, max_age=LOCALE_COOKIE_MAX_AGE_S, samesite="Lax", httponly=True,
                        secure=request.is_secure)
    return response


@bp.route("/")
@login_required
def home():
    """Start page with the functions the user may use."""
    return render_template("org/home.html", permissions=user_permissions(current_user), labels=PERMISSIONS)
