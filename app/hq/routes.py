"""HQ collection view across companies."""

from flask import Blueprint, abort, render_template, request
from flask_login import current_user, login_required

from app.fieldwork.services import field_progress
from app.hq.services import collection_summary
from app.org.services import has_permission

bp = Blueprint("hq", __name__, url_prefix="/hq")


@bp.route("/collection")
@login_required
def collection():
    """Receivable, received, arrears and collection rate per company and for the group."""
    if not current_user.company.is_headquarters or not has_permission(current_user, "hq.view"):
        abort(403, "集团汇总仅供集团总部查看。")
    season = request.args.get("season", "2025-2026")
    return render_template("hq/collection.html", summary=collection_summary(season), field=field_progress())
