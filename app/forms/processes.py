"""Forms of the processes feature; app.processes.services applies the business rules again on submit."""

from flask_wtf import FlaskForm
from wtforms import RadioField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

SUSPENSION_REASON_CHOICES = [("vacant", "房屋空置"), ("renovation", "装修停用"), ("away", "长期外出"), ("other", "其他")]
DECISION_CHOICES = [("approve", "同意"), ("reject", "驳回")]
VALVE_RESULT_CHOICES = [("closed", "已关栓"), ("sealed", "已关栓并施封")]


class SuspensionStartForm(FlaskForm):
    """A 报停 request: reason and an optional comment (required for 其他)."""

    reason = SelectField("报停原因", choices=SUSPENSION_REASON_CHOICES, validators=[DataRequired(message="请选择报停原因。")])
    comment = TextAreaField("说明", validators=[Optional(), Length(max=500, message="说明最多 500 字。")])


class ApprovalForm(FlaskForm):
    """An approval decision; a comment is required on reject."""

    decision = RadioField("审批意见", choices=DECISION_CHOICES, validators=[DataRequired(message="请选择审批意见：同意或驳回。")])
    comment = TextAreaField("意见", validators=[Optional(), Length(max=500, message="意见最多 500 字。")])


class ValveCloseForm(FlaskForm):
    """The field result of closing a valve, with the seal number."""

    result = SelectField("现场结果", choices=VALVE_RESULT_CHOICES, validators=[DataRequired(message="请选择现场结果。")])
    seal_no = StringField("封签号", validators=[DataRequired(message="请填写封签号。"), Length(max=32, message="封签号最多 32 位。")])
    comment = TextAreaField("备注", validators=[Optional(), Length(max=500, message="备注最多 500 字。")])


class ConfirmForm(FlaskForm):
    """An empty form that carries the CSRF token of claim and release buttons."""
