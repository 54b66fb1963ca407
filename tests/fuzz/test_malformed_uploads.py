"""Malformed files through the real upload pages and commands: each is rejected with a Chinese
message naming the problem and the fix, never a 500, and the importers stay within a memory bound.

The memory test runs the ledger and meter-reading importers in a fresh process
(tests/fuzz/measure_upload.py) and reads its peak resident set size (VmHWM, or getrusage off Linux).
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.ledger.models import LedgerImport
from tests.fuzz import malformed

ROOT = Path(__file__).resolve().parents[2]
# Peak resident memory of a process that imports every file below, interpreter and app
# modules included.
MEMORY_BOUND_MB = 256
# Data rows read before a sheet whose recorded dimension is wrong is rejected. CI lowers
# the limit so that this streaming check takes seconds; HEATFLOW_FUZZ_LONG=1 reads up to
# the configured defaults (200,000 ledger rows, 100,000 meter rows).
LONG_RUN = os.environ.get("HEATFLOW_FUZZ_LONG") == "1"
STREAMED_MAX_ROWS = None if LONG_RUN else 20_000
ZIP_BOMB_BYTES = 3 * 1024 * 1024 * 1024
METER_ROW = ["120001000100101", 1, 2]
LEDGER_ROW = ["测试小区", 1, 1, 5, 80, "居民", "正常"]

# case -> a fragment of the message that rejects it (build_case builds the file)
SPREADSHEET_CASES = {
    "not_a_zip": "不是 zip 格式",
    "truncated_zip": "不是 zip 格式",
    "legacy_xls_or_encrypted": "旧版 .xls",
    "zip_bomb": "疑似压缩炸弹",
    "million_rows": "行数据；请拆分成多个文件",
    "million_rows_without_dimension": "没有记录数据范围",
    "million_rows_wrong_dimension": "行数据；请拆分成多个文件",
    "macros_xlsm": "含有宏",
    "billion_laughs": "DTD 或实体声明",
}
# The same fragments as CLI commands print them (in English).
SPREADSHEET_CASES_ENGLISH = {
    "not_a_zip": "it is not a zip archive",
    "truncated_zip": "it is not a zip archive",
    "legacy_xls_or_encrypted": "legacy .xls workbook",
    "zip_bomb": "looks like a zip bomb",
    "million_rows": "data rows. Split it into several files",
    "million_rows_without_dimension": "records no data range",
    "million_rows_wrong_dimension": "data rows. Split it into several files",
    "macros_xlsm": "contains macros",
    "billion_laughs": "DTD or entity declaration",
}


def _template(kind):
    if kind == "ledger":
        return malformed.workbook_bytes(malformed.ledger_rows(1)), malformed.LEDGER_HEADER
    return malformed.workbook_bytes([malformed.METER_HEADER, METER_ROW]), malformed.METER_HEADER


def build_case(kind, case):
    template, header = _template(kind)
    many_rows = malformed.million_ledger_rows if kind == "ledger" else malformed.million_meter_rows
    builders = {
        "not_a_zip": lambda: "用户编号,读数\n1,2\n".encode("utf-8"),
        "truncated_zip": lambda: malformed.truncated(template),
        "legacy_xls_or_encrypted": lambda: malformed.OLE_HEADER + b"\x00" * 4096,
        "zip_bomb": lambda: malformed.zip_bomb(template, header, ZIP_BOMB_BYTES),
        "million_rows": lambda: many_rows(template),
        "million_rows_without_dimension": lambda: many_rows(template, dimension=False),
        "million_rows_wrong_dimension": lambda: many_rows(template, dimension=2),
        "macros_xlsm": lambda: malformed.with_macros(template),
        "billion_laughs": lambda: malformed.sheet_with_entities(template, header),
    }
    return builders[case]()


@pytest.fixture(scope="module")
def upload_files(tmp_path_factory):
    """{(kind, case): path} of every malformed spreadsheet, built once per module."""
    folder = tmp_path_factory.mktemp("malformed")
    paths = {}
    for kind in ("ledger", "meter"):
        for case in SPREADSHEET_CASES:
            path = folder / f"{kind}-{case}.xlsx"
            path.write_bytes(build_case(kind, case))
            paths[kind, case] = path
    return paths


def _measure(kind, paths, max_rows):
    output = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.measure_upload", kind, str(max_rows), *map(str, paths)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert output.returncode == 0, output.stderr[-3000:]
    return [json.loads(line) for line in output.stdout.strip().splitlines()]


@pytest.mark.parametrize("kind", ["ledger", "meter"])
def test_importers_reject_within_memory_bound(upload_files, kind):
    from config import DefaultConfig

    default_rows = DefaultConfig.LEDGER_MAX_ROWS if kind == "ledger" else DefaultConfig.METER_READINGS_MAX_ROWS
    streamed = "million_rows_wrong_dimension"
    others = [case for case in SPREADSHEET_CASES if case != streamed]
    outcomes = dict(zip(others, _measure(kind, [upload_files[kind, case] for case in others], default_rows)))
    outcomes[streamed] = _measure(kind, [upload_files[kind, streamed]], STREAMED_MAX_ROWS or default_rows)[0]

    for case, expected in SPREADSHEET_CASES.items():
        outcome = outcomes[case]
        assert outcome["error"] is not None, f"{kind} {case} was accepted: {outcome}"
        assert expected in outcome["error"], f"{kind} {case}: {outcome['error']}"
        assert outcome["peak_mb"] < MEMORY_BOUND_MB, f"{kind} {case} peaked at {outcome['peak_mb']:.0f} MB"
        assert outcome["seconds"] < 120, f"{kind} {case} took {outcome['seconds']:.0f} s"


def _formula_workbook(kind, cached):
    """A valid one-row workbook whose area or end reading is a formula, with or without its cached value."""
    template, header = _template(kind)
    value = "<v>80</v>" if cached else ""
    if kind == "ledger":
        cells = [malformed.row_xml(["测试小区", 1, 1, 5]), f"<c><f>40*2</f>{value}</c>", malformed.row_xml(["居民", "正常"])]
    else:
        cells = [malformed.row_xml(["120001000100101", 1]), f"<c><f>1+1</f>{value}</c>"]
    row = "<row>" + "".join(cell.removeprefix("<row>").removesuffix("</row>") for cell in cells) + "</row>"
    sheet = malformed.SHEET_START + malformed.row_xml(header) + row + malformed.SHEET_END
    return malformed.with_sheet(template, sheet.encode("utf-8"))


def test_ledger_formulas_read_as_cached_values():
    from app.ledger.parser import parse_ledger

    cached = parse_ledger(_formula_workbook("ledger", cached=True))
    uncached = parse_ledger(_formula_workbook("ledger", cached=False))

    assert [row.building_area for row in cached.rows] == [80]
    assert cached.errors == []
    assert uncached.rows == []
    assert [error.message() for error in uncached.errors] == [
        "第 2 行，列「建筑面积」，值「=40*2」：公式 =40*2 没有保存计算结果，读出来是空的；"
        "请用 Excel 或 WPS 打开文件并保存一次（保存时会计算公式），或把公式换成数值，再重新上传"
    ]


# -- the upload pages and commands


def _ledger_job():
    db.session.expire_all()
    return db.session.scalar(sa.select(LedgerImport).order_by(LedgerImport.id.desc()))


# Each page and command test loops over its cases, so the demo data is installed once per test.
PAGE_CASES = [case for case in SPREADSHEET_CASES if case != "million_rows_wrong_dimension"]


def test_ledger_upload_page_rejects(demo, login, upload_files):
    clerk = login("tj_clerk")
    for case in PAGE_CASES:
        content = upload_files["ledger", case].read_bytes()

        response = clerk.post("/ledger/", data={"file": (io.BytesIO(content), "台账.xlsx")}, content_type="multipart/form-data")

        assert response.status_code == 302, f"{case}: {response.get_data(as_text=True)[:500]}"
        job = _ledger_job()
        assert job.status == "rejected", case
        assert SPREADSHEET_CASES[case] in job.errors[0]["reason"], case
        page = clerk.get(response.headers["Location"])
        assert page.status_code == 200, case
        assert SPREADSHEET_CASES[case] in page.get_data(as_text=True), case


def test_ledger_upload_over_size_limit(demo, login):
    clerk = login("tj_clerk")
    limit = clerk.application.config["MAX_CONTENT_LENGTH"]

    response = clerk.post("/ledger/", data={"file": (io.BytesIO(b"0" * (limit + 1)), "台账.xlsx")},
                          content_type="multipart/form-data")

    assert response.status_code == 413
    assert f"超过 {limit // 1024 // 1024} MB 上限" in response.get_data(as_text=True)


def test_shared_strings_limit_from_config(demo, login, app_ctx, monkeypatch):
    monkeypatch.setitem(app_ctx.config, "XLSX_MAX_SHARED_STRINGS_BYTES", 1000)
    clerk = login("tj_clerk")
    small = malformed.with_shared_strings(malformed.workbook_bytes(malformed.ledger_rows(3)), 10)
    large = malformed.with_shared_strings(malformed.workbook_bytes(malformed.ledger_rows(3)), 100)

    clerk.post("/ledger/", data={"file": (io.BytesIO(small), "台账.xlsx")}, content_type="multipart/form-data")
    accepted = _ledger_job()
    clerk.post("/ledger/", data={"file": (io.BytesIO(large), "台账.xlsx")}, content_type="multipart/form-data")
    rejected = _ledger_job()

    assert accepted.status == "succeeded"
    assert rejected.status == "rejected"
    assert "共享文本部分" in rejected.errors[0]["reason"]


def test_meter_reading_page_rejects(demo, login, upload_files):
    clerk = login("tj_clerk")
    for case in PAGE_CASES:
        content = upload_files["meter", case].read_bytes()

        response = clerk.post("/billing/meter-readings", data={"season": "2025-2026", "file": (io.BytesIO(content), "读数.xlsx")},
                              content_type="multipart/form-data")

        assert response.status_code == 200, case
        assert SPREADSHEET_CASES[case] in response.get_data(as_text=True), case


def test_ledger_cli_rejects(demo, app_ctx, upload_files):
    for case in PAGE_CASES:
        path = str(upload_files["ledger", case])

        result = app_ctx.test_cli_runner().invoke(args=["heat", "import-ledger", "--company", "TJ", path])

        assert result.exit_code == 1, case
        assert SPREADSHEET_CASES_ENGLISH[case] in result.output, case


def test_onboarding_check_rejects(demo, app_ctx, upload_files, tmp_path):
    from tests.onboarding.legacy import spec_toml

    spec = tmp_path / "zz.toml"
    spec.write_text(spec_toml(), encoding="utf-8")
    for case in PAGE_CASES:
        ledger = str(upload_files["ledger", case])

        result = app_ctx.test_cli_runner().invoke(args=["heat", "onboard", str(spec), "--ledger", ledger, "--check"])

        assert result.exit_code == 1, case
        assert SPREADSHEET_CASES_ENGLISH[case] in result.output, case


def test_onboarding_upload_page_rejects(demo, login, upload_files):
    from tests.onboarding.test_wizard import _post_company

    admin = login("hq_admin")
    _post_company(admin)
    for case in PAGE_CASES:
        content = upload_files["ledger", case].read_bytes()

        response = admin.post("/admin/onboarding/ZZ/ledgers", data={"file": (io.BytesIO(content), "zz.xlsx")},
                              content_type="multipart/form-data")

        assert response.status_code == 302, case
        job = _ledger_job()
        assert job.status == "rejected", case
        assert SPREADSHEET_CASES[case] in admin.get("/admin/onboarding/ZZ").get_data(as_text=True), case
        assert SPREADSHEET_CASES[case] in admin.get(f"/ledger/{job.id}").get_data(as_text=True), case


# -- statements (CSV) and process models (XML)


STATEMENT_ENCODINGS = {
    "utf-8-sig": "对账完成",
    "utf-8": "对账完成",
    "gbk": "对账单是 GBK 编码",
    "utf-16": "对账单是 UTF-16 编码",
    "utf-16-le": "对账单是 UTF-16 编码",
}


def test_statement_upload_encodings(demo, login, make_account):
    from app.payments.models import WechatMerchant
    from tests.payments.test_reconciliation import BILL

    make_account("TJ", "87.35")
    db.session.add(WechatMerchant(company_id=demo["TJ"].id, sub_mchid="1900000111"))
    db.session.commit()
    finance = login("tj_finance")
    for encoding, expected in STATEMENT_ENCODINGS.items():
        response = finance.post("/reconciliation/statements", data={
            "merchant_id": "1900000111", "day": "2025-12-03", "statement": (io.BytesIO(BILL.encode(encoding)), "bill.csv"),
        })

        assert response.status_code == 302, encoding
        assert expected in finance.get(response.headers["Location"]).get_data(as_text=True), encoding


def test_decision_table_rejects_billion_laughs(demo, login):
    admin = login("tj_admin")
    xml = malformed.billion_laughs_xml('<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/">LAUGHS</definitions>')

    response = admin.post("/processes/decisions/suspension_escalation", data={"xml": xml})

    assert response.status_code == 400
    assert "不能包含 DOCTYPE 或实体声明" in response.get_json()["errors"][0]["message"]


def test_designer_rejects_billion_laughs(demo, login):
    admin = login("tj_admin")
    xml = malformed.billion_laughs_xml('<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL">LAUGHS</definitions>')

    response = admin.post("/processes/design/suspension/validate", data={"xml": xml})

    assert response.status_code == 400
    assert "文件含有 DOCTYPE 或实体声明" in response.get_json()["errors"][0]["message"]


def test_bpmn_check_cli_rejects_billion_laughs(app_ctx, tmp_path):
    path = tmp_path / "laughs.bpmn"
    path.write_text(malformed.billion_laughs_xml('<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL">LAUGHS</definitions>'))

    result = app_ctx.test_cli_runner().invoke(args=["heat", "bpmn-check", str(path)])

    assert result.exit_code == 1
    assert "The file contains a DOCTYPE or entity declaration" in result.output
