"""An acquired company's ledger and specification, written as its old system exports them."""

import io
from decimal import Decimal

import openpyxl

HEADER = ["原系统编号", "户名", "电话", "小区", "楼号", "单元", "房号", "建筑面积", "用热性质", "状态", "换热站"]
# Legacy wording of the old system next to the group's codes.
LEGACY_STATUSES = {"在供": "normal", "停暖": "suspended", "未接入": "not_connected"}
LEGACY_USER_TYPES = {"民用": "residential", "企业": "non_residential", "困难户": "low_income"}

# (legacy number, user type, status, area): the hand-worked rows of the tests.
SMALL_LEDGER = [
    ("ZZ-000101", "民用", "在供", "80.00"),
    ("ZZ-000102", "民用", "停暖", "100.00"),
    ("ZZ-000103", "企业", "在供", "200.50"),
    ("ZZ-000104", "困难户", "在供", "60.25"),
    ("ZZ-000105", "民用", "未接入", "90.00"),
]


def ledger_bytes(rows, first=0):
    """Return an .xlsx ledger of `rows` (legacy number, user type, status, area) in the old system's layout.

    Row i lives at dwelling `first + i`, so a later file with a larger `first` adds new
    households instead of naming the addresses of accounts already imported.
    """
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("热用户")
    sheet.append(["中原热力 2025-2026 采暖季用户清单"])
    sheet.append(HEADER)
    for index, (legacy_no, user_type, status, area) in enumerate(rows, start=first):
        building, room = index // 40 + 1, index % 40 + 101
        sheet.append([legacy_no, f"户主{index}", "", "金水花园", f"{building}号楼", 1, room, Decimal(area), user_type, status, "金水站"])
    sheet.append(["合计"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def generated_rows(count):
    """Return `count` rows mixing every legacy wording, with areas from 40.00 to 189.99 m²."""
    user_types, statuses = list(LEGACY_USER_TYPES), list(LEGACY_STATUSES)
    rows = []
    for number in range(count):
        area_hundredths = 4000 + number * 7919 % 15000
        rows.append((
            f"ZZ-{number + 1:06d}",
            user_types[number % 7 % 3],
            statuses[number % 11 % 3],
            f"{area_hundredths // 100}.{area_hundredths % 100:02d}",
        ))
    return rows


def spec_toml(code="ZZ", number="21", username="zz_admin", legacy=True):
    """Return a TOML specification for the acquired company, with or without its legacy wording."""
    text = f"""
[company]
code = "{code}"
number = "{number}"
name = "中原热力有限公司"
city = "郑州"
invoice_mode = "receipt"

[admin]
username = "{username}"
name = "中原管理员"

[season]
name = "2025-2026"
start_on = 2025-11-15
end_on = 2026-03-15
suspension_ratio = 0.30

[[season.prices]]
category = "residential"
unit_price = 20.00

[[season.prices]]
category = "non_residential"
unit_price = "30.00"
"""
    if legacy:
        statuses = "\n".join(f'"{text}" = "{code}"' for text, code in LEGACY_STATUSES.items())
        user_types = "\n".join(f'"{text}" = "{code}"' for text, code in LEGACY_USER_TYPES.items())
        text += f"\n[legacy_values.billing_status]\n{statuses}\n\n[legacy_values.user_type]\n{user_types}\n"
    return text
