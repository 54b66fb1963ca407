"""Forms of the processes feature.

Choice fields skip WTForms' own choice check (its message is English); the services
reject an unknown value with a Chinese message that names it.
"""

from flask_wtf import FlaskForm
from wtforms import RadioField, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from app.processes.models import DECISIONS
from app.processes.services import SUSPENSION_REASONS, VALVE_RESULTS


def _choices(labels):
    return [SelectChoice(code, label) for code, label in labels.items()]


class SuspensionStartForm(FlaskForm):
    """A 报停 request: reason and an optional comment (required for 其他)."""

    reason = SelectField(
        "报停原因", choices=_choices(SUSPENSION_REASONS), validate_choice=False,
        validators=[DataRequired(message="请选择报停原因。")],
    )
    comment = TextAreaField("说明", validators=[Optional(), Length(max=500, message="说明最多 500 字。")])


class ApprovalForm(FlaskForm):
    """An approval decision; the service requires a comment on reject."""

    decision = RadioField(
        "审批意见", choices=_choices(DECISIONS), validate_choice=False,
        validators=[DataRequired(message="请选择审批意见：同意或驳回。")],
    )
    comment = TextAreaField("意见", validators=[Optional(), Length(max=500, message="意见最多 500 字。")])


class ValveCloseForm(FlaskForm):
    """The field result of closing a valve, with the seal number."""

    result = SelectField(
        "现场结果", choices=_choices(VALVE_RESULTS), validate_choice=False,
        validators=[DataRequired(message="请选择现场结果。")],
    )
    seal_no = StringField("封签号", validators=[DataRequired(message="请填写封签号。"), Length(max=32, message="封签号最多 32 位。")])
    comment = TextAreaField("备注", validators=[Optional(), Length(max=500, message="备注最多 500 字。")])
