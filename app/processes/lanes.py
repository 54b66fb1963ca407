"""Names of BPMN lanes for readers: a lane's name in a diagram is the code of the role that acts in it."""

import sqlalchemy as sa

from app.extensions import db
from app.i18n import N_, translate_label
from app.org.models import Role
from app.org.permissions import shown_role_name

# Chinese names of the lanes, shown when the company has no role of the lane's code.
LANE_LABELS = {
    "clerk": N_("营业员"),
    "company_approver": N_("分公司审批人"),
    "finance": N_("财务"),
    "field_staff": N_("外勤人员"),
    "group_approver": N_("集团审批人"),
}


def role_names(company_id):
    """Return {role code: name shown to the reader} for the roles of a company (see `shown_role_name`)."""
    rows = db.session.execute(sa.select(Role.code, Role.name).where(Role.company_id == company_id)).all()
    return {code: shown_role_name(code, name) for code, name in rows}


def lane_name(code, roles):
    """Return the name shown for lane `code`: the role of that code in `roles` (from `role_names`), else the translated lane label."""
    return roles.get(code) or translate_label(LANE_LABELS.get(code, code))
