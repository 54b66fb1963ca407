"""Memos of ledger lines posted before `memo_message` existed, in the reader's language.

Such a line stores only the Chinese memo text. The text is matched against the memo msgids
below, each compiled once into a pattern, and a match is shown as its translation filled
with the values it captured. Text that matches no msgid is shown as stored.
"""

import functools
import re

from flask_babel import get_locale

from app.i18n import DEFAULT_LOCALE, N_, Message, locale_code

# Every msgid that code posts as a ledger memo through memo_columns(M_(...)).
# tests/billing/test_old_memos.py checks the list against the source.
MEMO_MSGIDS = (
    N_("报停审批通过（流程 %(instance)s）"),
    N_("减免审批通过（流程 %(instance)s）"),
    N_("滞纳金减免审批通过（流程 %(instance)s）"),
    N_("面积由 %(old_area)s ㎡ 调整为 %(new_area)s ㎡（流程 %(instance)s）"),
    N_("复热：自 %(start)s 起 %(days)s/%(statutory_days)s 天按全额补计（流程 %(instance)s）"),
    N_("稽查追补：%(start)s 至 %(end)s 共 %(days)s/%(statutory_days)s 天（流程 %(instance)s）"),
    N_("稽查后恢复供热：%(start)s 起 %(days)s/%(statutory_days)s 天按全额补计（流程 %(instance)s）"),
    N_("入网：自 %(start)s 起 %(days)s/%(statutory_days)s 天（流程 %(instance)s）"),
    N_("用热 %(heat_gj)s GJ，计量热费 %(metered_fee)s 元，按面积热费 %(area_fee)s 元封顶（%(mode)s）"),
    N_("用热 %(heat_gj)s GJ，计量热费 %(metered_fee)s 元（%(mode)s）"),
    N_("%(start)s至%(end)s 共%(days)s天/法定%(statutory_days)s天"),
    N_("追溯调整单 %(change)s：%(description)s"),
    N_("截至 %(date)s 累计滞纳金 %(total)s 元"),
    N_("核销：%(reason)s"),
    N_("收据 %(receipt_no)s"),
    N_("%(kind)s %(refund_no)s"),
    # The ledger import's prior-arrears line; its file name may be any text, so it comes last.
    N_("%(filename)s 第 %(row)s 行"),
)
_WHOLE_NUMBER = r"\d+"
_DECIMAL = r"-?\d+(?:\.\d+)?"
_DATE = r"\d{4}-\d{2}-\d{2}"
# Pattern of each placeholder's value, as the posting code formats it; other placeholders match any text.
PLACEHOLDER_PATTERNS = {
    "instance": _WHOLE_NUMBER, "row": _WHOLE_NUMBER, "change": _WHOLE_NUMBER,
    "days": _WHOLE_NUMBER, "statutory_days": _WHOLE_NUMBER,
    "start": _DATE, "end": _DATE, "date": _DATE,
    "old_area": _DECIMAL, "new_area": _DECIMAL, "heat_gj": _DECIMAL, "metered_fee": _DECIMAL,
    "area_fee": _DECIMAL, "total": _DECIMAL,
    "receipt_no": r"\S+", "refund_no": r"\S+",
}
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _label_placeholders():
    """Return {placeholder: {Chinese label: label}} of the placeholders whose value is a translated label."""
    from app.billing.metered import SETTLEMENT_MODES
    from app.payments.models import REFUND_KINDS

    return {
        "mode": {str(label): label for label in SETTLEMENT_MODES.values()},
        "kind": {str(label): label for label in REFUND_KINDS.values()},
    }


@functools.cache
def memo_patterns():
    """Compile each memo msgid into (msgid, pattern, labels), in MEMO_MSGIDS order."""
    labels = _label_placeholders()
    compiled = []
    for msgid in MEMO_MSGIDS:
        parts = []
        position = 0
        for match in _PLACEHOLDER.finditer(msgid):
            name = match.group(1)
            parts.append(re.escape(msgid[position:match.start()]))
            if name in labels:
                value_pattern = "|".join(map(re.escape, labels[name]))
            else:
                value_pattern = PLACEHOLDER_PATTERNS.get(name, ".+?")
            parts.append(f"(?P<{name}>{value_pattern})")
            position = match.end()
        parts.append(re.escape(msgid[position:]))
        compiled.append((msgid, re.compile("".join(parts), re.DOTALL), labels))
    return compiled


def match_memo(text):
    """Return the Message whose Chinese rendering is `text`, or None when no memo msgid matches."""
    for msgid, pattern, labels in memo_patterns():
        match = pattern.fullmatch(text)
        if match is None:
            continue
        values = {}
        for name, value in match.groupdict().items():
            label = labels.get(name, {}).get(value)
            values[name] = Message(label) if label is not None else value
        return Message(msgid, **values)
    return None


def shown_old_memo(text):
    """Return a memo stored as text only, translated when it matches a memo msgid and the reader is not Chinese."""
    if not text or locale_code(get_locale()) == DEFAULT_LOCALE:
        return text
    message = match_memo(text)
    return str(message) if message is not None else text
