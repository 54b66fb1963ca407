"""Account search and the account page."""

import sqlalchemy as sa
from flask import Blueprint, abort, render_template, request
from flask_babel import gettext as _
from flask_login import current_user, login_required

from app.extensions import db
from app.network.models import Account
from app.network.services import search_accounts
from app.org.services import has_permission

bp = Blueprint("network", __name__, url_prefix="/accounts")


@bp.route("/")
@login_required
def accounts():
    """Search accounts by number, legacy number, name, address or phone."""
    if not has_permission(current_user, "account.read"):
        abort(403, _("您没有查看用户档案的权限。"))
    query = request.args.get("q", "").strip()
    results = search_accounts(query, limit=100) if query else []
    return render_template("network/accounts.html", query=query, results=results)


@bp.route("/<int:account_id>")
@login_required
def account(account_id):
    """Show one account with its ledger lines and process history."""
    if not has_permission(current_user, "account.read"):
        abort(403, _("您没有查看用户档案的权限。"))
    account = db.session.scalar(sa.select(Account).filter_by(id=account_id))
    if account is None:
        abort(404, _("未找到该用户，或您无权查看。"))
    from app.network.services import account_statement

    return render_template("network/account.html", account=account, statement=account_statement(account))
