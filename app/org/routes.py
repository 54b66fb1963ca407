"""Login, logout and the start page."""

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from app.extensions import db
from app.forms.org import LoginForm
from app.org.permissions import PERMISSIONS
from app.org.services import authenticate, user_permissions

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
        user = authenticate(form.username.data.strip(), form.password.data)
        if user is None:
            flash("用户名或密码不正确。", "error")
            return render_template("org/login.html", form=form), 401
        session.clear()
        login_user(user)
        db.session.commit()
        return redirect(safe_next_url(request.args.get("next", "")) or url_for("org.home"))
    return render_template("org/login.html", form=form)


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """Sign the current user out."""
    logout_user()
    session.clear()
    return redirect(url_for("org.login"))


@bp.route("/")
@login_required
def home():
    """Start page with the functions the user may use."""
    return render_template("org/home.html", permissions=user_permissions(current_user), labels=PERMISSIONS)
