"""marshmallow schemas of the JSON API: request bodies and query strings in, resources out.

Form values travel as strings, amounts included ("1234.50"), so that no amount passes
through a binary float. The services parse and check them exactly as for the web forms.
"""

from datetime import timezone

from marshmallow import EXCLUDE, Schema, fields, validate

from app.i18n import translate_label
from app.processes.fields import MAX_COMMENT_CHARS
from app.processes.inbox import MAX_PAGE_SIZE, PAGE_SIZE, SORTS
from app.processes.messages import run_failure_text
from app.processes.models import DECISIONS, PROCESS_TYPES, TASK_STATUSES


# PostgreSQL text cannot store a NUL character, so no string the API takes may contain one.
# apispec writes the pattern into the OpenAPI document.
NO_NUL = validate.Regexp(r"^[^\u0000]*$", error="Contains a NUL character (\\u0000); remove it.")


def _form_values(description):
    # Loaded as `form_values` because Schema.fields is marshmallow's own attribute.
    return fields.Dict(
        keys=fields.String(validate=[validate.Length(min=1, max=64), NO_NUL]),
        values=fields.String(validate=NO_NUL),
        load_default=dict,
        data_key="fields",
        metadata={"description": description},
    )


class UtcDateTime(fields.DateTime):
    """An ISO 8601 timestamp with its UTC offset; SQLite returns the stored UTC times without one."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return super()._serialize(value, attr, obj, **kwargs)


class TaskQuerySchema(Schema):
    """Filters, sort order and keyset cursor of the task list; the same options as the inbox page."""

    class Meta:
        unknown = EXCLUDE

    process_type = fields.String(validate=validate.OneOf(list(PROCESS_TYPES)), metadata={"description": "Only tasks of this process type."})
    company = fields.String(
        validate=[validate.Length(min=1, max=16), NO_NUL],
        metadata={"description": "Only tasks of the company with this code (e.g. TJ). Useful to group users, who see the group lane "
                                 "of every company; company staff see their own company only."},
    )
    account_no = fields.String(
        validate=[validate.Length(min=1, max=32), validate.Regexp(r"^[0-9A-Za-z]+$", error="Use letters and digits only.")],
        metadata={"description": "Only tasks of accounts whose number starts with this text."},
    )
    status = fields.String(
        load_default="open", validate=validate.OneOf(list(TASK_STATUSES)),
        metadata={"description": "open (default), completed or cancelled; tasks in the user's lanes either way."},
    )
    overdue = fields.Boolean(load_default=False, metadata={"description": "true: only tasks past their due time."})
    sort = fields.String(
        load_default="created", validate=validate.OneOf(list(SORTS)),
        metadata={"description": "created (oldest first, default), created_desc (newest first) or due (earliest due time first; "
                                 "tasks without a due time are left out)."},
    )
    after = fields.String(
        validate=[validate.Length(min=1, max=80), NO_NUL],
        metadata={"description": "Keyset cursor: the next_after value of the previous page. Keep the other parameters unchanged."},
    )
    limit = fields.Integer(
        load_default=PAGE_SIZE, validate=validate.Range(min=1, max=MAX_PAGE_SIZE),
        metadata={"description": f"Tasks per page, 1 to {MAX_PAGE_SIZE} (default {PAGE_SIZE})."},
    )


class StartRequestSchema(Schema):
    """Body of a request to start a process instance for an account."""

    account_no = fields.String(
        required=True, validate=[validate.Length(min=1, max=15), NO_NUL], metadata={"description": "Account number (用户编号)."}
    )
    form_values = _form_values(
        "Start form values by field name, all as strings, e.g. {\"reason\": \"vacant\", \"comment\": \"房屋空置\"} for a "
        "suspension. Amounts and areas are decimal strings such as \"1234.50\", dates are YYYY-MM-DD."
    )


class CompleteRequestSchema(Schema):
    """Body of a request to complete a claimed task."""

    decision = fields.String(
        validate=validate.OneOf(list(DECISIONS)),
        metadata={"description": "Approval decision; required by approval tasks, ignored by field tasks."},
    )
    comment = fields.String(load_default="", validate=[validate.Length(max=MAX_COMMENT_CHARS), NO_NUL])
    form_values = _form_values("Other task form values by field name, all as strings, e.g. {\"seal_no\": \"TJ-2025-0001\"}.")


class TaskSchema(Schema):
    """An inbox task."""

    id = fields.Integer()
    instance_id = fields.Integer()
    process_type = fields.String(attribute="instance.process_type")
    title = fields.String()
    lane_role = fields.String(metadata={"description": "Role code of the BPMN lane that acts on the task."})
    form = fields.String(metadata={"description": "Form the task takes: approval, notice, valve_close, valve_open, survey or connect."})
    status = fields.String(metadata={"description": "open, completed or cancelled."})
    claimed_by_name = fields.String(metadata={"description": "Name of the user who claimed the task; empty while unclaimed."})
    created_at = UtcDateTime()


class InboxTaskSchema(TaskSchema):
    """An inbox task with its account, due time and overdue mark."""

    process_type = fields.String()
    account_no = fields.String()
    company_code = fields.String()
    due_at = UtcDateTime(allow_none=True, metadata={"description": "When the task should be done; null when it has no due time."})
    overdue = fields.Boolean(metadata={"description": "True when the task is open and past its due time."})


class TaskPageSchema(Schema):
    """One page of the task list."""

    tasks = fields.List(fields.Nested(InboxTaskSchema))
    next_after = fields.String(
        allow_none=True, metadata={"description": "Pass as `after` to get the next page; null on the last page."},
    )


class EventSchema(Schema):
    """One entry of an instance's audit trail."""

    seq = fields.Integer()
    event_type = fields.String()
    type_label = fields.Function(
        lambda event: translate_label(event.type_label),
        metadata={"type": "string", "description": "The event type in the reader's language."},
    )
    actor_name = fields.String(
        attribute="shown_actor_name",
        metadata={"description": "The user's name as stored; entries no user caused name the system in the reader's language."},
    )
    at = UtcDateTime()
    task_name = fields.String(
        attribute="shown_task_name",
        metadata={"description": "The step name. Names the platform wrote (the start entry, the outcome, a migration, an admin action, a fired timer, a step of the default diagrams) are in the reader's language; a company's own step names are as stored."},
    )
    decision = fields.String(allow_none=True)
    comment = fields.Method(
        "shown_comment", metadata={"type": "string", "description": (
            "The comment. Texts the platform wrote (errors, fired timers, reminders) are in the reader's language, "
            "as on the instance page; comments typed by users are as stored."
        )},
    )
    data = fields.Dict(
        keys=fields.String(),
        metadata={"description": "Event details; amounts and dates are strings, e.g. {\"amount\": \"-1747.00\"}."},
    )

    def shown_comment(self, event):
        # The same choice as the history table of the instance page (processes/_events.html).
        # The stored comment stays Chinese for the audit hash.
        failure = (event.data or {}).get("run_failure")
        if failure:
            return run_failure_text(failure, event.comment)
        return event.shown_comment


class InstanceSchema(Schema):
    """A process instance with its open tasks and its audit history."""

    id = fields.Integer()
    process_type = fields.String()
    type_label = fields.String(metadata={"description": "The process type in the reader's language."})
    status = fields.String(metadata={"description": "running, suspended, completed, rejected, cancelled, terminated or error."})
    status_label = fields.String(metadata={"description": "The status in the reader's language."})
    account_no = fields.String()
    model_version = fields.Integer()
    created_at = UtcDateTime()
    updated_at = UtcDateTime()
    chain_ok = fields.Boolean(metadata={"description": "True when the audit trail's hash chain verifies."})
    open_tasks = fields.List(fields.Nested(TaskSchema))
    events = fields.List(fields.Nested(EventSchema))


class ErrorSchema(Schema):
    """Body of every API error response."""

    error_code = fields.String(required=True, metadata={"example": "validation_error"})
    message = fields.String(required=True)
    status = fields.Integer(required=True)
    errors = fields.Dict(metadata={"description": "Messages per request field; only on validation_error."})
