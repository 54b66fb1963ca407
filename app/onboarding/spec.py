"""The onboarding specification of an acquired company: what the group template leaves open.

An operator writes it as a TOML file for `flask heat onboard`, or fills it in through the
onboarding pages. Amounts are read as Decimal (TOML floats included), never as float.
"""

import datetime
from dataclasses import dataclass
from decimal import Decimal

import tomllib
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from app.i18n import N_, join_items, lazy_join, translate_label
from app.ledger.parser import CODED_FIELDS
from app.network.models import TARIFF_CATEGORY
from app.texts import clean_text

INVOICE_MODES = {"receipt": N_("自印收据"), "paper_tax_invoice": N_("税控纸质发票"), "e_invoice": N_("税控电子发票")}
AREA_BASES = ("building_area", "usable_area")
TARIFF_CATEGORIES = sorted(set(TARIFF_CATEGORY.values()))
# Charge-area rule of the group template: the whole building area for every category.
TEMPLATE_AREA_RULES = [{"category": category, "basis": "building_area", "factor": Decimal(1)} for category in TARIFF_CATEGORIES]

# marshmallow's English messages -> the Chinese the operator reads (translated where shown).
MESSAGE_TRANSLATIONS = {
    "Missing data for required field.": N_("缺少必填项"),
    "Unknown field.": N_("未知字段，请检查拼写"),
    "Not a valid date.": N_("不是有效日期，应写成 2025-11-15"),
    "Not a valid number.": N_("不是有效数字"),
    "Not a valid string.": N_("应为文字"),
    "Not a valid list.": N_("应为列表"),
    "Not a valid mapping type.": N_("应为表（键值对）"),
    "Field may not be null.": N_("不能为空"),
    "Shorter than minimum length 1.": N_("至少要有一项"),
}


class SpecError(ValueError):
    """An onboarding specification that cannot be used, with one message per invalid field."""

    def __init__(self, messages):
        self.messages = messages
        super().__init__(_("；").join(messages))


class _DateField(fields.Date):
    """A date given as a TOML date or as an ISO string."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
            return value
        return super()._deserialize(value, attr, data, **kwargs)


class _TextField(fields.String):
    """A free text without blanks and invisible characters at its ends; '' when it has no visible character."""

    def _deserialize(self, value, attr, data, **kwargs):
        return clean_text(super()._deserialize(value, attr, data, **kwargs))


def _decimal(**kwargs):
    return fields.Decimal(as_string=False, **kwargs)


class _CompanySchema(Schema):
    class Meta:
        unknown = RAISE

    code = fields.String(required=True, validate=validate.Regexp(r"^[A-Z][A-Z0-9]{1,7}$", error=_l("公司代码应为 2 到 8 位大写字母或数字，以字母开头，如 ZZ")))
    number = fields.String(required=True, validate=validate.Regexp(r"^[1-9][0-9]$", error=_l("公司编号应为两位数字（10 到 99），是统一户号的前两位")))
    name = _TextField(required=True, validate=validate.Length(min=2, max=100, error=_l("公司名称应为 2 到 100 个字")))
    city = fields.String(load_default="", validate=validate.Length(max=50))
    invoice_mode = fields.String(
        load_default="receipt", validate=validate.OneOf(list(INVOICE_MODES), error=_l("开票方式应为：%(choices)s", choices=lazy_join(INVOICE_MODES)))
    )


class _AdminSchema(Schema):
    class Meta:
        unknown = RAISE

    username = fields.String(required=True, validate=validate.Regexp(r"^[a-z][a-z0-9_]{2,63}$", error=_l("登录名应为 3 到 64 位小写字母、数字或下划线，以字母开头")))
    name = _TextField(load_default="分公司管理员", validate=validate.Length(min=1, max=64))


class _PriceSchema(Schema):
    class Meta:
        unknown = RAISE

    category = fields.String(required=True, validate=validate.OneOf(TARIFF_CATEGORIES, error=_l("用户类别应为：%(choices)s", choices=lazy_join(TARIFF_CATEGORIES))))
    heat_source_kind = fields.String(load_default="", validate=validate.Length(max=32))
    unit_price = _decimal(required=True, validate=validate.Range(min=Decimal("0.01"), max=Decimal(1000), error=_l("单价应在 0.01 到 1000 元/㎡ 之间")))


class _AreaRuleSchema(Schema):
    class Meta:
        unknown = RAISE

    category = fields.String(required=True, validate=validate.OneOf(TARIFF_CATEGORIES, error=_l("用户类别应为：%(choices)s", choices=lazy_join(TARIFF_CATEGORIES))))
    basis = fields.String(load_default="building_area", validate=validate.OneOf(AREA_BASES, error=_l("计费面积依据应为：%(choices)s", choices=lazy_join(AREA_BASES))))
    factor = _decimal(load_default=Decimal(1), validate=validate.Range(min=Decimal("0.01"), max=Decimal(2), error=_l("面积系数应在 0.01 到 2 之间")))
    lift_factor = _decimal(
        load_default=None, allow_none=True, validate=validate.Range(min=Decimal("0.01"), max=Decimal(2), error=_l("电梯系数应在 0.01 到 2 之间")),
    )
    fallback_factor = _decimal(
        load_default=None, allow_none=True,
        validate=validate.Range(min=Decimal("0.01"), max=Decimal(2), error=_l("使用面积缺省系数应在 0.01 到 2 之间")),
    )


class _SeasonSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Regexp(r"^\d{4}-\d{4}$", error=_l("采暖季名称应写成 2025-2026")))
    start_on = _DateField(required=True)
    end_on = _DateField(required=True)
    suspension_ratio = _decimal(load_default=Decimal(0), validate=validate.Range(min=Decimal(0), max=Decimal(1), error=_l("报停收费比例应在 0 到 1 之间，如 0.20")))
    late_fee_starts_after = _DateField(load_default=None, allow_none=True)
    late_fee_rate_per_day = _decimal(load_default=None, allow_none=True, validate=validate.Range(min=Decimal(0), max=Decimal("0.01"), error=_l("滞纳金日费率应在 0 到 0.01 之间，如 0.002")))
    prices = fields.List(fields.Nested(_PriceSchema), required=True, validate=validate.Length(min=1))
    area_rules = fields.List(fields.Nested(_AreaRuleSchema), load_default=None)

    @validates_schema
    def _check_season(self, data, **kwargs):
        start, end = data.get("start_on"), data.get("end_on")
        if start and end and end <= start:
            raise ValidationError(_("采暖季结束日期必须晚于开始日期"), "end_on")
        name = data.get("name")
        if name and int(name[5:]) != int(name[:4]) + 1:
            raise ValidationError(_("采暖季名称应写成 2025-2026，后一年比前一年大 1；当前为 %(name)s", name=name), "name")
        if name and start and int(name[:4]) != start.year:
            raise ValidationError(_("采暖季名称 %(name)s 与开始日期 %(start)s 的年份不一致", name=name, start=start), "name")
        if (data.get("late_fee_starts_after") is None) != (data.get("late_fee_rate_per_day") is None):
            raise ValidationError(_("滞纳金起算日和日费率须同时填写或同时留空"), "late_fee_rate_per_day")
        _check_unique(data.get("prices") or [], lambda price: (price["category"], price["heat_source_kind"]), "prices",
                      _l("用户类别 %(key)s 的单价写了 %(count)s 条；每个用户类别（及热源类型）只能写一条"))
        _check_unique(data.get("area_rules") or [], lambda rule: rule["category"], "area_rules",
                      _l("用户类别 %(key)s 的计费面积规则写了 %(count)s 条；每个用户类别只能写一条"))
        categories = {price["category"] for price in data.get("prices") or []}
        missing = [category for category in TARIFF_CATEGORIES if category not in categories]
        if data.get("prices") and missing:
            raise ValidationError(_("缺少这些用户类别的单价：%(categories)s", categories=join_items(missing)), "prices")


def _check_unique(items, key_of, field_name, message):
    """Raise ValidationError on `field_name` when two items share a key, which the tariff's unique keys reject."""
    counts = {}
    for item in items:
        key = key_of(item)
        counts[key] = counts.get(key, 0) + 1
    for key, count in counts.items():
        if count > 1:
            key_text = "/".join(part for part in key if part) if isinstance(key, tuple) else key
            raise ValidationError(str(message) % {"key": key_text, "count": count}, field_name)


class _SpecSchema(Schema):
    class Meta:
        unknown = RAISE

    company = fields.Nested(_CompanySchema, required=True)
    admin = fields.Nested(_AdminSchema, required=True)
    season = fields.Nested(_SeasonSchema, required=True)
    legacy_values = fields.Dict(
        keys=fields.String(validate=validate.OneOf(list(CODED_FIELDS), error=_l("旧系统编码映射只能用于：%(fields)s", fields=lazy_join(CODED_FIELDS)))),
        values=fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=32)), values=fields.String()),
        load_default=dict,
    )

    @validates_schema
    def _check_codes(self, data, **kwargs):
        for field, mapping in (data.get("legacy_values") or {}).items():
            codes = set(CODED_FIELDS[field].values())
            for text, code in mapping.items():
                if code not in codes:
                    raise ValidationError(
                        _("「%(text)s」映射到的编码 %(code)s 无效，应为：%(codes)s", text=text, code=code, codes=join_items(sorted(codes))),
                        "legacy_values",
                    )


@dataclass(frozen=True)
class OnboardingSpec:
    """A validated specification; plain dicts inside, as marshmallow loads them."""

    company: dict
    admin: dict
    season: dict
    legacy_values: dict


def _flatten(messages, prefix=""):
    for key, value in messages.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            yield from _flatten(value, path)
        else:
            for message in value:
                yield _("%(path)s：%(message)s", path=path, message=translate_label(MESSAGE_TRANSLATIONS.get(message, message)))


def load_spec(data):
    """Validate a specification given as nested dicts; raise SpecError naming each invalid field."""
    try:
        loaded = _SpecSchema().load(data)
    except ValidationError as error:
        raise SpecError(list(_flatten(error.normalized_messages()))) from None
    if loaded["season"]["area_rules"] is None:
        loaded["season"]["area_rules"] = [dict(rule) for rule in TEMPLATE_AREA_RULES]
    return OnboardingSpec(**loaded)


def load_spec_toml(text):
    """Parse and validate a TOML specification; raise SpecError on bad TOML or values."""
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as error:
        raise SpecError([_("TOML 格式错误：%(error)s", error=error)]) from None
    return load_spec(data)
