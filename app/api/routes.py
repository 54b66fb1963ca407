"""JSON API v1 over the process services: the user's tasks, starting requests, claiming and completing tasks, and instances.

Requests use the logged-in session cookie of the web pages, and the tenant scope filters
every query the same way, so an id of another company gives 404. The blueprint is exempt
from Flask-WTF's CSRF token check. Instead every POST must have Content-Type
application/json, which a cross-site HTML form cannot send, and the session cookie is
SameSite=Lax. Every error body is {"error_code", "message", "status"}.
"""

import functools
import logging
from datetime import datetime, timezone

import sqlalchemy as sa
from flask import Blueprint, abort, jsonify, request
from flask_babel import gettext as _
from flask_login import current_user
from marshmallow import ValidationError

from app.extensions import csrf, db
from app.i18n import translate_label
from app.network.models import Account
from app.org.models import Company
from app.org.permissions import PERMISSIONS
from app.org.services import AccessError, has_permission
from app.processes.access import ConflictError, InputError, NotFoundError, get_instance, instance_events
from app.processes.audit import verify_chain
from app.processes.engine import ProcessRunError
from app.processes.inbox import inbox_page, is_overdue, parse_filters
from app.processes.messages import run_error_text
from app.processes.models import PROCESS_TYPES, HumanTask
from app.processes.services import claim_task, complete_task, start_process
from app.tenancy import SYSTEM_SCOPE, scoped

from app.api.schemas import (
    CompleteRequestSchema, InboxTaskSchema, InstanceSchema, StartRequestSchema, TaskQuerySchema, TaskSchema,
)

logger = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)

# Service error -> (HTTP status, error_code).
SERVICE_ERRORS = (
    (NotFoundError, 404, "not_found"),
    (AccessError, 403, "forbidden"),
    (InputError, 400, "invalid_input"),
    (ConflictError, 409, "conflict"),
    (ProcessRunError, 409, "process_failed"),
)
JSON_TYPE_NAMES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
SERVICE_ERROR_TYPES = tuple(error_type for error_type, _, _ in SERVICE_ERRORS)


def error_response(status, error_code, message, errors=None):
    """Build the JSON error response shared by every API endpoint."""
    body = {"error_code": error_code, "message": message, "status": status}
    if errors is not None:
        body["errors"] = errors
    return jsonify(body), status


def api_view(view):
    """Require a logged-in user and turn service and validation errors into JSON error responses.

    A failed action is rolled back, so nothing of it is stored.
    """

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_authenticated:
            abort(401, "Not logged in. Log in with POST /login and send the session cookie it sets.")
        try:
            return view(*args, **kwargs)
        except ValidationError as error:
            db.session.rollback()
            _log_rejected("validation_error", error.messages)
            return error_response(400, "validation_error", _validation_message(error.messages), error.messages)
        except SERVICE_ERROR_TYPES as error:
            db.session.rollback()
            for error_type, status, error_code in SERVICE_ERRORS:
                if isinstance(error, error_type):
                    _log_rejected(error_code, error)
                    # A run failure keeps its English text in str(), so run_error_text gives it in the reader's language.
                    return error_response(status, error_code, run_error_text(error))
            raise

    return wrapper


def _log_rejected(error_code, detail):
    logger.info("API %s %s by user %s rejected (%s): %s", request.method, request.path, current_user.id, error_code, detail)


def _validation_message(messages):
    """Summarize marshmallow's per-field messages in one line, e.g. 'account_no: Missing data for required field.'."""
    parts = []
    for name, detail in sorted(messages.items()):
        text = "; ".join(str(item) for item in detail) if isinstance(detail, list) else str(detail)
        parts.append(f"{name}: {text}")
    return "Invalid request: " + " ".join(parts)


def _json_body(required=True):
    """Return the request's JSON object, or abort with 400 bad_request when the body is not one.

    An empty body counts as {} unless `required`.
    """
    if not request.is_json:
        abort(400, "Send the request body as JSON with the header Content-Type: application/json.")
    if not request.get_data():
        if required:
            abort(400, "The request body is empty; send a JSON object.")
        return {}
    body = request.get_json(silent=True)
    if body is None:
        abort(400, "The request body is not valid JSON; send a JSON object.")
    if not isinstance(body, dict):
        kind = JSON_TYPE_NAMES.get(type(body), "value")
        abort(400, f"The request body is a JSON {kind}, not an object; send a JSON object such as {{}}.")
    return body


def instance_resource(instance):
    """Return the API representation of an instance: status, open tasks and verified audit history."""
    account_no = db.session.scalar(sa.select(Account.account_no).where(Account.id == instance.account_id))
    open_tasks = db.session.scalars(
        sa.select(HumanTask).where(HumanTask.instance_id == instance.id, HumanTask.status == "open").order_by(HumanTask.id)
    ).all()
    resource = {
        "id": instance.id,
        "process_type": instance.process_type,
        "type_label": translate_label(instance.type_label),
        "status": instance.status,
        "status_label": translate_label(instance.status_label),
        "account_no": account_no,
        "model_version": instance.model.version,
        "created_at": instance.created_at,
        "updated_at": instance.updated_at,
        "chain_ok": verify_chain(instance.id).ok,
        "open_tasks": open_tasks,
        "events": instance_events(instance.id),
    }
    return InstanceSchema().dump(resource)


@bp.get("/tasks")
@api_view
def list_tasks():
    """List one page of the tasks in the lanes the user may act in, filtered and sorted like the inbox page."""
    query = TaskQuerySchema().load(request.args)
    company_id = None
    if "company" in query:
        with scoped(SYSTEM_SCOPE):
            company_id = db.session.scalar(sa.select(Company.id).where(Company.code == query["company"]))
        if company_id is None:
            raise InputError(f"Unknown company code {query['company']!r}; use a code such as TJ.")
    filters = parse_filters({
        "status": query["status"], "process_type": query.get("process_type", ""), "account_no": query.get("account_no", ""),
        "company_id": str(company_id) if company_id is not None else "", "overdue": "1" if query["overdue"] else "",
        "sort": query["sort"], "after": query.get("after", ""),
    })
    now = datetime.now(timezone.utc)
    rows, cursor = inbox_page(current_user, filters, page_size=query["limit"], now=now)
    items = []
    for task, account, company in rows:
        items.append({
            **InboxTaskSchema().dump(task),
            "process_type": task.process_type or task.instance.process_type,
            "account_no": account.account_no if account else None,
            "company_code": company.code if company else None,
            "overdue": is_overdue(task, now),
        })
    return jsonify({"tasks": items, "next_after": cursor or None})


@bp.post("/processes/<process_type>/instances")
@api_view
def start_instance(process_type):
    """Start a request of `process_type` for an account from its start form values."""
    if process_type not in PROCESS_TYPES:
        abort(404, f"Unknown process type {process_type!r}; use one of: {', '.join(PROCESS_TYPES)}.")
    body = StartRequestSchema().load(_json_body())
    accounts = db.session.scalars(sa.select(Account).where(Account.account_no == body["account_no"])).all()
    if not accounts:
        raise NotFoundError(_("用户编号 %(account_no)s 不存在，或不属于您所在的公司。", account_no=body["account_no"]))
    if len(accounts) > 1:
        raise ConflictError(_("用户编号 %(account_no)s 在多家公司都存在，请由该公司的营业员发起申请。", account_no=body["account_no"]))
    instance = start_process(process_type, accounts[0].id, current_user, body["form_values"])
    return jsonify(instance_resource(instance)), 201


@bp.post("/tasks/<int:task_id>/claim")
@api_view
def claim(task_id):
    """Claim an open task so that only the current user can complete it."""
    _json_body(required=False)
    task = claim_task(task_id, current_user)
    return jsonify(TaskSchema().dump(task))


@bp.post("/tasks/<int:task_id>/complete")
@api_view
def complete(task_id):
    """Complete a claimed task with a decision and form values, and run the workflow to its next wait."""
    body = CompleteRequestSchema().load(_json_body())
    values = {**body["form_values"], "comment": body["comment"]}
    if "decision" in body:
        values["decision"] = body["decision"]
    instance = complete_task(task_id, current_user, values)
    return jsonify(instance_resource(instance))


@bp.get("/instances/<int:instance_id>")
@api_view
def instance_detail(instance_id):
    """Return an instance's status, open tasks and audit history."""
    if not has_permission(current_user, "account.read"):
        label = translate_label(PERMISSIONS["account.read"][1])
        abort(403, f"You lack the permission account.read ({label}), which reading process instances requires.")
    return jsonify(instance_resource(get_instance(instance_id)))


@bp.get("/openapi.json")
def openapi_document():
    """Return the OpenAPI 3.1 document of this API."""
    from app.api.openapi import build_spec

    return jsonify(build_spec())
