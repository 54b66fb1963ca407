"""VAT of invoice lines: exempt residential heat, non-residential at the company rate, rounded once by the group rule."""

from decimal import Decimal

import pytest

from app.billing.precision import set_group_precision
from app.extensions import db
from app.invoicing.models import InvoiceProfile
from app.invoicing.vat import is_exempt, line_tax
from app.org.models import Group


def _profile(company, rate="0.09", residential_exempt=True):
    return InvoiceProfile(company_id=company.id, vat_rate=Decimal(rate), residential_exempt=residential_exempt)


def test_residential_and_low_income_are_exempt():
    assert is_exempt("residential")
    assert is_exempt("low_income")
    assert not is_exempt("non_residential")
    assert not is_exempt("residential", residential_exempt=False)


def test_exempt_line_has_no_tax(demo):
    tax = line_tax(demo["TJ"].id, Decimal("2183.75"), "residential", _profile(demo["TJ"]))
    assert tax.exempt
    assert tax.rate == Decimal("0")
    assert tax.tax == Decimal("0.00")
    assert tax.net == Decimal("2183.75")


@pytest.mark.parametrize(
    ("amount", "expected_tax"),
    [
        # 40.00 × 87.35 m² = 3494.00; 3494.00 × 0.09 / 1.09 = 288.4954… → 288.50; net 3205.50.
        ("3494.00", "288.50"),
        # 1090.00 × 0.09 / 1.09 = 90 exactly.
        ("1090.00", "90.00"),
        # 0.06 × 0.09 / 1.09 = 0.004954… → 0.00: a tiny amount carries no tax.
        ("0.06", "0.00"),
        # 100.00 × 0.09 / 1.09 = 8.2568… → 8.26.
        ("100.00", "8.26"),
    ],
)
def test_non_residential_tax_at_nine_percent(demo, amount, expected_tax):
    tax = line_tax(demo["TJ"].id, Decimal(amount), "non_residential", _profile(demo["TJ"]))
    assert not tax.exempt
    assert tax.rate == Decimal("0.09")
    assert tax.tax == Decimal(expected_tax)
    assert tax.net + tax.tax == Decimal(amount)


def test_tax_follows_group_precision(demo):
    # 3494.00 × 0.09 / 1.09 = 288.4954…: to 0.1 yuan half up → 288.5; to 1 yuan → 288.
    group = db.session.get(Group, demo["TJ"].group_id)
    set_group_precision(group, "0.1", "half_up")
    db.session.commit()
    assert line_tax(demo["TJ"].id, Decimal("3494.00"), "non_residential", _profile(demo["TJ"])).tax == Decimal("288.5")
    set_group_precision(group, "1", "half_up")
    db.session.commit()
    assert line_tax(demo["TJ"].id, Decimal("3494.00"), "non_residential", _profile(demo["TJ"])).tax == Decimal("288")


def test_company_rate_and_taxed_residential(demo):
    # A company taxing residential heat at 13 %: 2183.75 × 0.13 / 1.13 = 251.2278… → 251.23.
    profile = _profile(demo["BJ"], rate="0.13", residential_exempt=False)
    tax = line_tax(demo["BJ"].id, Decimal("2183.75"), "residential", profile)
    assert tax.tax == Decimal("251.23")
    assert tax.net == Decimal("1932.52")
