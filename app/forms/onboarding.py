"""Forms of the onboarding wizard: the company, its first season and its ledgers."""

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileAllowed, FileField, FileRequired
from wtforms import DateField, DecimalField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional

from app.i18n import lazy_label
from app.onboarding.spec import INVOICE_MODES

REQUIRED = DataRequired(message=_l("必填。"))


class NewCompanyForm(FlaskForm):
    """What the group template leaves open for a new subsidiary."""

    code = StringField(_l("公司代码"), validators=[REQUIRED, Length(max=8)], description=_l("2 到 8 位大写字母或数字，如 ZZ"))
    number = StringField(_l("公司编号"), validators=[REQUIRED, Length(max=2)], description=_l("两位数字，统一户号的前两位"))
    name = StringField(_l("公司名称"), validators=[REQUIRED, Length(max=100)])
    city = StringField(_l("城市"), validators=[Optional(), Length(max=50)])
    invoice_mode = SelectField(_l("开票方式"), choices=[SelectChoice(code, lazy_label(label)) for code, label in INVOICE_MODES.items()], default="receipt")
    admin_username = StringField(_l("管理员登录名"), validators=[REQUIRED, Length(max=64)], description=_l("小写字母、数字或下划线，如 zz_admin"))
    admin_name = StringField(_l("管理员姓名"), validators=[Optional(), Length(max=64)])
    season_name = StringField(_l("采暖季"), validators=[REQUIRED, Length(max=9)], description=_l("如 2025-2026"))
    start_on = DateField(_l("开始日期"), validators=[REQUIRED])
    end_on = DateField(_l("结束日期"), validators=[REQUIRED])
    suspension_ratio = DecimalField(_l("报停收费比例"), places=None, default=0, validators=[Optional()], description=_l("如 0.20 表示收 20%"))
    residential_price = DecimalField(_l("居民单价（元/㎡）"), places=None, validators=[REQUIRED])
    non_residential_price = DecimalField(_l("非居民单价（元/㎡）"), places=None, validators=[REQUIRED])
    late_fee_starts_after = DateField(_l("滞纳金起算（此日之后）"), validators=[Optional()], description=_l("不收滞纳金则留空"))
    late_fee_rate_per_day = DecimalField(_l("滞纳金日费率"), places=None, validators=[Optional()], description=_l("如 0.002 表示每天 2‰"))

    def as_spec(self):
        """Return the nested dict that app.onboarding.spec.load_spec validates."""
        return {
            "company": {"code": self.code.data.strip(), "number": self.number.data.strip(), "name": self.name.data.strip(),
                        "city": (self.city.data or "").strip(), "invoice_mode": self.invoice_mode.data},
            "admin": {"username": self.admin_username.data.strip(), "name": (self.admin_name.data or "").strip() or "分公司管理员"},
            "season": {
                "name": self.season_name.data.strip(), "start_on": self.start_on.data, "end_on": self.end_on.data,
                "suspension_ratio": self.suspension_ratio.data if self.suspension_ratio.data is not None else 0,
                "late_fee_starts_after": self.late_fee_starts_after.data,
                "late_fee_rate_per_day": self.late_fee_rate_per_day.data,
                "prices": [
                    {"category": "residential", "unit_price": self.residential_price.data},
                    {"category": "non_residential", "unit_price": self.non_residential_price.data},
                ],
            },
        }


class OnboardingLedgerForm(FlaskForm):
    """One ledger of the new company, in its old system's wording."""

    file = FileField(
        _l("台账文件（.xlsx）"),
        validators=[FileRequired(message=_l("请选择台账文件。")), FileAllowed(["xlsx"], message=_l("只接受 Excel .xlsx 文件。"))],
    )
