"""Field work on the phone: inspection visits, submissions taken exactly once, and site photos."""

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import deferred

from app.extensions import db
from app.i18n import NC_, N_, translate_label
from app.tenancy import CompanyOwned

VISIT_KINDS = {"inspection": N_("稽查")}
VISIT_STATUSES = {"open": NC_("task status", "待办"), "done": N_("已完成"), "cancelled": N_("已取消")}
# What an inspector may find at a suspended or sealed dwelling; every finding but "none" is a violation.
FINDINGS = {
    "none": N_("未发现违规"),
    "reopened_valve": N_("报停户私自开栓"),
    "drain_valve": N_("散热器放水"),
    "added_exchanger": N_("私接换热器"),
    "booster_pump": N_("私装加压泵"),
    "unregistered_connection": N_("私接管道"),
    "meter_tampering": N_("破坏计量表"),
}


def utcnow():
    return datetime.now(timezone.utc)


class FieldVisit(CompanyOwned, db.Model):
    """A visit a supervisor assigns to one field user, such as an inspection of a suspended dwelling."""

    id = sa.Column(sa.Integer, primary_key=True)
    kind = sa.Column(sa.String(16), nullable=False, default="inspection")
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"), nullable=False)
    assigned_to_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"), nullable=False)
    created_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"), nullable=False)
    status = sa.Column(sa.String(16), nullable=False, default="open")
    note = sa.Column(sa.String(255), nullable=False, default="")
    finding = sa.Column(sa.String(32))
    # Process instance started by a violation (a back-charge for approval), if any.
    instance_id = sa.Column(sa.Integer, sa.ForeignKey("process_instance.id"))
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    visited_on = sa.Column(sa.Date)
    completed_at = sa.Column(sa.DateTime(timezone=True))

    @property
    def kind_label(self):
        return translate_label(VISIT_KINDS.get(self.kind, self.kind))

    @property
    def finding_label(self):
        return translate_label(FINDINGS.get(self.finding, self.finding or ""))


class FieldSubmission(CompanyOwned, db.Model):
    """One result sent from a phone, keyed by the id the phone gave it.

    A phone on a weak network resends the same submission until it hears back; the unique
    key makes every resend after the first a no-op that returns the first outcome.
    """

    __table_args__ = (sa.UniqueConstraint("company_id", "submission_id"),)

    id = sa.Column(sa.Integer, primary_key=True)
    submission_id = sa.Column(sa.String(36), nullable=False)
    user_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"), nullable=False)
    # "task" (a process field task) or "visit" (a FieldVisit), and that row's id.
    target_kind = sa.Column(sa.String(8), nullable=False)
    target_id = sa.Column(sa.Integer, nullable=False)
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"), nullable=False)
    meter_reading = sa.Column(sa.Numeric(14, 3))
    values = sa.Column(sa.JSON, nullable=False, default=dict)
    received_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)


class FieldPhoto(CompanyOwned, db.Model):
    """A site photo of a submission, kept in the database so every web and worker node can read it."""

    id = sa.Column(sa.Integer, primary_key=True)
    submission_id = sa.Column(sa.Integer, sa.ForeignKey("field_submission.id"), nullable=False)
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"), nullable=False)
    filename = sa.Column(sa.String(255), nullable=False)
    content_type = sa.Column(sa.String(32), nullable=False)
    sha256 = sa.Column(sa.String(64), nullable=False)
    size = sa.Column(sa.Integer, nullable=False)
    content = deferred(sa.Column(sa.LargeBinary, nullable=False))
