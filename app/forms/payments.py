"""Forms of the payments feature."""

from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length

from app.payments.models import PAYMENT_METHODS


class CounterPaymentForm(FlaskForm):
    """One counter payment: amount, method, payer and the token that makes resubmits harmless."""

    # Checked and converted by payments.services.parse_amount, which names the bad value.
    amount = StringField("收款金额（元）", validators=[DataRequired(message="请填写收款金额。"), Length(max=32, message="收款金额最长 32 个字符。")])
    # The service rejects an unknown method with a Chinese message, while WTForms' own message is English.
    method = SelectField(
        "收款方式",
        choices=[SelectChoice(code, label) for code, label in PAYMENT_METHODS.items()],
        default="cash",
        validate_choice=False,
    )
    payer_name = StringField("交款人（留空则为户主）", validators=[Length(max=100, message="交款人最长 100 个字。")])
    note = StringField("备注（如银行卡交易参考号）", validators=[Length(max=255, message="备注最长 255 个字。")])
    request_token = HiddenField(validators=[DataRequired(message="表单缺少提交标识，请刷新页面后重试。")])
