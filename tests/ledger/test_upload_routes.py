"""Ledger upload pages on bad input: each case ends on a page with a Chinese message, never a 500."""

import io
import re
import zipfile
from decimal import Decimal

import openpyxl
import pytest
import sqlalchemy as sa

from app.extensions import db
from app.ledger.models import LedgerImport
from app.network.models import Account

FILE_REJECTED = "台账文件未通过检查，未保存任何数据。"


def _zip_without_workbook():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "这是一个普通的 zip 压缩包，不是 Excel 工作簿。")
    return buffer.getvalue()


def _workbook_without_header():
    workbook = openpyxl.Workbook()
    workbook.active.append(["姓名", "金额"])
    workbook.active.append(["张三", 100])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


# Files named .xlsx that are no workbook: the upload is accepted, the import rejects it.
NOT_A_WORKBOOK = {
    "empty": b"",
    "text": "小区名称,楼号,单元,房号\n柳林里,15,4,604\n".encode("utf-8"),
    "zip": _zip_without_workbook(),
}
# Every file the import rejects as a whole, before looking at single rows.
UNREADABLE_LEDGERS = {**NOT_A_WORKBOOK, "no-header": _workbook_without_header()}


def _upload(client, content, filename):
    data = {"file": (io.BytesIO(content), filename)}
    return client.post("/ledger/", data=data, content_type="multipart/form-data", follow_redirects=True)


def _account_count(company):
    return db.session.scalar(sa.select(sa.func.count(Account.id)).where(Account.company_id == company.id))


@pytest.mark.parametrize("case", sorted(UNREADABLE_LEDGERS))
def test_upload_unreadable_ledger(case, demo, login):
    client = login("tj_clerk")

    response = _upload(client, UNREADABLE_LEDGERS[case], f"{case}.xlsx")
    body = response.get_data(as_text=True)

    assert response.status_code == 200
    assert 'id="status-label">已拒绝<' in body
    assert FILE_REJECTED in body
    assert 'id="error-table"' in body
    assert 'id="error-report"' not in body, "a file rejected as a whole has no marked cells to download"
    assert _account_count(demo["TJ"]) == 0


@pytest.mark.parametrize("case", sorted(NOT_A_WORKBOOK))
def test_report_of_unreadable_file(case, demo, login):
    client = login("tj_clerk")
    _upload(client, NOT_A_WORKBOOK[case], f"{case}.xlsx")
    job = db.session.scalar(sa.select(LedgerImport).order_by(LedgerImport.id.desc()))

    response = client.get(f"/ledger/{job.id}/report.xlsx")

    assert response.status_code != 500
    assert response.status_code == 404
    assert "错误报告" in response.get_data(as_text=True)


def test_upload_without_file(demo, login):
    client = login("tj_clerk")

    response = client.post("/ledger/", data={}, content_type="multipart/form-data")

    assert response.status_code == 200
    assert '<p class="field-error">请选择台账文件。</p>' in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count(LedgerImport.id))) == 0


@pytest.mark.parametrize("filename", ["ledger.xls", "ledger.csv", "ledger.txt", "ledger"])
def test_upload_wrong_extension(filename, demo, login):
    client = login("tj_clerk")

    response = _upload(client, b"anything", filename)

    assert response.status_code == 200
    assert '<p class="field-error">只接受 Excel .xlsx 文件。</p>' in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count(LedgerImport.id))) == 0


def test_upload_page_lists_rejected_import(demo, login):
    client = login("tj_clerk")
    _upload(client, NOT_A_WORKBOOK["text"], "text.xlsx")

    body = client.get("/ledger/").get_data(as_text=True)

    assert re.search(r"<td>text\.xlsx</td>\s*<td>已拒绝</td>\s*<td>文件未通过检查，未保存</td>", body)


def test_upload_with_broker_down_keeps_job(demo, login, app_ctx, monkeypatch):
    from app.extensions import celery
    from app.tasks.ledger import queue_waiting_imports_task
    from tests.core.test_celery_broker import _switch_broker
    from tests.conftest import LEDGERS

    previous = dict(celery.conf)
    # No AMQP server listens on 127.0.0.1:9 (the discard port), so every publish fails quickly.
    _switch_broker(broker_url="amqp://guest:guest@127.0.0.1:9//", task_always_eager=False, broker_connection_timeout=1)
    try:
        response = _upload(login("tj_clerk"), (LEDGERS / "TJ-shared.xlsx").read_bytes(), "TJ-shared.xlsx")
    finally:
        _switch_broker(broker_url=previous["broker_url"], task_always_eager=previous["task_always_eager"],
                       broker_connection_timeout=previous["broker_connection_timeout"])

    assert response.status_code == 200
    assert "任务队列暂时不可用；恢复后将自动开始导入" in response.get_data(as_text=True)
    job = db.session.scalar(sa.select(LedgerImport))
    assert job.status == "queued"
    assert _account_count(demo["TJ"]) == 0

    # The sweep sends it again; with the eager test broker the import runs right away.
    monkeypatch.setitem(app_ctx.config, "LEDGER_IMPORT_SWEEP_S", -1)
    assert queue_waiting_imports_task() == 1
    db.session.refresh(job)
    assert job.status == "succeeded"
    assert _account_count(demo["TJ"]) == 1743


@pytest.mark.parametrize(("case", "chinese", "english"), [
    ("text", "文件不是 Excel .xlsx 工作簿", "The file is not an Excel .xlsx workbook"),
    ("no-header", "前 15 行中没有找到表头；表头应包含小区名称、建筑面积、用户类型、供热状态等列",
     "No header row was found in the first 15 rows of worksheet &#34;Sheet&#34;; the header should contain columns such as 小区名称, 建筑面积, 用户类型, 供热状态"),
])
def test_file_error_shown_in_reader_language(case, chinese, english, demo, login):
    client = login("tj_clerk")
    _upload(client, UNREADABLE_LEDGERS[case], f"{case}.xlsx")
    job = db.session.scalar(sa.select(LedgerImport).order_by(LedgerImport.id.desc()))

    chinese_page = client.get(f"/ledger/{job.id}").get_data(as_text=True)
    client.post("/language", data={"locale": "en"})
    english_page = client.get(f"/ledger/{job.id}").get_data(as_text=True)

    # Stored once, in Chinese with its msgid; each reader sees their own language.
    assert chinese in job.errors[0]["reason"]
    assert job.errors[0]["reason_message"]["msgid"]
    assert chinese in chinese_page
    assert english in english_page
    assert chinese not in english_page


def test_failed_import_summary_english(demo, login, monkeypatch):
    def broken_import(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("app.tasks.ledger.import_ledger", broken_import)
    client = login("tj_clerk")
    client.post("/language", data={"locale": "en"})

    body = _upload(client, NOT_A_WORKBOOK["text"], "text.xlsx").get_data(as_text=True)
    listing = client.get("/ledger/").get_data(as_text=True)

    job = db.session.scalar(sa.select(LedgerImport).order_by(LedgerImport.id.desc()))
    assert job.status == "failed"
    assert job.summary == "导入失败：服务器内部错误，数据未保存。请联系管理员。"
    assert "Import failed: internal server error, nothing was stored." in body
    assert "Import failed: internal server error, nothing was stored." in listing


def test_taken_address_error_in_both_languages(import_fixture, demo, login):
    from tests.ledger.test_import import _tj_workbook

    import_fixture("TJ", "TJ-shared.xlsx")
    cheng = db.session.scalar(sa.select(Account).filter_by(legacy_no="TJ-0001520"))
    newcomer = ["TJ-9900003", "新用户丙", "13900000003", "海河花园", "6号楼", 2, "303", "210", "非居民", "正常",
                "津南一站", "津南热电厂", None, None]
    client = login("tj_clerk")

    chinese_page = _upload(client, _tj_workbook(newcomer), "newcomer.xlsx").get_data(as_text=True)
    job = db.session.scalar(sa.select(LedgerImport).order_by(LedgerImport.id.desc()))
    client.post("/language", data={"locale": "en"})
    english_page = client.get(f"/ledger/{job.id}").get_data(as_text=True)

    assert job.status == "rejected"
    assert (
        f"该地址已是用户 {cheng.account_no}（原编号 TJ-0001520，户主 程春诺），与本行原编号 TJ-9900003 不符；"
        "若是同一户，请把原编号改为 TJ-0001520；若是另一户，请核对小区、楼号、单元和房号"
    ) in chinese_page
    assert (
        f"This address already belongs to account {cheng.account_no} (legacy number TJ-0001520, owner 程春诺), "
        "not to legacy number TJ-9900003 of this row. If it is the same household, change the legacy number to "
        "TJ-0001520; if it is another household, check the community, building, unit and room."
    ) in english_page
    assert db.session.scalar(sa.select(sa.func.count(Account.id)).filter_by(legacy_no="TJ-9900003")) == 0
    db.session.expire_all()
    assert db.session.get(Account, cheng.id).customer_name == "程春诺"


def test_billed_change_error_in_english(import_fixture, demo, login):
    from app.billing.services import run_billing
    from tests.ledger.test_import import CHENG_ROW, _tj_workbook

    import_fixture("TJ", "TJ-shared.xlsx")
    run_billing("TJ", "2025-2026")
    cheng = db.session.scalar(sa.select(Account).filter_by(legacy_no="TJ-0001520"))
    changed = list(CHENG_ROW)
    changed[7] = "210"
    client = login("tj_clerk")
    client.post("/language", data={"locale": "en"})

    english_page = _upload(client, _tj_workbook(changed), "changed.xlsx").get_data(as_text=True)

    assert (
        f"Account {cheng.account_no} already has charges posted for season 2025-2026, so an import cannot change "
        "建筑面积 from 99.99 to 210. Keep 99.99 in the ledger and submit an area adjustment request on the account "
        "page, or a retroactive change at /billing/rerates."
    ) in english_page
    db.session.expire_all()
    assert db.session.get(Account, cheng.id).building_area == Decimal("99.99")
