"""The group's unified 15-digit account number (用户编号) and its parts.

Layout: company number (2 digits) + community code (4) + building (3) + unit (2) + room (4),
e.g. 11 0001 001 01 0101 → 110001001010101. The number carries no check digit, and
sorting numbers as text sorts accounts by company, community, building, unit and room.
The number a company's old system used is kept beside it as Account.legacy_no.
"""

import re
from dataclasses import dataclass

from flask_babel import gettext as _

from app.i18n import N_, translate_label

ACCOUNT_NO_LENGTH = 15
# (part, digits, smallest value). Company numbers are assigned by the group and may be 00;
# the ledger importer numbers communities, buildings, units and rooms from 1.
PARTS = (("company", 2, 0), ("community", 4, 1), ("building", 3, 1), ("unit", 2, 1), ("room", 4, 1))
PART_LABELS = {"company": N_("公司编号"), "community": N_("小区编码"), "building": N_("楼号"), "unit": N_("单元"), "room": N_("房号")}
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
                raise ValueError(_("%(part)s「%(value)s」须为 %(digits)s 位数字。", part=translate_label(PART_LABELS[name]), value=value, digits=digits))
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not smallest <= value < 10**digits:
            raise ValueError(_(
                "%(part)s %(value)s 须为 %(smallest)s 到 %(largest)s 的整数。",
                part=translate_label(PART_LABELS[name]), value=repr(value), smallest=smallest, largest=10**digits - 1,
            ))
        parts[name] = value
    return str(AccountNumber(**parts))


def parse_account_no(text):
    """Split a unified account number into its parts, or raise ValueError saying what is wrong."""
    if not isinstance(text, str) or not ACCOUNT_NO_PATTERN.fullmatch(text):
        raise ValueError(_("用户编号「%(value)s」无效：须为 %(length)s 位数字。", value=str(text)[:32], length=ACCOUNT_NO_LENGTH))
    values, position = {}, 0
    for name, digits, smallest in PARTS:
        values[name] = int(text[position:position + digits])
        position += digits
        if values[name] < smallest:
            raise ValueError(_("用户编号「%(value)s」的%(part)s为 0，须从 %(smallest)s 开始。", value=text, part=translate_label(PART_LABELS[name]), smallest=smallest))
    return AccountNumber(**values)
