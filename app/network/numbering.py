"""The group's unified 15-digit account number (用户编号) and its parts.

Layout: company number (2 digits) + community code (4) + building (3) + unit (2) + room (4),
e.g. 11 0001 001 01 0101 → 110001001010101. The number carries no check digit, and
sorting numbers as text sorts accounts by company, community, building, unit and room.
The number a company's old system used is kept beside it as Account.legacy_no.
"""

import re
from dataclasses import dataclass

ACCOUNT_NO_LENGTH = 15
# (part, digits, smallest value). Company numbers are assigned by the group and may be 00;
# the ledger importer numbers communities, buildings, units and rooms from 1.
PARTS = (("company", 2, 0), ("community", 4, 1), ("building", 3, 1), ("unit", 2, 1), ("room", 4, 1))
PART_LABELS = {"company": "公司编号", "community": "小区编码", "building": "楼号", "unit": "单元", "room": "房号"}
ACCOUNT_NO_PATTERN = re.compile(r"[0-9]{15}")


@dataclass(frozen=True)
class AccountNumber:
    """The parts of a unified account number, as integers."""

    company: int
    community: int
    building: int
    unit: int
    room: int

    def __str__(self):
        return "".join(f"{getattr(self, name):0{digits}d}" for name, digits, _ in PARTS)


def format_account_no(company_number, community_code, building, unit, room):
    """Build the 15-digit number, or raise ValueError naming the part that does not fit."""
    values = {"company": company_number, "community": community_code, "building": building, "unit": unit, "room": room}
    parts = {}
    for name, digits, smallest in PARTS:
        value = values[name]
        if isinstance(value, str):
            if not re.fullmatch(rf"[0-9]{{{digits}}}", value):
                raise ValueError(f"{PART_LABELS[name]}「{value}」须为 {digits} 位数字。")
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not smallest <= value < 10**digits:
            raise ValueError(f"{PART_LABELS[name]} {value!r} 须为 {smallest} 到 {10**digits - 1} 的整数。")
        parts[name] = value
    return str(AccountNumber(**parts))


def parse_account_no(text):
    """Split a unified account number into its parts, or raise ValueError saying what is wrong."""
    if not isinstance(text, str) or not ACCOUNT_NO_PATTERN.fullmatch(text):
        raise ValueError(f"用户编号「{str(text)[:32]}」无效：须为 {ACCOUNT_NO_LENGTH} 位数字。")
    values, position = {}, 0
    for name, digits, smallest in PARTS:
        values[name] = int(text[position:position + digits])
        position += digits
        if values[name] < smallest:
            raise ValueError(f"用户编号「{text}」的{PART_LABELS[name]}为 0，须从 {smallest} 开始。")
    return AccountNumber(**values)
