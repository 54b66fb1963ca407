"""Form definitions of process requests and user tasks, with their server-side validation.

A form is a tuple of Field. The web layer renders it (app.forms.processes builds the
WTForms class from it), and the services validate every submitted value here, so a
request that bypasses the browser gets the same checks and the same Chinese messages.
Amounts, percentages and areas come back as Decimal and dates as `date`, never float.
"""

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation

from flask_babel import gettext as _

from app.i18n import N_, translate_label
from app.processes.access import InputError
from app.processes.models import DECISIONS
from app.texts import clean_text

# Field kinds: how a value is rendered and parsed.
KINDS = {"text", "textarea", "choice", "radio", "money", "percent", "area", "date"}
# Largest amount, percentage and area a form accepts, as a guard against typing errors.
MAX_MONEY = Decimal("10000000")
MAX_PERCENT = Decimal("100")
MAX_AREA = Decimal("100000")
MAX_COMMENT_CHARS = 500
SEAL_NO_PATTERN = re.compile(r"^[A-Za-z0-9-]{1,32}$")
DOCUMENT_NO_PATTERN = re.compile(r"^[\w\-()（）〔〕\[\]/]{1,64}$")
VALVE_RESULTS = {"closed": N_("已关栓"), "sealed": N_("已关栓并施封")}


@dataclass(frozen=True)
class Field:
    """One input of a form: its name, Chinese label (marked with N_, translated when shown), kind and checks."""

    name: str
    label: str
    kind: str = "text"
    required: bool = False
    # code -> Chinese label, for choice and radio fields.
    choices: dict = field(default_factory=dict)
    # A choice field that also accepts typed text (stored as typed).
    free_text: bool = False
    max_chars: int = 100
    pattern: re.Pattern | None = None
    # What the pattern allows, in Chinese, for the error message.
    pattern_hint: str = ""
    # Shown next to the label, e.g. when the field is required.
    hint: str = ""
    # Message when a required value is missing; the default requests the label.
    missing_message: str = ""
    # Value of an optional choice or radio field left empty; the form preselects it.
    default: str = ""


def clean_values(fields, values):
    """Validate submitted values against `fields`; return {name: parsed value} or raise InputError."""
    return {spec.name: clean_value(spec, values.get(spec.name)) for spec in fields}


def clean_value(spec, value):
    """Validate one submitted value; returns '' (text) or None (other kinds) when it is empty and optional."""
    if value is None:
        value = ""
    text = clean_text(value)
    if not text:
        if spec.required:
            raise InputError(translate_label(spec.missing_message) if spec.missing_message else _missing(spec))
        if spec.default:
            return spec.default
        return "" if spec.kind in ("text", "textarea", "choice", "radio") else None
    if spec.kind in ("choice", "radio"):
        return _clean_choice(spec, text)
    if spec.kind in ("text", "textarea"):
        return _clean_text(spec, text)
    if spec.kind == "date":
        return _clean_date(spec, text)
    return _clean_number(spec, text)


def _missing(spec):
    if spec.kind in ("choice", "radio"):
        return _("请选择%(field)s。", field=translate_label(spec.label))
    return _("请填写%(field)s。", field=translate_label(spec.label))


def _clean_choice(spec, text):
    if text in spec.choices:
        return text
    if spec.free_text:
        return _clean_text(spec, text)
    return _raise_choice(spec)


def _raise_choice(spec):
    choices = _("或").join(translate_label(label) for label in spec.choices.values())
    raise InputError(_("请选择%(field)s：%(choices)s。", field=translate_label(spec.label), choices=choices))


def _clean_text(spec, text):
    if len(text) > spec.max_chars:
        raise InputError(_("%(field)s共 %(count)s 字，超过 %(max)s 字上限。", field=translate_label(spec.label), count=len(text), max=spec.max_chars))
    if spec.pattern is not None and not spec.pattern.match(text):
        raise InputError(_("%(field)s「%(value)s」无效：%(rule)s。", field=translate_label(spec.label), value=text[:40], rule=translate_label(spec.pattern_hint)))
    return text


def _clean_date(spec, text):
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(_("%(field)s「%(value)s」不是有效日期，请按 2026-01-20 的格式填写。", field=translate_label(spec.label), value=text[:20])) from None


# kind -> (decimal places allowed, maximum, unit shown in messages)
_NUMBER_RULES = {
    "money": (2, MAX_MONEY, N_("元")),
    "percent": (2, MAX_PERCENT, "%"),
    "area": (2, MAX_AREA, "㎡"),
}


def _clean_number(spec, text):
    places, maximum, unit = _NUMBER_RULES[spec.kind]
    label, unit = translate_label(spec.label), translate_label(unit)
    try:
        number = Decimal(text.replace(",", ""))
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise InputError(_("%(field)s「%(value)s」不是有效的数字，请填写以%(unit)s为单位的数字。", field=label, value=text[:20], unit=unit))
    if number != number.quantize(Decimal(1).scaleb(-places)):
        raise InputError(_("%(field)s「%(value)s」最多 %(places)s 位小数。", field=label, value=text[:20], places=places))
    if number <= 0:
        raise InputError(_("%(field)s必须大于 0。", field=label))
    if number > maximum:
        raise InputError(_("%(field)s %(value)s %(unit)s超过上限 %(max)s %(unit)s，请核对。", field=label, value=text[:20], unit=unit, max=maximum))
    return number


def comment_field(label=N_("意见"), hint=""):
    return Field("comment", label, "textarea", max_chars=MAX_COMMENT_CHARS, hint=hint)


PHOTO_NOTE = Field("photo_note", N_("照片说明"), "textarea", max_chars=200, hint=N_("现场照片的编号或说明"))


@dataclass(frozen=True)
class TaskForm:
    """The form of a user task: its fields and the task data key each field is stored under."""

    code: str
    fields: tuple
    # field name -> task data key; a field not listed is stored under its own name.
    data_keys: dict = field(default_factory=dict)


TASK_FORMS = {
    "approval": TaskForm("approval", (
        Field("decision", N_("审批意见"), "radio", required=True, choices={"approve": N_("同意"), "reject": N_("驳回")}),
        comment_field(N_("意见"), N_("驳回或退回时必填")),
    )),
    "notice": TaskForm("notice", (
        Field("notice_no", N_("催缴通知书编号"), required=True, max_chars=64, pattern=DOCUMENT_NO_PATTERN,
              pattern_hint=N_("只能包含文字、数字、括号、斜杠和连字符，最多 64 位")),
        Field("served_on", N_("送达日期"), "date", required=True),
        comment_field(N_("备注")),
    ), {"comment": "notice_comment"}),
    "valve_close": TaskForm("valve_close", (
        Field("result", N_("现场结果"), "choice", required=True, choices=VALVE_RESULTS),
        Field("seal_no", N_("封签号"), required=True, max_chars=32, pattern=SEAL_NO_PATTERN,
              pattern_hint=N_("只能包含字母、数字和连字符，最多 32 位")),
        PHOTO_NOTE,
        comment_field(N_("备注")),
    ), {"result": "valve_result", "comment": "valve_comment"}),
    "valve_open": TaskForm("valve_open", (
        Field("opened_on", N_("开栓日期"), "date", required=True),
        PHOTO_NOTE,
        comment_field(N_("备注")),
    ), {"comment": "valve_comment"}),
    "survey": TaskForm("survey", (
        Field("surveyed_area", N_("实测建筑面积（㎡）"), "area", required=True),
        PHOTO_NOTE,
        comment_field(N_("勘察意见")),
    ), {"comment": "survey_comment"}),
    "connect": TaskForm("connect", (
        Field("connected_on", N_("接网开栓日期"), "date", required=True),
        Field("seal_no", N_("封签号"), max_chars=32, pattern=SEAL_NO_PATTERN, pattern_hint=N_("只能包含字母、数字和连字符，最多 32 位")),
        PHOTO_NOTE,
        comment_field(N_("备注")),
    ), {"comment": "connect_comment"}),
    "supplement": TaskForm("supplement", (
        Field("supplement", N_("补充的材料"), "textarea", required=True, max_chars=MAX_COMMENT_CHARS,
              hint=N_("列出补交的证明材料及其编号"), missing_message=N_("请填写补充的材料，说明补交了哪些证明。")),
        comment_field(N_("备注")),
    ), {"supplement": "supplement_note", "comment": "supplement_comment"}),
}
SEND_BACK = "send_back"
# Values of a user task's `send_back` property -> the label of the send-back decision.
SEND_BACK_LABELS = {"true": DECISIONS[SEND_BACK], "supplement": N_("退回补充材料")}


def send_back_option(properties):
    """Label of the send-back decision a task offers (its `send_back` property), or False when it offers none."""
    return SEND_BACK_LABELS.get(properties.get("send_back"), False)


def task_fields(form_code, allow_send_back=False):
    """Fields of a task form; an approval whose task allows it also offers send-back, labelled by `allow_send_back` when it is text."""
    fields = TASK_FORMS[form_code].fields
    if form_code != "approval" or not allow_send_back:
        return fields
    decision = fields[0]
    label = allow_send_back if isinstance(allow_send_back, str) else DECISIONS[SEND_BACK]
    choices = {**decision.choices, SEND_BACK: label}
    return (Field(decision.name, decision.label, "radio", required=True, choices=choices), *fields[1:])


def clean_task_values(form_code, values, allow_send_back=False):
    """Validate a task submission; an approval needs a comment unless it approves."""
    clean = clean_values(task_fields(form_code, allow_send_back), values)
    if form_code == "approval" and not clean["comment"]:
        if clean["decision"] == "reject":
            raise InputError(_("驳回时必须填写意见，说明驳回原因。"))
        if clean["decision"] == SEND_BACK:
            raise InputError(_("退回时必须填写意见，说明需要补正的内容或材料。"))
    return clean


def task_data(form_code, clean, prefix):
    """Task data a completed task writes; approvals store `<prefix>_decision` and `<prefix>_comment`."""
    if form_code == "approval":
        return {f"{prefix}_decision": clean["decision"], f"{prefix}_comment": clean["comment"]}
    keys = TASK_FORMS[form_code].data_keys
    return {keys.get(name, name): value for name, value in clean.items()}
