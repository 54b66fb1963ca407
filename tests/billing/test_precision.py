"""The group's money precision rule: 0.01, 0.1 or whole yuan, applied by round_money."""

import itertools
from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.billing.late_fees import late_fee_as_of
from app.billing.models import LedgerEntry
from app.billing.precision import (
    MONEY_QUANTA,
    ROUNDING_MODES,
    PrecisionError,
    build_money_rule,
    company_money_rule,
    set_group_precision,
)
from app.billing.services import run_billing, season_receivable
from app.extensions import db
from app.money import ScaledDecimal, round_money, use_money_rule
from app.org.models import Group
from app.tariffs.services import get_season

SEASON = "2025-2026"
EXACT_AMOUNTS = st.decimals(min_value=Decimal("-9999999"), max_value=Decimal("9999999"), places=6)
RULES = st.builds(build_money_rule, st.sampled_from(MONEY_QUANTA), st.sampled_from(sorted(ROUNDING_MODES)))


def _set_group(quantum, rounding="half_up"):
    group = db.session.scalar(sa.select(Group).filter_by(code="NHG"))
    set_group_precision(group, Decimal(quantum), rounding)
    db.session.commit()


def test_default_rule_is_cent_half_up(demo):
    with company_money_rule(demo["QD"].id) as rule:
        assert rule.quantum == Decimal("0.01")
        assert round_money(Decimal("2101.475")) == Decimal("2101.48")


@pytest.mark.parametrize(
    "quantum, qd_fee, bj_prorated",
    [
        ("0.1", "2101.5", "1031.4"),  # 2101.476 and 1031.404
        ("1", "2101", "1031"),
    ],
)
def test_group_quantum_in_billing(add_account, quantum, qd_fee, bj_prorated):
    _set_group(quantum)
    qd = add_account("QD", "92.17")
    bj = add_account("BJ", "80", connected_on=date(2026, 1, 10))

    run_billing("QD", SEASON)
    run_billing("BJ", SEASON)

    assert season_receivable(qd.id, get_season(qd.company_id, SEASON).id) == Decimal(qd_fee)
    assert season_receivable(bj.id, get_season(bj.company_id, SEASON).id) == Decimal(bj_prorated)


@pytest.mark.parametrize("quantum, expected", [("0.01", "135.39"), ("0.1", "135.4"), ("1", "135")])
def test_group_quantum_in_late_fees(add_account, quantum, expected):
    # 2183.75 × 0.002 × 31 = 135.3925.
    account = add_account("TJ", "87.35")
    run_billing("TJ", SEASON)
    _set_group(quantum)

    assert late_fee_as_of(account, get_season(account.company_id, SEASON), date(2026, 1, 31)) == Decimal(expected)


def test_half_even_rounding(demo):
    _set_group("1", "half_even")

    with company_money_rule(demo["TJ"].id):
        assert round_money(Decimal("2.5")) == Decimal("2")
        assert round_money(Decimal("3.5")) == Decimal("4")


@pytest.mark.parametrize(
    "quantum, rounding, message",
    [("0.001", "half_up", "金额精度 0.001 元无效"), ("5", "half_up", "金额精度 5 元无效"), ("0.01", "truncate", "舍入方式「truncate」无效")],
)
def test_invalid_rule_rejected(quantum, rounding, message):
    with pytest.raises(PrecisionError, match=message):
        build_money_rule(Decimal(quantum), rounding)


@given(EXACT_AMOUNTS, RULES)
def test_rounding_is_idempotent(value, rule):
    with use_money_rule(rule):
        once = round_money(value)

        assert round_money(once) == once


@given(EXACT_AMOUNTS, RULES)
def test_rounding_within_half_quantum(value, rule):
    with use_money_rule(rule):
        rounded = round_money(value)

    assert abs(rounded - value) <= rule.quantum / 2
    assert rounded % rule.quantum == 0


@given(st.lists(EXACT_AMOUNTS, min_size=1, max_size=20), RULES)
def test_stored_lines_sum_to_rounded_total(values, rule):
    column = ScaledDecimal(2)
    with use_money_rule(rule):
        lines = [round_money(value) for value in values]

    stored = [column.process_bind_param(line, None) for line in lines]

    assert column.process_result_value(sum(stored), None) == sum(lines)


_line_batches = itertools.count(1)


@pytest.fixture
def ledger_account(add_account):
    """One TJ account for the lines of every example of a hypothesis test."""
    return add_account("TJ", "50")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(EXACT_AMOUNTS, min_size=1, max_size=8), rule=RULES)
def test_database_sum_equals_rounded_lines(ledger_account, values, rule):
    # The fixture runs once for all examples, so each example tags its lines with its own batch number.
    batch = next(_line_batches)
    with use_money_rule(rule):
        lines = [round_money(value) for value in values]
    for index, line in enumerate(lines):
        db.session.add(
            LedgerEntry(
                company_id=ledger_account.company_id, account_id=ledger_account.id, kind="rerate", amount=line,
                cause_type="test", cause_id=batch, idempotency_key=f"precision:{batch}:{index}",
            )
        )
    db.session.commit()

    total = db.session.scalar(sa.select(sa.func.sum(LedgerEntry.amount)).where(LedgerEntry.cause_id == batch))

    assert total == sum(lines)
