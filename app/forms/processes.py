"""WTForms classes of the processes feature, built from the field definitions in app.processes.fields.

The classes render the fields and check the CSRF token only. Every value is validated
by the services against the same definitions, which reject a bad value with a message
that names it (WTForms' own messages are English). Labels and choices are marked Chinese
labels, translated when the form is shown.
"""

import functools

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import RadioField, SelectChoice, SelectField, StringField, TextAreaField

from app.i18n import lazy_label
from app.processes.definitions import DEFINITIONS
from app.processes.fields import task_fields

# Input type of each field kind in the browser; all are parsed on the server.
INPUT_TYPES = {"money": "text", "percent": "text", "area": "text", "date": "date"}


def _wtforms_field(spec):
    label = lazy_label(spec.label)
    if spec.kind == "radio":
        return RadioField(label, choices=_choices(spec.choices), default=spec.default or None, validate_choice=False)
    if spec.kind == "choice":
        return SelectField(label, choices=[SelectChoice("", _l("请选择")), *_choices(spec.choices)], validate_choice=False)
    if spec.kind == "textarea":
        return TextAreaField(label)
    input_type = INPUT_TYPES.get(spec.kind, "text")
    mode = {"inputmode": "decimal"} if spec.kind in ("money", "percent", "area") else {}
    return StringField(label, render_kw={"type": input_type, **mode})


def _choices(labels):
    return [SelectChoice(code, lazy_label(label)) for code, label in labels.items()]


def fill_choices(form, choices):
    """Set the options of select fields whose choices depend on the account: {field name: {code: label}}."""
    for name, labels in choices.items():
        form[name].choices = [SelectChoice("", _("请选择")), *_choices(labels)]


def _form_class(name, fields):
    attributes = {spec.name: _wtforms_field(spec) for spec in fields}
    attributes["field_specs"] = fields
    return type(name, (FlaskForm,), attributes)


@functools.cache
def start_form_class(process_type):
    """The start form of a process type."""
    return _form_class(f"{process_type.title()}StartForm", DEFINITIONS[process_type].start_fields)


@functools.cache
def task_form_class(form_code, allow_send_back=False):
    """The form of a user task; approvals that allow it offer 退回重审."""
    return _form_class(f"{form_code.title()}TaskForm", task_fields(form_code, allow_send_back))
