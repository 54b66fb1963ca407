"""VAT of invoice lines: residential heat exempt, other heat at the company's configured rate.

The VAT in a tax-inclusive amount A at rate r is A × r / (1 + r). It is computed once per
line from the tax-inclusive amount and rounded once by the group's precision rule, so the
tax-exclusive amount is A minus that VAT and the three always add up.
"""

from dataclasses import dataclass
from decimal import Decimal

from app.billing.precision import company_money_rule
from app.money import ZERO, round_money
from app.network.models import TARIFF_CATEGORY

ZERO_RATE = Decimal("0")


@dataclass(frozen=True)
class LineTax:
    """Rate applied to a tax-inclusive amount, the VAT in it, and whether the line is exempt."""

    amount: Decimal
    rate: Decimal
    tax: Decimal
    exempt: bool

    @property
    def net(self):
        return self.amount - self.tax


def is_exempt(user_type, residential_exempt=True):
    """Whether heat sold to `user_type` is VAT-exempt: residential and low-income users when the company exempts them."""
    return residential_exempt and TARIFF_CATEGORY.get(user_type) == "residential"


def vat_in(amount, rate):
    """Return the VAT contained in a tax-inclusive `amount` at `rate`, rounded once by the current precision rule."""
    if rate == ZERO_RATE:
        return ZERO
    return round_money(amount * rate / (1 + rate))


def line_tax(company_id, amount, user_type, profile):
    """Work out the VAT of one line of `company_id` by its user type and the company's InvoiceProfile."""
    if is_exempt(user_type, profile.residential_exempt):
        return LineTax(amount=amount, rate=ZERO_RATE, tax=ZERO, exempt=True)
    with company_money_rule(company_id):
        tax = vat_in(amount, profile.vat_rate)
    return LineTax(amount=amount, rate=profile.vat_rate, tax=tax, exempt=False)
