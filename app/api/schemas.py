"""marshmallow schemas of the JSON API: request bodies and query strings in, resources out.

Form values travel as strings, amounts included ("1234.50"), so that no amount passes
through a binary float. The services parse and check them exactly as for the web forms.
"""

from datetime import timezone

from marshmallow import EXCLUDE, Schema, fields, validate

from app.processes.fields import MAX_COMMENT_CHARS
from app.processes.models import DECISIONS, PROCESS_TYPES

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
    """Filters of the task list."""

    class Meta:
        unknown = EXCLUDE

    process_type = fields.String(validate=validate.OneOf(list(PROCESS_TYPES)), metadata={"description": "Only tasks of this process type."})
    account_no = fields.String(
        validate=[validate.Length(min=1, max=15), NO_NUL], metadata={"description": "Only tasks of this account."}
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
    """An inbox task with its account."""

    account_no = fields.String()
    company_code = fields.String()


class EventSchema(Schema):
    """One entry of an instance's audit trail."""

    seq = fields.Integer()
    event_type = fields.String()
    type_label = fields.String()
    actor_name = fields.String()
    at = UtcDateTime()
    task_name = fields.String()
    decision = fields.String(allow_none=True)
    comment = fields.String()
    data = fields.Dict(
        keys=fields.String(),
        metadata={"description": "Event details; amounts and dates are strings, e.g. {\"amount\": \"-1747.00\"}."},
    )


class InstanceSchema(Schema):
    """A process instance with its open tasks and its audit history."""

    id = fields.Integer()
    process_type = fields.String()
    type_label = fields.String()
    status = fields.String(metadata={"description": "running, suspended, completed, rejected, cancelled, terminated or error."})
    status_label = fields.String()
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
