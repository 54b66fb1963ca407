"""Pages and JSON endpoints of the browser process designer, the instance diagram and the DMN editor page.

Company administrators (process.design) edit and deploy their company's diagrams;
headquarters administrators (process.template) edit and publish the group templates.
Every endpoint acts on the logged-in user's own company, so no URL names another
company's row. JSON responses are `{"ok": true, ...}` or a 400 with
`{"ok": false, "message", "errors": [{"element_id", "message"}]}`.
"""

import base64
import hashlib
import logging

import sqlalchemy as sa
from flask import Blueprint, abort, jsonify, make_response, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from app.clock import format_local
from app.extensions import db
from app.i18n import join_items, translate_label
from app.org.models import Company
from app.org.services import has_permission
from app.processes.access import NotFoundError, get_instance
from app.processes.deployment import latest_model
from app.processes.design import (
    DesignError, deploy_design, design_source, designer_options, draft_for, instance_path, latest_template,
    save_draft, template_drift, validate_design,
)
from app.processes.dmn import DECISION_IDS
from app.processes.models import PROCESS_TYPES
from app.web import CONTENT_SECURITY_POLICY

logger = logging.getLogger(__name__)

# Style attribute values of the bpmn.io watermark in dmn-js 17 (dmn-js-shared/lib/util/PoweredByUtil.js).
# Its license forbids changing that file, so the DMN editor page allows exactly these values
# by hash ('unsafe-hashes' covers style attributes only; scripts stay 'self').
DMN_WATERMARK_STYLES = (
    "vertical-align:middle",
    "position: absolute; bottom: 15px; right: 15px; z-index: 100;",
    "z-index: 1001;position: fixed;top: 0;left: 0;right: 0;bottom: 0",
    "width: 100%;height: 100%;background: rgba(40,40,40,0.2)",
    "position: absolute;left: 50%;top: 40%;transform: translate(-50%);width: 260px;padding: 10px;background: white;"
    "box-shadow: 0 1px 4px rgba(0,0,0,0.3);font-family: Helvetica, Arial, sans-serif;font-size: 14px;display: flex;"
    "line-height: 1.3",
    "margin: 15px 20px 15px 10px; align-self: center;",
)


def _style_hash(value):
    return "'sha256-" + base64.b64encode(hashlib.sha256(value.encode("utf-8")).digest()).decode("ascii") + "'"


DMN_EDITOR_POLICY = (
    f"{CONTENT_SECURITY_POLICY}; style-src-attr 'unsafe-hashes' {' '.join(_style_hash(v) for v in DMN_WATERMARK_STYLES)}"
)

bp = Blueprint("designer", __name__, url_prefix="/processes")

# Session key: {process type: group template version the diagram open in the designer descends from}.
OPENED_TEMPLATE_KEY = "designer_template_versions"


def _remember_template_version(process_type, version):
    opened = dict(session.get(OPENED_TEMPLATE_KEY) or {})
    opened[process_type] = version
    session[OPENED_TEMPLATE_KEY] = opened


def _opened_template_version(process_type):
    return (session.get(OPENED_TEMPLATE_KEY) or {}).get(process_type)


def _require_designer():
    """Abort with 403 unless the user may design: process.template at headquarters, process.design in a company."""
    company = current_user.company
    permission = "process.template" if company.is_headquarters else "process.design"
    if not has_permission(current_user, permission, company.id):
        abort(403, _("只有分公司管理员（设计并部署本公司流程）或集团管理员（发布集团流程模板）可以使用流程设计器。"))
    return company


def _require_type(process_type):
    if process_type not in PROCESS_TYPES:
        abort(404, _("未知的流程类型「%(value)s」。", value=process_type[:32]))


def _failure(error, status=400):
    db.session.rollback()
    return jsonify({"ok": False, "message": str(error), "errors": error.findings}), status


@bp.route("/design")
@login_required
def design_index():
    """List the process types with the company's deployed version, draft and the group template version."""
    company = _require_designer()
    rows = []
    for code, label in PROCESS_TYPES.items():
        model = None if company.is_headquarters else latest_model(company.id, code)
        template = latest_template(code)
        rows.append({
            "code": code, "label": label, "model": model, "draft": draft_for(company.id, code),
            "template_version": template.version if template else 0,
        })
    decision_ids = []
    if not company.is_headquarters and has_permission(current_user, "process.configure"):
        decision_ids = [(decision_id, PROCESS_TYPES[process_type]) for decision_id, process_type in DECISION_IDS.items()]
    return render_template("processes/design_index.html", rows=rows, company=company, decision_ids=decision_ids)


@bp.route("/design/templates")
@login_required
def template_drift_page():
    """Show headquarters, per company and process type, which group template version the deployed diagram descends from."""
    company = _require_designer()
    if not company.is_headquarters:
        abort(403, _("只有集团管理员可以查看各分公司流程与集团模板的差异。"))
    companies = db.session.scalars(sa.select(Company).where(Company.is_headquarters.is_(False)).order_by(Company.code)).all()
    return render_template("processes/template_drift.html", rows=template_drift(companies), labels=PROCESS_TYPES)


@bp.route("/design/<process_type>")
@login_required
def designer(process_type):
    """Render the designer page of one process type; designer.js then loads the diagram from `design_source_json`."""
    company = _require_designer()
    _require_type(process_type)
    model = None if company.is_headquarters else latest_model(company.id, process_type)
    return render_template(
        "processes/designer.html", company=company, process_type=process_type, label=PROCESS_TYPES[process_type],
        model=model,
    )


@bp.route("/design/<process_type>/source")
@login_required
def design_source_json(process_type):
    """Return the diagram to open (`?from=template` for the group template) and the properties panel's choices."""
    company = _require_designer()
    _require_type(process_type)
    try:
        source = design_source(company, process_type, request.args.get("from") or None)
    except DesignError as error:
        return _failure(error)
    _remember_template_version(process_type, source["template_version"])
    return jsonify({"ok": True, **source, "options": designer_options(company)})


@bp.route("/design/<process_type>/draft", methods=["POST"])
@login_required
def design_save_draft(process_type):
    """Store the posted `xml` as the draft; `base_version` names the version it was opened from."""
    company = _require_designer()
    _require_type(process_type)
    base = request.form.get("base_version", "")
    try:
        draft = save_draft(
            company, process_type, request.form.get("xml", ""), int(base) if base.isdigit() else None, current_user,
            template_version=_opened_template_version(process_type),
        )
    except DesignError as error:
        return _failure(error)
    db.session.commit()
    return jsonify({"ok": True, "message": _("草稿已保存（%(time)s）。", time=format_local(draft.updated_at, "%H:%M:%S"))})


@bp.route("/design/<process_type>/validate", methods=["POST"])
@login_required
def design_validate(process_type):
    """Check the posted `xml` without storing it; returns the findings per element."""
    company = _require_designer()
    _require_type(process_type)
    try:
        findings = validate_design(company, process_type, request.form.get("xml", ""))
    except DesignError as error:
        return _failure(error)
    if findings:
        return jsonify({"ok": False, "message": _("发现 %(count)s 处问题，已在图中标红。", count=len(findings)), "errors": findings}), 400
    return jsonify({"ok": True, "message": _("校验通过，可以部署。"), "errors": []})


@bp.route("/design/<process_type>/deploy", methods=["POST"])
@login_required
def design_deploy(process_type):
    """Validate the posted `xml` and deploy it as the company's next version (headquarters: the next template)."""
    company = _require_designer()
    _require_type(process_type)
    try:
        version, kind = deploy_design(
            company, process_type, request.form.get("xml", ""), current_user, template_version=_opened_template_version(process_type),
        )
    except DesignError as error:
        return _failure(error)
    db.session.commit()
    label = translate_label(PROCESS_TYPES[process_type])
    if kind == "template":
        message = _("已部署集团模板「%(process)s」版本 %(version)s；新申请按此版本办理，办理中的申请仍按原版本。", process=label, version=version)
    else:
        message = _("已部署流程「%(process)s」版本 %(version)s；新申请按此版本办理，办理中的申请仍按原版本。", process=label, version=version)
    return jsonify({"ok": True, "version": version, "kind": kind, "message": message})


@bp.route("/instances/<int:instance_id>/diagram")
@login_required
def instance_diagram(instance_id):
    """Return an instance's own diagram version with the elements it completed and the ones it waits at."""
    if not has_permission(current_user, "account.read"):
        abort(403, _("您没有查看用户档案与业务记录的权限。"))
    try:
        instance = get_instance(instance_id)
    except NotFoundError as error:
        abort(404, str(error))
    return jsonify({"ok": True, **instance_path(instance)})


@bp.route("/design/decisions/<decision_id>")
@login_required
def decision_editor(decision_id):
    """Render the DMN editor page of one of the company's escalation decision tables.

    dmn-editor.js loads and saves the table through the decision endpoints of
    app.processes.routes, which need process.configure in a company, so this page does too.
    """
    if current_user.company.is_headquarters or not has_permission(current_user, "process.configure"):
        abort(403, _("只有分公司管理员（设置集团审批规则）可以编辑本公司的升级决策表。"))
    if decision_id not in DECISION_IDS:
        abort(404, _("没有名为「%(name)s」的决策表；可选：%(choices)s。", name=decision_id[:64], choices=join_items(DECISION_IDS)))
    response = make_response(render_template(
        "processes/decision_editor.html", decision_id=decision_id, process_label=PROCESS_TYPES[DECISION_IDS[decision_id]],
        load_url=url_for("processes.decision_xml", decision_id=decision_id),
        save_url=url_for("processes.decision", decision_id=decision_id),
    ))
    response.headers["Content-Security-Policy"] = DMN_EDITOR_POLICY
    return response
