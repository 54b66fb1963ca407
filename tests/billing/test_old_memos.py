"""Ledger lines stored without memo_message: their memo text is matched to a memo msgid and translated."""

import ast
import re
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from app.billing.memos import MEMO_MSGIDS, match_memo
from app.billing.models import LedgerEntry
from app.extensions import db
from app.i18n import Message
from app.org.models import User

APP_DIR = Path(__file__).resolve().parents[2] / "app"
# A value of each placeholder as the posting code formats it.
SAMPLE_VALUES = {
    "instance": "42", "row": "17", "change": "8", "days": "31", "statutory_days": "151",
    "start": "2025-11-15", "end": "2025-12-15", "date": "2026-01-31",
    "old_area": "87.35", "new_area": "90", "heat_gj": "12.345", "metered_fee": "300.00", "area_fee": "280.50",
    "total": "12.40", "receipt_no": "TJ20251115-0001", "refund_no": "RF20251201-0003",
    "filename": "津南 2025 台账.xlsx", "reason": "户主失联，法院裁定终结", "description": "面积复核：90 ㎡",
    "mode": Message("多退少补"), "kind": Message("冲正"),
}


def _memo_msgids_in_source():
    """Collect the M_ msgids that app/ posts as memos: memo_columns(M_(...)), memo=M_(...) and memo = M_(...)."""

    def msgid_of(node):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "M_" and isinstance(node.args[0], ast.Constant):
            return node.args[0].value
        return None

    found = set()
    for path in APP_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            candidates = []
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "memo_columns" and node.args:
                candidates.append(node.args[0])
            if isinstance(node, ast.Call):
                candidates += [keyword.value for keyword in node.keywords if keyword.arg == "memo"]
            if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "memo" for target in node.targets):
                candidates.append(node.value)
            found.update(msgid for msgid in map(msgid_of, candidates) if msgid)
    return found


def test_memo_msgids_cover_source():
    source = _memo_msgids_in_source()

    assert source, "no memo msgids found; the scan no longer matches the code"
    assert source - set(MEMO_MSGIDS) == set()
    # ChargeLine.describe() returns this memo, so the scan cannot see it.
    assert "%(start)s至%(end)s 共%(days)s天/法定%(statutory_days)s天" in MEMO_MSGIDS


@pytest.mark.parametrize("msgid", MEMO_MSGIDS)
def test_memo_text_matches_its_msgid(app, msgid):
    names = re.findall(r"%\((\w+)\)s", msgid)
    message = Message(msgid, **{name: SAMPLE_VALUES[name] for name in names})
    with app.test_request_context(), force_locale("zh_CN"):
        chinese = str(message)

    matched = match_memo(chinese)

    assert matched is not None, chinese
    assert matched.msgid == msgid
    with app.test_request_context(), force_locale("en"):
        assert str(matched) == str(message)


def _statement_memos(client, account):
    html = client.get(f"/accounts/{account.id}").get_data(as_text=True)
    body = html.split('<table id="statement"', 1)[1].split("</table>", 1)[0]
    return [re.sub(r"<[^>]+>", "", row.rsplit("<td", 1)[1].split(">", 1)[1]).strip() for row in body.split("<tr>")[2:]]


@pytest.mark.parametrize("locale", ["en", "zh_CN"])
def test_old_memos_on_statement(add_account, login, locale):
    account = add_account("TJ", "80")
    memos = ["减免审批通过（流程 42）", "收据 TJ20251115-0001", "用热 12.345 GJ，计量热费 300.00 元（多退少补）", "首次导入调整（人工）"]
    for number, memo in enumerate(memos):
        db.session.add(LedgerEntry(
            company_id=account.company_id, account_id=account.id, season_id=None, kind="prior_arrears",
            amount=Decimal("10.00"), cause_type="ledger_import", idempotency_key=f"old-memo:{account.id}:{number}",
            memo=memo, memo_message=None, created_at=datetime(2025, 10, 1, tzinfo=timezone.utc),
        ))
    db.session.execute(sa.update(User).where(User.username == "tj_clerk").values(locale=locale))
    db.session.commit()

    shown = _statement_memos(login("tj_clerk"), account)

    if locale == "en":
        assert "Waiver approved (process 42)" in shown
        assert "Receipt TJ20251115-0001" in shown
        assert "Heat used 12.345 GJ, metered charge 300.00 yuan (Refund and surcharge)" in shown
    else:
        assert "减免审批通过（流程 42）" in shown
        assert "收据 TJ20251115-0001" in shown
        assert "用热 12.345 GJ，计量热费 300.00 元（多退少补）" in shown
    # Text that matches no memo msgid is shown as stored in both languages.
    assert "首次导入调整（人工）" in shown
    stored = db.session.scalars(sa.select(LedgerEntry.memo).filter_by(account_id=account.id)).all()
    assert sorted(stored) == sorted(memos)
