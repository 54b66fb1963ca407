"""The onboarding wizard: a group administrator brings an acquired company onto Heatflow.

Steps: the company and its first season from the group template, its ledgers with their
old wording mapped to codes, then the first billing run.
"""

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from app.billing.services import BillingError, receivables_report, run_billing
from app.extensions import db
from app.forms.onboarding import NewCompanyForm, OnboardingLedgerForm
from app.i18n import N_, join_items
from app.ledger.models import IMPORT_STATUSES, LedgerImport, LedgerValueMap
from app.ledger.parser import CODED_FIELDS, scan_coded_values
from app.ledger.services import company_value_maps, sha256_of
from app.network.models import BILLING_METHODS, BILLING_STATUSES, USER_TYPES, Account
from app.onboarding.services import (
    OnboardingError,
    hold_or_queue,
    onboard_company,
    save_value_maps,
)
from app.onboarding.spec import SpecError, load_spec
from app.org.models import Company
from app.org.services import has_permission
from app.tariffs.models import Season
from app.tariffs.services import TariffError
from app.tasks.ledger import import_ledger_task

bp = Blueprint("onboarding", __name__, url_prefix="/admin/onboarding")

FIELD_LABELS = {"billing_status": N_("供热状态"), "user_type": N_("用户类型"), "billing_method": N_("计费方式")}
CODE_LABELS = {"billing_status": BILLING_STATUSES, "user_type": USER_TYPES, "billing_method": BILLING_METHODS}
# Spec paths as load_spec names them -> fields of NewCompanyForm.
SPEC_FIELDS = {
    "company.code": "code", "company.number": "number", "company.name": "name", "company.city": "city",
    "company.invoice_mode": "invoice_mode", "admin.username": "admin_username", "admin.name": "admin_name",
    "season.name": "season_name", "season.start_on": "start_on", "season.end_on": "end_on",
    "season.suspension_ratio": "suspension_ratio", "season.late_fee_starts_after": "late_fee_starts_after",
    "season.late_fee_rate_per_day": "late_fee_rate_per_day", "season.prices": "residential_price",
}


@bp.before_request
@login_required
def _require_company_manage():
    if not has_permission(current_user, "company.manage"):
        abort(403, _("只有集团管理员可以接入新公司。"))


def _subsidiary(code):
    company = db.session.scalar(sa.select(Company).filter_by(code=code, is_headquarters=False))
    if company is None:
        abort(404, _("未找到分公司 %(code)s。", code=code))
    return company


def _coded_choices():
    return {name: [(code, CODE_LABELS[name].get(code, code)) for code in sorted(set(synonyms.values()))]
            for name, synonyms in CODED_FIELDS.items()}


@bp.route("/")
def index():
    """Subsidiaries with their accounts and seasons, and the way to add one."""
    companies = db.session.scalars(sa.select(Company).filter_by(is_headquarters=False).order_by(Company.number)).all()
    counts = dict(db.session.execute(sa.select(Account.company_id, sa.func.count()).group_by(Account.company_id)).all())
    return render_template("onboarding/index.html", companies=companies, counts=counts)


@bp.route("/new", methods=["GET", "POST"])
def new():
    """Create a subsidiary from the group template; shows the administrator's one-time password once."""
    form = NewCompanyForm()
    messages = []
    if form.validate_on_submit():
        try:
            onboarded = onboard_company(load_spec(form.as_spec()), actor=current_user)
        except SpecError as error:
            messages = error.messages
            for message in error.messages:
                path = message.split("：", 1)[0]
                if path in SPEC_FIELDS:
                    getattr(form, SPEC_FIELDS[path]).errors.append(message.split("：", 1)[1])
        except OnboardingError as error:
            messages = [str(error)]
        else:
            return render_template("onboarding/created.html", onboarded=onboarded)
    return render_template("onboarding/new.html", form=form, messages=messages)


@bp.route("/<company_code>")
def company(company_code):
    """The new company's steps: ledgers and their mapping, then billing."""
    company = _subsidiary(company_code)
    jobs = db.session.scalars(
        sa.select(LedgerImport).filter_by(company_id=company.id).order_by(LedgerImport.id.desc()).limit(20)
    ).all()
    held = next((job for job in jobs if job.status == "held"), None)
    unknown = scan_coded_values(held.content, value_maps=company_value_maps(company.id)) if held else {}
    maps = db.session.scalars(
        sa.select(LedgerValueMap).filter_by(company_id=company.id).order_by(LedgerValueMap.field, LedgerValueMap.ledger_text)
    ).all()
    seasons = db.session.scalars(sa.select(Season).filter_by(company_id=company.id).order_by(Season.start_on.desc())).all()
    report = None
    if seasons:
        try:
            report = receivables_report(company.code, seasons[0].name)
        except (BillingError, TariffError):
            report = None
    return render_template(
        "onboarding/company.html", company=company, jobs=jobs, held=held, unknown=unknown, maps=maps,
        seasons=seasons, report=report, form=OnboardingLedgerForm(), statuses=IMPORT_STATUSES,
        field_labels=FIELD_LABELS, code_labels=CODE_LABELS, choices=_coded_choices(),
    )


@bp.route("/<company_code>/ledgers", methods=["POST"])
def upload(company_code):
    """Store an uploaded ledger; it waits for a mapping when it has unknown wording, else it imports."""
    company = _subsidiary(company_code)
    form = OnboardingLedgerForm()
    if not form.validate_on_submit():
        for message in form.file.errors:
            flash(message, "error")
        return redirect(url_for("onboarding.company", company_code=company.code))
    content = form.file.data.read()
    job = LedgerImport(
        company_id=company.id, filename=form.file.data.filename or "ledger.xlsx", sha256=sha256_of(content),
        content=content, created_by_id=current_user.id,
    )
    db.session.add(job)
    _import_or_hold(job, company, started=_("%(filename)s 已开始导入。", filename=job.filename))
    return redirect(url_for("onboarding.company", company_code=company.code))


def _import_or_hold(job, company, started):
    """Commit the job and start its import, or flash the wording still to map."""
    unknown = hold_or_queue(job, company)
    db.session.commit()
    if job.status == "queued":
        import_ledger_task.delay(job.id, company.id)
        flash(started, "success")
    else:
        left = join_items(text for texts in unknown.values() for text in texts)
        flash(_("%(filename)s 中有旧系统用语无法识别：%(texts)s；请在下方逐一对应到编码后再导入。", filename=job.filename, texts=left), "error")


@bp.route("/<company_code>/ledgers/<int:import_id>/mapping", methods=["POST"])
def mapping(company_code, import_id):
    """Save the mapping of a held ledger's unknown wording, then import it when nothing is left unknown."""
    company = _subsidiary(company_code)
    job = db.session.scalar(sa.select(LedgerImport).filter_by(id=import_id, company_id=company.id, status="held"))
    if job is None:
        abort(404, _("未找到等待编码映射的台账。"))
    value_maps = {}
    for key, code_value in request.form.items():
        field_name, separator, text = key.partition("::")
        if separator and field_name in CODED_FIELDS and code_value:
            value_maps.setdefault(field_name, {})[text] = code_value
    try:
        save_value_maps(company, value_maps, actor=current_user)
    except OnboardingError as error:
        db.session.rollback()
        flash(str(error), "error")
        return redirect(url_for("onboarding.company", company_code=company.code))
    _import_or_hold(job, company, started=_("编码映射已保存，%(filename)s 已开始导入。", filename=job.filename))
    return redirect(url_for("onboarding.company", company_code=company.code))


@bp.route("/<company_code>/bill", methods=["POST"])
def bill(company_code):
    """Run the first billing of the company's season."""
    company = _subsidiary(company_code)
    season = request.form.get("season", "")
    try:
        run = run_billing(company.code, season, user_id=current_user.id)
    except (BillingError, TariffError) as error:
        flash(str(error), "error")
    else:
        flash(_("已生成应收：%(accounts)s 户，合计 %(amount)s 元。", accounts=run.accounts_billed, amount=format(run.amount_posted, ".2f")), "success")
    return redirect(url_for("onboarding.company", company_code=company.code))
