"""The OpenAPI 3.1 document of /api/v1, built with apispec from the marshmallow schemas and the URL map.

Paths come from the app's URL map, so each route of the api blueprint appears once, with
the operation text from OPERATIONS. A route without an entry there makes `build_spec`
raise KeyError, which the API tests catch.
"""

import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import current_app
from marshmallow import fields, validate

from app.api.schemas import (
    CompleteRequestSchema, ErrorSchema, InstanceSchema, StartRequestSchema, TaskPageSchema, TaskQuerySchema, TaskSchema,
)
from app.processes.definitions import DEFINITIONS
from app.processes.models import PROCESS_TYPES

API_VERSION = "1.0.0"
RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _json(schema):
    return {"content": {"application/json": {"schema": schema}}}


def _error(description):
    return {"description": description, **_json("Error")}


def _id_parameter(name, description):
    return {"in": "path", "name": name, "required": True, "description": description,
            "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}}


def _dict_key_lengths(self, field, **kwargs):
    """Add `propertyNames` with the key length limits of a marshmallow Dict, which apispec leaves out."""
    if not isinstance(field, fields.Dict) or field.key_field is None:
        return {}
    names = {}
    for validator in field.key_field.validators:
        if isinstance(validator, validate.Length):
            if validator.min is not None:
                names["minLength"] = validator.min
            if validator.max is not None:
                names["maxLength"] = validator.max
    return {"propertyNames": names} if names else {}


def _start_fields_description():
    lines = ["Start form fields per process type (name: label, * = required):"]
    for code, definition in DEFINITIONS.items():
        names = ", ".join(f"{f.name}{'*' if f.required else ''}: {f.label}" for f in definition.start_fields)
        lines.append(f"- {code} ({definition.label}): {names}")
    return "\n".join(lines)


UNAUTHORIZED = _error("Not logged in.")
NOT_FOUND = _error("The id does not exist or belongs to another company.")
INVALID = _error("Invalid request: validation_error, invalid_input or invalid JSON (bad_request).")

# endpoint -> OpenAPI operation
OPERATIONS = {
    "api.list_tasks": {
        "summary": "List the user's tasks, one page at a time",
        "description": (
            "Tasks in the lanes the user may act in, as on the inbox page: company staff see their company's tasks "
            "in their roles' lanes, group approvers the group lane of the companies where they hold group approval. "
            "Paging is by keyset: pass the response's next_after as `after` with the same other parameters. "
            "A cursor that is not one of ours gives 400 invalid_input."
        ),
        "parameters": [{"in": "query", "schema": TaskQuerySchema}],
        "responses": {
            "200": {"description": "One page of tasks.", **_json(TaskPageSchema)},
            "400": INVALID, "401": UNAUTHORIZED,
        },
    },
    "api.start_instance": {
        "summary": "Start a process instance for an account",
        "description": _start_fields_description(),
        "parameters": [{"in": "path", "name": "process_type", "required": True,
                        "description": "Process type; any other value gives 404.",
                        "schema": {"type": "string", "enum": list(PROCESS_TYPES)}}],
        "requestBody": {"required": True, **_json(StartRequestSchema)},
        "responses": {
            "201": {"description": "The started instance.", **_json(InstanceSchema)},
            "400": INVALID, "401": UNAUTHORIZED, "403": _error("The user may not start requests."),
            "404": _error("Unknown process type, or the account does not exist in the user's companies."),
            "409": _error("The account's status or a running request does not allow the start (conflict), "
                          "or the workflow engine failed (process_failed)."),
        },
    },
    "api.claim": {
        "summary": "Claim an open task",
        "description": "The body is an empty JSON object; an empty body also works if Content-Type is application/json.",
        "parameters": [_id_parameter("task_id", "Task id.")],
        "requestBody": {"required": True, **_json({"type": "object", "description": "Members are ignored."})},
        "responses": {
            "200": {"description": "The claimed task.", **_json(TaskSchema)},
            "400": INVALID, "401": UNAUTHORIZED, "403": _error("The task's lane is not one of the user's roles."),
            "404": NOT_FOUND,
            "409": _error("The task is closed, claimed by someone else, or its instance is suspended."),
        },
    },
    "api.complete": {
        "summary": "Complete a claimed task",
        "parameters": [_id_parameter("task_id", "Task id.")],
        "requestBody": {"required": True, **_json(CompleteRequestSchema)},
        "responses": {
            "200": {"description": "The instance after the workflow ran to its next wait.", **_json(InstanceSchema)},
            "400": INVALID, "401": UNAUTHORIZED, "403": _error("The task's lane is not one of the user's roles."),
            "404": NOT_FOUND,
            "409": _error("The task is closed or not claimed by the user, the instance is not running, "
                          "or the workflow engine failed."),
        },
    },
    "api.instance_detail": {
        "summary": "Show an instance with its open tasks and audit history",
        "parameters": [_id_parameter("instance_id", "Process instance id.")],
        "responses": {
            "200": {"description": "The instance.", **_json(InstanceSchema)},
            "401": UNAUTHORIZED, "403": _error("The user lacks account.read."), "404": NOT_FOUND,
        },
    },
    "api.openapi_document": {
        "summary": "This OpenAPI document",
        "security": [],
        "responses": {"200": {"description": "The OpenAPI 3.1 document.", **_json({"type": "object"})}},
    },
}


def openapi_path(rule):
    """Convert a werkzeug rule such as /tasks/<int:task_id> to OpenAPI's /tasks/{task_id}."""
    return RULE_ARGUMENT.sub(r"{\1}", rule)


def build_spec():
    """Build the OpenAPI 3.1 document of the api blueprint's routes as a dict."""
    marshmallow_plugin = MarshmallowPlugin()
    spec = APISpec(
        title="Heatflow API",
        version=API_VERSION,
        openapi_version="3.1.0",
        info={"description": (
            "Process tasks and requests of Heatflow. Log in through the web login (POST /login) and send its "
            "session cookie. POST requests need Content-Type: application/json. Every error body is "
            '{"error_code", "message", "status"}; ids of other companies give 404.'
        )},
        plugins=[marshmallow_plugin],
        security=[{"sessionCookie": []}],
    )
    marshmallow_plugin.converter.add_attribute_function(_dict_key_lengths)
    spec.components.schema("Error", schema=ErrorSchema)
    spec.components.security_scheme(
        "sessionCookie", {"type": "apiKey", "in": "cookie", "name": current_app.config.get("SESSION_COOKIE_NAME", "session")}
    )
    rules = sorted(
        (rule for rule in current_app.url_map.iter_rules() if rule.endpoint.startswith("api.")), key=lambda rule: rule.rule
    )
    for rule in rules:
        operation = dict(OPERATIONS[rule.endpoint])
        operation["operationId"] = rule.endpoint.removeprefix("api.")
        methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
        spec.path(path=openapi_path(rule.rule), operations={method.lower(): operation for method in methods})
    return spec.to_dict()
