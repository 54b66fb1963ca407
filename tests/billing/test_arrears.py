"""Arrears by season: ageing buckets, allocation order, write-offs and collection work lists."""

import io
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook

from app.billing.arrears import (
    ArrearsError, WorkListFilter, ageing_totals, arrears_by_account, assign_collector, export_work_list,
    parse_work_list_filter, work_list, write_off,
)
from app.billing.invariants import account_figures, find_invariant_breaks
from app.billing.models import AllocationPolicy, CollectionTask, LedgerEntry
from app.billing.services import run_billing
from app.extensions import db
from app.org.models import User
from app.payments.services import AllocationRule, AmountOwed, SeasonOwed, allocate_payment, amount_owed, collect_payment
from app.tariffs.models import Season
from app.tariffs.services import get_season

ZERO = Decimal("0.00")


def _user(username):
    return db.session.scalar(sa.select(User).filter_by(username=username))


def _prior_arrears(account, amount):
    db.session.add(
        LedgerEntry(company_id=account.company_id, account_id=account.id, season_id=None, kind="prior_arrears",
                    amount=Decimal(amount), cause_type="ledger_import", idempotency_key=f"arrears-import:{account.id}")
    )
    db.session.commit()


@pytest.fixture
def three_seasons(add_account, add_season):
    """TJ account 87.35 m² billed for 2023-2024 (20.00), 2024-2025 (22.00) and 2025-2026 (25.00), plus 300.00 imported arrears."""
    add_season("TJ", "2023-2024", residential="20.00")
    add_season("TJ", "2024-2025", residential="22.00")
    account = add_account("TJ", "87.35", customer_name="张三", phone="13800000001")
    for name in ("2023-2024", "2024-2025", "2025-2026"):
        run_billing("TJ", name)
    _prior_arrears(account, "300.00")
    return account


def test_ageing_buckets_by_season(three_seasons):
    # 87.35 × 20 = 1747.00 (2 seasons old), × 22 = 1921.70 (1 season old), × 25 = 2183.75 (current).
    account = three_seasons

    [item] = arrears_by_account(account.company_id)

    assert item.buckets == {
        "current": Decimal("2183.75"), "1": Decimal("1921.70"), "2": Decimal("1747.00"), "3+": ZERO,
        "imported": Decimal("300.00"),
    }
    assert item.total == Decimal("6152.45")
    assert item.oldest_age == 2
    assert item.by_season["2023-2024"] == Decimal("1747.00")


def test_ageing_as_of_earlier_season(three_seasons):
    # As of 2024-2025, the 2025-2026 season is left out and 2023-2024 is one season old.
    account = three_seasons
    as_of = get_season(account.company_id, "2024-2025")

    [item] = arrears_by_account(account.company_id, as_of)

    assert item.buckets["current"] == Decimal("1921.70")
    assert item.buckets["1"] == Decimal("1747.00")
    assert item.total == Decimal("3968.70")


def test_three_plus_bucket(add_account, add_season):
    for name in ("2021-2022", "2022-2023"):
        add_season("TJ", name, residential="20.00")
    account = add_account("TJ", "50")
    run_billing("TJ", "2021-2022")
    run_billing("TJ", "2022-2023")
    run_billing("TJ", "2025-2026")

    [item] = arrears_by_account(account.company_id)

    # Seasons are counted, not years: 2021-2022 is two seasons before 2025-2026 here, since
    # only three seasons exist. 50 × 20 = 1000.00 each; 50 × 25 = 1250.00 current.
    assert item.buckets == {"current": Decimal("1250.00"), "1": Decimal("1000.00"), "2": Decimal("1000.00"),
                            "3+": ZERO, "imported": ZERO}


def test_totals_sum_accounts(three_seasons, add_account):
    other = add_account("TJ", "40")
    run_billing("TJ", "2025-2026")  # 40 × 25 = 1000.00 for the new account only.

    totals = ageing_totals(arrears_by_account(other.company_id))

    assert totals["current"] == (2, Decimal("3183.75"))
    assert totals["2"] == (1, Decimal("1747.00"))
    assert totals["total"] == (2, Decimal("7152.45"))


def test_payment_pays_oldest_first_by_default(three_seasons):
    # 2500.00: imported 300.00, then 2023-2024 1747.00, then 453.00 of 2024-2025.
    account = three_seasons

    collect_payment(account, "2500.00", "cash", _user("tj_cashier"))

    owed = amount_owed(account)
    assert owed.arrears_outstanding == ZERO
    assert [(s.season.name, s.outstanding) for s in owed.seasons] == [
        ("2023-2024", ZERO), ("2024-2025", Decimal("1468.70")), ("2025-2026", Decimal("2183.75")),
    ]


def test_payment_pays_current_first_by_policy(three_seasons):
    # 2500.00: 2025-2026 2183.75, then imported 300.00, then 16.25 of 2023-2024.
    account = three_seasons
    db.session.add(AllocationPolicy(company_id=account.company_id, order="current_first"))
    db.session.commit()

    collect_payment(account, "2500.00", "cash", _user("tj_cashier"))

    owed = amount_owed(account)
    assert owed.arrears_outstanding == ZERO
    assert [(s.season.name, s.outstanding) for s in owed.seasons] == [
        ("2023-2024", Decimal("1730.75")), ("2024-2025", Decimal("1921.70")), ("2025-2026", ZERO),
    ]


def _late_fee(account, season_name, amount):
    season = get_season(account.company_id, season_name)
    db.session.add(
        LedgerEntry(company_id=account.company_id, account_id=account.id, season_id=season.id, kind="late_fee",
                    amount=Decimal(amount), cause_type="late_fee_run", idempotency_key=f"late_fee:test:{season.id}")
    )
    db.session.commit()


def _payment_lines(account):
    names = dict(db.session.execute(sa.select(Season.id, Season.name)).all())
    return [
        (names.get(line.season_id), line.kind, line.amount)
        for line in db.session.scalars(
            sa.select(LedgerEntry).where(
                LedgerEntry.account_id == account.id, LedgerEntry.kind.in_(("payment", "late_fee_payment"))
            ).order_by(LedgerEntry.id)
        )
    ]


def test_late_fees_paid_after_their_season_by_default(three_seasons):
    # Late fees 100.00 on 2023-2024 and 50.00 on 2024-2025. 2200.00 pays imported 300.00,
    # 2023-2024 1747.00, its late fee 100.00, then 2200 − 2147 = 53.00 of 2024-2025.
    account = three_seasons
    _late_fee(account, "2023-2024", "100.00")
    _late_fee(account, "2024-2025", "50.00")
    assert amount_owed(account).total == Decimal("6302.45")  # 6152.45 + 150.00

    collect_payment(account, "2200.00", "cash", _user("tj_cashier"))

    assert sorted(_payment_lines(account), key=str) == sorted([
        (None, "payment", Decimal("-300.00")), ("2023-2024", "payment", Decimal("-1747.00")),
        ("2023-2024", "late_fee_payment", Decimal("-100.00")), ("2024-2025", "payment", Decimal("-53.00")),
    ], key=str)
    owed = amount_owed(account)
    assert [(s.season.name, s.outstanding, s.late_fee_outstanding) for s in owed.seasons] == [
        ("2023-2024", ZERO, ZERO), ("2024-2025", Decimal("1868.70"), Decimal("50.00")), ("2025-2026", Decimal("2183.75"), ZERO),
    ]
    assert owed.total == Decimal("4102.45")  # 6302.45 − 2200.00
    for name in ("2023-2024", "2024-2025"):
        assert find_invariant_breaks(account.company_id, get_season(account.company_id, name).id) == []


def test_late_fees_last_by_policy(three_seasons):
    # Same debts with late fees last: 2200.00 pays 300.00, 1747.00 and 153.00 of 2024-2025 and
    # no late fee. The next 4102.45 pays 1768.70 (2024-2025), 2183.75 (2025-2026), then the
    # late fees 100.00 and 50.00: 1768.70 + 2183.75 + 150.00 = 4102.45.
    account = three_seasons
    _late_fee(account, "2023-2024", "100.00")
    _late_fee(account, "2024-2025", "50.00")
    db.session.add(AllocationPolicy(company_id=account.company_id, order="oldest_first", late_fees_last=True))
    db.session.commit()

    collect_payment(account, "2200.00", "cash", _user("tj_cashier"))

    owed = amount_owed(account)
    assert [(s.season.name, s.outstanding, s.late_fee_outstanding) for s in owed.seasons] == [
        ("2023-2024", ZERO, Decimal("100.00")), ("2024-2025", Decimal("1768.70"), Decimal("50.00")),
        ("2025-2026", Decimal("2183.75"), ZERO),
    ]

    collect_payment(account, "4102.45", "cash", _user("tj_cashier"))

    late = [line for line in _payment_lines(account) if line[1] == "late_fee_payment"]
    assert sorted(late) == [("2023-2024", "late_fee_payment", Decimal("-100.00")), ("2024-2025", "late_fee_payment", Decimal("-50.00"))]
    assert amount_owed(account).total == ZERO


OUTSTANDING = st.lists(st.tuples(st.integers(min_value=0, max_value=500_000), st.integers(min_value=0, max_value=50_000)),
                       min_size=1, max_size=5)


@given(arrears=st.integers(min_value=0, max_value=500_000), seasons=OUTSTANDING, share=st.integers(0, 100),
       order=st.sampled_from(["oldest_first", "current_first"]), late_fees_last=st.booleans())
def test_allocation_properties(arrears, seasons, share, order, late_fees_last):
    # Amounts in fen; each season owes (receivable, posted late fee). Whatever the rule, the
    # parts add up to the payment, none exceeds what its slot owes, every slot before the last
    # one paid is paid in full, and with late fees last no late fee is paid while a receivable is open.
    owed = AmountOwed(
        arrears=Decimal(arrears).scaleb(-2), arrears_received=ZERO,
        seasons=tuple(
            SeasonOwed(season=index, receivable=Decimal(fen).scaleb(-2), received=ZERO, late_fee=Decimal(late).scaleb(-2))
            for index, (fen, late) in enumerate(seasons)
        ),
    )
    amount = (owed.total * share / 100).quantize(Decimal("0.01"))
    rule = AllocationRule(order, late_fees_last)

    parts = allocate_payment(owed, amount, rule)

    assert sum((part for _, _, part in parts), ZERO) == amount
    outstanding = {(None, "payment"): owed.arrears_outstanding}
    for s in owed.seasons:
        outstanding[(s.season, "payment")] = s.outstanding
        outstanding[(s.season, "late_fee_payment")] = s.late_fee_outstanding
    assert all(part <= outstanding[(slot, kind)] for slot, kind, part in parts)
    seasons_order = [None, *range(len(seasons))]
    if order == "current_first":
        seasons_order = [len(seasons) - 1, None, *range(len(seasons) - 1)]
    if late_fees_last:
        sequence = [(slot, "payment") for slot in seasons_order] + [(slot, "late_fee_payment") for slot in seasons_order if slot is not None]
    else:
        sequence = [(slot, kind) for slot in seasons_order for kind in ("payment", "late_fee_payment") if slot is not None or kind == "payment"]
    paid = [(slot, kind) for slot, kind, _ in parts]
    assert paid == [item for item in sequence if item in paid]
    for slot, kind, part in parts[:-1]:
        assert part == outstanding[(slot, kind)]
    if late_fees_last and any(kind == "late_fee_payment" for _, kind, _ in parts):
        assert sum((part for _, kind, part in parts if kind == "payment"), ZERO) == owed.total - owed.late_fees_outstanding


def test_write_off_keeps_identity(three_seasons):
    # 2024-2025: receivable 1921.70 = received 1000.00 + waived 0 + written off 921.70 + outstanding 0.
    account = three_seasons
    season = get_season(account.company_id, "2024-2025")
    db.session.add(AllocationPolicy(company_id=account.company_id, order="current_first"))
    db.session.commit()
    collect_payment(account, "3183.75", "cash", _user("tj_cashier"))  # 2183.75 current, 300.00 imported, 700.00 2023-2024.
    db.session.query(AllocationPolicy).delete()
    collect_payment(account, "1047.00", "cash", _user("tj_cashier"))  # Rest of 2023-2024.
    collect_payment(account, "1000.00", "cash", _user("tj_cashier"))  # 2024-2025.

    write_off(account, season, "921.70", "用户去世，无继承人", _user("tj_finance"))
    db.session.commit()

    figures = account_figures(account, season.id)
    assert figures.receivable == Decimal("1921.70")
    assert figures.received == Decimal("1000.00")
    assert figures.written_off == Decimal("921.70")
    assert figures.outstanding == ZERO
    assert figures.gap == 0
    assert find_invariant_breaks(account.company_id, season.id) == []
    assert amount_owed(account).total == ZERO


def test_write_off_of_imported_arrears(three_seasons):
    account = three_seasons

    entry = write_off(account, None, "300.00", "原系统遗留，无法核实", _user("tj_finance"))
    db.session.commit()

    assert entry.amount == Decimal("-300.00")
    assert entry.season_id is None
    assert "原系统遗留" in entry.memo
    assert amount_owed(account).arrears_outstanding == ZERO


@pytest.mark.parametrize(
    ("amount", "reason", "message"),
    [
        ("2183.76", "用户去世，无继承人", "超过用户"),
        ("100.00", "无", "核销原因至少 4 个字"),
        ("100.00", "无\u200b\u200b\u200b", "核销原因至少 4 个字"),
        ("100.00", "\ufeff\xa0\u3000\u200b", "核销原因至少 4 个字"),
        ("-1", "用户去世，无继承人", "核销金额无效"),
    ],
)
def test_invalid_write_off_rejected(add_account, amount, reason, message):
    account = add_account("TJ", "87.35")
    run_billing("TJ", "2025-2026")
    season = get_season(account.company_id, "2025-2026")

    with pytest.raises(ArrearsError, match=message):
        write_off(account, season, amount, reason, _user("tj_finance"))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(["pay", "write_off"]), st.integers(1, 100)), min_size=1, max_size=5))
def test_identity_after_payments_and_write_offs(add_account, demo, steps):
    account = add_account("TJ", "87.35")
    season = get_season(account.company_id, "2025-2026")
    run_billing("TJ", "2025-2026")
    for action, share in steps:
        outstanding = amount_owed(account).total
        amount = max((outstanding * share / 100).quantize(Decimal("0.01")), Decimal("0.01"))
        if outstanding <= 0:
            break
        if action == "pay":
            collect_payment(account, str(amount), "cash", _user("tj_cashier"))
        else:
            write_off(account, season, str(amount), "长期失联无法催收", _user("tj_finance"))
            db.session.commit()

        figures = account_figures(account, season.id)
        assert figures.receivable == figures.received + figures.waived + figures.written_off + figures.outstanding - figures.credit
        assert find_invariant_breaks(account.company_id, season.id) == []


def test_work_list_filters(three_seasons, add_account):
    small = add_account("TJ", "10")
    run_billing("TJ", "2025-2026")  # 10 × 25 = 250.00, current season only.
    company_id = small.company_id

    assert [i.account_no for i in work_list(company_id, WorkListFilter(min_amount=Decimal("1000")))] == [three_seasons.account_no]
    assert [i.account_no for i in work_list(company_id, WorkListFilter(min_age=1))] == [three_seasons.account_no]
    assert [i.account_no for i in work_list(company_id, WorkListFilter(building_code=small.unit.building.code))] == [small.account_no]
    assert len(work_list(company_id)) == 2
    assert work_list(company_id)[0].account_no == three_seasons.account_no


def test_assign_and_export(three_seasons):
    field = _user("tj_field")
    clerk = _user("tj_clerk")

    assign_collector(three_seasons.company_id, [three_seasons.id], field, clerk, note="周末上门")
    db.session.commit()

    task = db.session.scalar(sa.select(CollectionTask).filter_by(account_id=three_seasons.id))
    assert task.collector_id == field.id
    assert task.amount_at_assignment == Decimal("6152.45")
    items = work_list(three_seasons.company_id, WorkListFilter(collector_id=field.id))
    assert [i.collector for i in items] == [field.name]
    assert work_list(three_seasons.company_id, WorkListFilter(unassigned_only=True)) == []

    sheet = load_workbook(io.BytesIO(export_work_list(items))).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:4] == ("用户编号", "户名", "电话", "地址")
    assert rows[1][0] == three_seasons.account_no
    assert rows[1][1] == "张三"
    assert Decimal(str(rows[1][9])) == Decimal("6152.45")


def test_assign_without_arrears_rejected(add_account):
    account = add_account("TJ", "87.35")

    with pytest.raises(ArrearsError, match="当前没有欠费"):
        assign_collector(account.company_id, [account.id], _user("tj_field"), _user("tj_clerk"))


def test_filter_parsing_names_bad_value():
    with pytest.raises(ArrearsError, match="最低欠费金额「abc」无效"):
        parse_work_list_filter({"min_amount": "abc"})
    with pytest.raises(ArrearsError, match="楼栋「A1」无效"):
        parse_work_list_filter({"building": "A1"})

    parsed = parse_work_list_filter({"min_amount": "1,000.50", "building": "15", "min_age": "2", "unassigned": "1"})

    assert parsed == WorkListFilter(min_amount=Decimal("1000.50"), building_code="015", min_age=2, unassigned_only=True)
