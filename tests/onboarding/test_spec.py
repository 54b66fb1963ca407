"""The onboarding specification: every invalid field named with its fix."""

import pytest

from app.onboarding.spec import SpecError, load_spec_toml
from tests.onboarding.legacy import spec_toml


def test_valid_spec_reads_decimals_and_template_rules():
    spec = load_spec_toml(spec_toml())

    prices = {price["category"]: price["unit_price"] for price in spec.season["prices"]}
    assert str(prices["residential"]) == "20.00"
    assert str(prices["non_residential"]) == "30.00"
    assert str(spec.season["suspension_ratio"]) == "0.30"
    assert [rule["basis"] for rule in spec.season["area_rules"]] == ["building_area", "building_area"]
    assert spec.legacy_values["billing_status"]["停暖"] == "suspended"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('code = "ZZ"', 'code = "zz"', "company.code：公司代码应为 2 到 8 位大写字母或数字"),
        ('number = "21"', 'number = "2"', "company.number：公司编号应为两位数字"),
        ("end_on = 2026-03-15", "end_on = 2025-11-01", "season.end_on：采暖季结束日期必须晚于开始日期"),
        ("suspension_ratio = 0.30", "suspension_ratio = 1.5", "season.suspension_ratio：报停收费比例应在 0 到 1 之间"),
        ('"停暖" = "suspended"', '"停暖" = "paused"', "「停暖」映射到的编码 paused 无效"),
        ('invoice_mode = "receipt"', 'invoice_mode = "fax"', "company.invoice_mode：开票方式应为"),
        ('name = "中原管理员"', 'name = "中原管理员"\nrole = "x"', "admin.role：未知字段"),
        ('name = "2025-2026"', 'name = "2025-2030"', "season.name：采暖季名称应写成 2025-2026"),
        ('name = "中原热力有限公司"', 'name = "\\u200b\\u3000\\ufeff"', "company.name：公司名称应为 2 到 100 个字"),
        ('name = "中原管理员"', 'name = "\\u200b"', "admin.name："),
        (
            "suspension_ratio = 0.30",
            'suspension_ratio = 0.30\n\n[[season.area_rules]]\ncategory = "residential"\nlift_factor = -5\n\n'
            '[[season.area_rules]]\ncategory = "non_residential"',
            "season.area_rules.0.lift_factor：电梯系数应在 0.01 到 2 之间",
        ),
        (
            "suspension_ratio = 0.30",
            'suspension_ratio = 0.30\n\n[[season.area_rules]]\ncategory = "residential"\nfallback_factor = 1e30\n\n'
            '[[season.area_rules]]\ncategory = "non_residential"',
            "season.area_rules.0.fallback_factor：使用面积缺省系数应在 0.01 到 2 之间",
        ),
        (
            "suspension_ratio = 0.30",
            'suspension_ratio = 0.30\n\n[[season.area_rules]]\ncategory = "residential"\n\n'
            '[[season.area_rules]]\ncategory = "residential"\nfactor = 0.8\n\n[[season.area_rules]]\ncategory = "non_residential"',
            "season.area_rules：用户类别 residential 的计费面积规则写了 2 条",
        ),
        (
            '[[season.prices]]\ncategory = "non_residential"',
            '[[season.prices]]\ncategory = "residential"\nunit_price = 99\n\n[[season.prices]]\ncategory = "non_residential"',
            "season.prices：用户类别 residential 的单价写了 2 条",
        ),
    ],
)
def test_invalid_field_named(old, new, expected):
    text = spec_toml()
    assert old in text

    with pytest.raises(SpecError) as raised:
        load_spec_toml(text.replace(old, new, 1))

    assert any(expected in message for message in raised.value.messages), raised.value.messages


def test_missing_price_category_named():
    text = spec_toml().replace('[[season.prices]]\ncategory = "non_residential"\nunit_price = "30.00"\n', "")

    with pytest.raises(SpecError) as raised:
        load_spec_toml(text)

    assert any("缺少这些用户类别的单价：non_residential" in message for message in raised.value.messages)


def test_bad_toml_reported():
    with pytest.raises(SpecError) as raised:
        load_spec_toml("[company\ncode = 1")

    assert raised.value.messages[0].startswith("TOML 格式错误")
