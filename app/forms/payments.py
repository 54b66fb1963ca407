"""Forms of the payments feature."""

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length

from app.i18n import lazy_label
from app.payments.models import ORDER_CHANNELS, PAYMENT_METHODS


class CounterPaymentForm(FlaskForm):
    """One counter payment: amount, method, payer and the token that makes resubmits harmless."""

    # Checked and converted by payments.services.parse_amount, which names the bad value.
    amount = StringField(_l("收款金额（元）"), validators=[DataRequired(message=_l("请填写收款金额。")), Length(max=32, message=_l("收款金额最长 32 个字符。"))])
    # The service rejects an unknown method with a Chinese message, while WTForms' own message is English.
    method = SelectField(
        _l("收款方式"),
        choices=[SelectChoice(code, lazy_label(label)) for code, label in PAYMENT_METHODS.items()],
        default="cash",
        validate_choice=False,
    )
    payer_name = StringField(_l("交款人（留空则为户主）"), validators=[Length(max=100, message=_l("交款人最长 100 个字。"))])
    note = StringField(_l("备注（如银行卡交易参考号）"), validators=[Length(max=255, message=_l("备注最长 255 个字。"))])
    request_token = HiddenField(validators=[DataRequired(message=_l("表单缺少提交标识，请刷新页面后重试。"))])


class RefundForm(FlaskForm):
    """A refund request on one payment: amount, reason and the resubmit token."""

    # Checked and converted by payments.refunds.request_refund, which names the bad value.
    amount = StringField(_l("退费金额（元）"), validators=[DataRequired(message=_l("请填写退费金额。")), Length(max=32, message=_l("退费金额最长 32 个字符。"))])
    reason = StringField(_l("退费原因"), validators=[DataRequired(message=_l("请填写退费原因。")), Length(max=255, message=_l("退费原因最长 255 个字。"))])
    request_token = HiddenField(validators=[DataRequired(message=_l("表单缺少提交标识，请刷新页面后重试。"))])


class RefundDecisionForm(FlaskForm):
    """Approve or reject one refund waiting for approval."""

    refund_id = HiddenField(validators=[DataRequired(message=_l("缺少退费申请编号。"))])
    decision = HiddenField(validators=[DataRequired(message=_l("请选择批准或驳回。"))])


class RefundApprovalSettingForm(FlaskForm):
    """Whether the company's refunds wait for approval."""

    required = SelectField(_l("退费是否需要审批"), choices=[SelectChoice("1", _l("需要审批")), SelectChoice("0", _l("无需审批"))], validate_choice=False)


class OnlineOrderForm(FlaskForm):
    """The channel to place an online order with, for what the account owes."""

    channel = SelectField(_l("支付渠道"), choices=[SelectChoice(code, lazy_label(label)) for code, label in ORDER_CHANNELS.items()], validate_choice=False)
