"""Login, logout and the start page."""

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from app.extensions import db
from app.forms.org import LoginForm
from app.org.services import authenticate, user_permissions

bp = Blueprint("org", __name__)


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
        target = request.args.get("next", "")
        if not target.startswith("/") or target.startswith("//"):
            target = url_for("org.home")
        return redirect(target)
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
    return render_template("org/home.html", permissions=user_permissions(current_user))
