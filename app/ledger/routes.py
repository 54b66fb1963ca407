"""Ledger upload with progress, the row report and its marked-up .xlsx download."""

import io
import logging

import sqlalchemy as sa
from flask import Blueprint, abort, flash, jsonify, redirect, render_template, send_file, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from app.extensions import db
from app.forms.ledger import LedgerUploadForm
from app.i18n import N_, translate_label
from app.ledger.models import IMPORT_STATUSES, LedgerImport
from app.ledger.report import marked_workbook
from app.ledger.services import sha256_of
from app.org.models import Company
from app.org.services import has_permission
from app.tasks.ledger import import_ledger_task

logger = logging.getLogger(__name__)
bp = Blueprint("ledger", __name__, url_prefix="/ledger")
PHASE_LABELS = {"validating": N_("正在校验"), "storing": N_("正在保存")}


def _require_import():
    if not has_permission(current_user, "ledger.import"):
        abort(403, _("您没有导入台账的权限。"))


def _get_job(import_id):
    job = db.session.scalar(sa.select(LedgerImport).filter_by(id=import_id))
    if job is None:
        abort(404, _("未找到该导入记录，或您无权查看。"))
    return job


@bp.route("/", methods=["GET", "POST"])
@login_required
def upload():
    """Upload a ledger file; the import runs as a background task."""
    _require_import()
    form = LedgerUploadForm()
    if form.validate_on_submit():
        content = form.file.data.read()
        job = LedgerImport(
            company_id=current_user.company_id,
            filename=form.file.data.filename or "ledger.xlsx",
            sha256=sha256_of(content),
            content=content,
            created_by_id=current_user.id,
        )
        db.session.add(job)
        db.session.commit()
        try:
            import_ledger_task.delay(job.id, job.company_id)
        except Exception:
            # The job is stored, and the beat sweep sends its task once the broker is reachable.
            logger.exception("Could not queue ledger import %s; the sweep will queue it", job.id)
            flash(_("台账已保存，但任务队列暂时不可用；恢复后将自动开始导入，无需重新上传。"), "error")
        return redirect(url_for("ledger.status", import_id=job.id))
    recent = db.session.scalars(sa.select(LedgerImport).order_by(LedgerImport.id.desc()).limit(10)).all()
    return render_template("ledger/upload.html", form=form, recent=recent, statuses=IMPORT_STATUSES)


@bp.route("/<int:import_id>")
@login_required
def status(import_id):
    """Progress, summary and row report of one import."""
    job = _get_job(import_id)
    company = db.session.get(Company, job.company_id)
    return render_template("ledger/status.html", job=job, company=company, statuses=IMPORT_STATUSES)


@bp.route("/<int:import_id>/progress.json")
@login_required
def progress(import_id):
    """Progress of one import as JSON, polled by the status page."""
    job = _get_job(import_id)
    return jsonify(
        status=job.status,
        status_label=translate_label((job.status == "running" and PHASE_LABELS.get(job.phase)) or IMPORT_STATUSES.get(job.status, job.status)),
        progress_text=_("%(done)s / %(total)s 行", done=job.processed_rows, total=job.data_rows),
        processed_rows=job.processed_rows,
        data_rows=job.data_rows,
        finished=job.status in ("succeeded", "rejected", "failed"),
    )


@bp.route("/<int:import_id>/report.xlsx")
@login_required
def report(import_id):
    """Send the uploaded workbook with every invalid cell marked and a sheet listing the errors."""
    job = _get_job(import_id)
    # A file rejected as a whole (excel_row None) may not be a workbook at all, so there is nothing to mark.
    if not job.errors or any(error.get("excel_row") is None for error in job.errors):
        abort(404, _("该导入没有可下载的错误报告：文件整体无法读取，没有可标注的单元格。"))
    data = marked_workbook(job.content, job.errors)
    name = _("%(name)s-错误报告.xlsx", name=job.filename.rsplit(".", 1)[0])
    return send_file(io.BytesIO(data), as_attachment=True, download_name=name,
                     mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
