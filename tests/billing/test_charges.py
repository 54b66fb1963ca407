"""Season charges worked by hand from each company's tariff."""

from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.billing.services import rerate_account, run_billing, season_receivable
from app.extensions import db
from app.network.models import Account
from app.tariffs.services import compute_charge, get_season, tariff_in_force


def _charge(code, account):
    season = get_season(account.company_id, "2025-2026")
    building = account.unit.building
    kind = account.station.heat_source.kind if account.station else ""
    return compute_charge(tariff_in_force(season), account, building.has_lift, kind)


@pytest.mark.parametrize(
    "code, area, kwargs, expected",
    [
        ("TJ", "87.35", {}, "2183.75"),  # 87.35 × 25.00
        ("TJ", "87.35", {"status": "suspended"}, "436.75"),  # 87.35 × 25 × 0.20
        ("TJ", "100.00", {"user_type": "non_residential"}, "4000.00"),
        ("TJ", "100.00", {"user_type": "low_income"}, "2500.00"),  # priced as residential
        ("QD", "92.17", {}, "2101.48"),  # 92.17 × 0.75 × 30.40 = 2101.476, area not rounded first
        ("QD", "92.17", {"usable_area": "70.00"}, "2128.00"),  # 70 × 30.40
        ("QD", "100.00", {"user_type": "non_residential", "usable_area": "70"}, "3306.00"),  # building area
        ("SJZ", "96.73", {"lift": True}, "1808.85"),  # 96.73 × 0.85 × 22 = 1808.851
        ("SJZ", "96.73", {}, "1915.25"),  # 96.73 × 0.90 × 22 = 1915.254
        ("SJZ", "96.73", {"status": "suspended"}, "0.00"),  # ratio 0.00, line still exists
        ("BJ", "80", {"heat_source_kind": "燃气锅炉"}, "2400.00"),
        ("BJ", "80", {"heat_source_kind": "燃气锅炉", "status": "suspended"}, "720.00"),
        ("BJ", "80", {}, "1920.00"),
        ("BJ", "80", {"user_type": "non_residential", "heat_source_kind": "燃气锅炉"}, "3600.00"),
    ],
)
def test_charge_worked_examples(add_account, code, area, kwargs, expected):
    account = add_account(code, area, **kwargs)

    assert _charge(code, account).amount == Decimal(expected)


def test_not_connected_owes_nothing(add_account):
    account = add_account("TJ", "87.35", status="not_connected")

    assert _charge("TJ", account) is None


def test_billing_rerun_posts_nothing_twice(add_account):
    account = add_account("TJ", "87.35")

    first = run_billing("TJ", "2025-2026")
    second = run_billing("TJ", "2025-2026")

    season = get_season(account.company_id, "2025-2026")
    assert first.accounts_billed == 1
    assert second.accounts_billed == 0
    assert season_receivable(account.id, season.id) == Decimal("2183.75")


def test_rerate_to_suspension_posts_difference_once(add_account):
    account = add_account("TJ", "87.35")
    run_billing("TJ", "2025-2026")
    season = get_season(account.company_id, "2025-2026")

    line = rerate_account(account, season, "suspended", "process_instance", 1, key="suspension:1")
    again = rerate_account(account, season, "suspended", "process_instance", 1, key="suspension:1")
    db.session.commit()

    assert line.amount == Decimal("-1747.00")
    assert again is None
    assert season_receivable(account.id, season.id) == Decimal("436.75")
    assert account.billing_status == "suspended"


def test_gas_boiler_named_source_without_sheet(demo):
    import io

    import openpyxl

    from app.ledger.services import import_ledger

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["原户号", "小区名称", "楼栋", "单元", "户室号", "建筑面积", "用户类型", "供热状态", "换热站", "热源"])
    sheet.append(["JX9", "金顶街", 1, 1, "101", "80", "居民", "正常", "西山站", "西山燃气锅炉房"])
    buffer = io.BytesIO()
    workbook.save(buffer)

    result = import_ledger(demo["BJ"], buffer.getvalue(), "bj.xlsx")
    run_billing("BJ", "2025-2026")

    account = db.session.scalar(sa.select(Account).filter_by(legacy_no="JX9"))
    season = get_season(account.company_id, "2025-2026")
    assert result.ok
    assert season_receivable(account.id, season.id) == Decimal("2400.00")  # 80 × 30.00
