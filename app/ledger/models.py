"""Ledger import jobs: the uploaded file, its progress and its row report."""

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import deferred

from app.extensions import db
from app.i18n import N_
from app.tenancy import CompanyOwned

IMPORT_STATUSES = {
    "held": N_("待映射编码"), "queued": N_("排队中"), "running": N_("导入中"), "succeeded": N_("已导入"), "rejected": N_("已拒绝"),
    "failed": N_("失败"),
}


def utcnow():
    return datetime.now(timezone.utc)


class LedgerImport(CompanyOwned, db.Model):
    """One ledger file sent for import, kept with its outcome."""

    id = sa.Column(sa.Integer, primary_key=True)
    filename = sa.Column(sa.String(255), nullable=False)
    sha256 = sa.Column(sa.String(64), nullable=False)
    # The file itself, so that a worker on another machine can read it.
    content = deferred(sa.Column(sa.LargeBinary, nullable=False))
    status = sa.Column(sa.String(16), nullable=False, default="queued")
    # What a running import is doing: validating rows, then storing them.
    phase = sa.Column(sa.String(16), nullable=False, default="", server_default="")
    data_rows = sa.Column(sa.Integer, nullable=False, default=0)
    processed_rows = sa.Column(sa.Integer, nullable=False, default=0)
    created_count = sa.Column(sa.Integer, nullable=False, default=0)
    updated_count = sa.Column(sa.Integer, nullable=False, default=0)
    unchanged_count = sa.Column(sa.Integer, nullable=False, default=0)
    # List of {excel_row, column, value, reason}; a file-level problem has excel_row null.
    errors = sa.Column(sa.JSON, nullable=False, default=list)
    # Values the import changed, such as a legacy number's trimmed spaces, in the form of
    # `errors`; at most MAX_STORED_NOTICES (app.ledger.services) of notice_count are kept.
    notices = sa.Column(sa.JSON, nullable=False, default=list)
    notice_count = sa.Column(sa.Integer, nullable=False, default=0)
    summary = sa.Column(sa.String(500), nullable=False, default="")
    created_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    finished_at = sa.Column(sa.DateTime(timezone=True))


class LedgerValueMap(CompanyOwned, db.Model):
    """A company's own ledger wording for a coded column, such as 在供 for billing status normal.

    Kept so that an acquired company's ledgers import as they are written in its old
    system; the parser adds these to the group's synonyms for this company only.
    """

    __table_args__ = (sa.UniqueConstraint("company_id", "field", "ledger_text"),)

    id = sa.Column(sa.Integer, primary_key=True)
    # "billing_status", "user_type" or "billing_method" (app.ledger.parser.CODED_FIELDS).
    field = sa.Column(sa.String(16), nullable=False)
    ledger_text = sa.Column(sa.String(32), nullable=False)
    code = sa.Column(sa.String(16), nullable=False)
