"""Checks an uploaded .xlsx passes before openpyxl opens it, shared by every spreadsheet import.

openpyxl streams sheet rows in read-only mode, but it loads the shared-strings part whole
and trusts the sizes the zip declares. So a workbook must be a zip, expand to at most
XLSX_MAX_EXPANDED_BYTES, compress no more than spreadsheets do, and keep its shared strings
under XLSX_MAX_SHARED_STRINGS_BYTES. It may carry no macros and declare no DTD, and every
large sheet must record its used range. Python's zipfile stops reading a member at the size
its header declares, so checking the declared sizes bounds what is actually decompressed.
"""

import io
import posixpath
import re
import zipfile
from xml.etree.ElementTree import ParseError, iterparse

import openpyxl
from flask import current_app, has_app_context
from openpyxl.formula.tokenizer import TokenizerError
from openpyxl.formula.translate import Translator
from openpyxl.utils.cell import column_index_from_string, coordinate_from_string
from openpyxl.utils.exceptions import InvalidFileException

from app.i18n import M_, N_, Message

# Defaults of the config keys of the same names; see config/__init__.py.
LIMIT_DEFAULTS = {
    "XLSX_MAX_EXPANDED_BYTES": 1024 * 1024 * 1024,
    "XLSX_MAX_SHARED_STRINGS_BYTES": 64 * 1024 * 1024,
    "XLSX_MAX_COMPRESSION_RATIO": 200,
}
# Members smaller than this are not checked for their ratio: a small, very regular part
# (an empty sheet, styles) compresses far better than sheet data does.
RATIO_CHECK_MIN_BYTES = 16 * 1024 * 1024
# Bytes read from the start of each XML part to look for a DTD and, in sheets, the dimension.
HEAD_SCAN_BYTES = 64 * 1024
# openpyxl parses a whole sheet that records no dimension (its used range) when it opens
# the workbook, keeping an element per row and cell, so such a sheet must be small.
UNSIZED_SHEET_MAX_BYTES = 16 * 1024 * 1024
SHARED_STRINGS_PART = "xl/sharedStrings.xml"
# An OLE2 compound file: a legacy .xls, or an .xlsx encrypted with a password.
OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
RESAVE = N_("请在 Excel 中另存为 .xlsx 后重新上传")


def upload_limit(name):
    """Return the configured upload limit `name`, or its default outside an app context."""
    if has_app_context():
        return current_app.config.get(name, LIMIT_DEFAULTS[name])
    return LIMIT_DEFAULTS[name]


def _mb(size):
    return f"{size / 1024 / 1024:.0f} MB"


def check_xlsx_archive(content, error_class):
    """Raise `error_class` with a message naming the problem and the fix if `content` is no safe .xlsx."""
    if content.startswith(OLE_SIGNATURE):
        raise error_class(M_("文件是旧版 .xls 工作簿或设置了打开密码的文件，无法读取；%(fix)s，且不要设置密码。", fix=Message(RESAVE)))
    if not zipfile.is_zipfile(io.BytesIO(content)):
        raise error_class(M_("文件不是 Excel .xlsx 工作簿（不是 zip 格式，或文件不完整）；%(fix)s。", fix=Message(RESAVE)))
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            members = archive.infolist()
            _check_sizes(members, error_class)
            _check_parts(archive, members, error_class)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as error:
        raise error_class(M_("无法读取该工作簿（%(error)s）；文件可能不完整，%(fix)s。", error=error, fix=Message(RESAVE))) from error


def _check_sizes(members, error_class):
    max_ratio = upload_limit("XLSX_MAX_COMPRESSION_RATIO")
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > RATIO_CHECK_MIN_BYTES and ratio > max_ratio:
            raise error_class(M_(
                "工作簿中的 %(part)s 压缩比异常（%(ratio)s 倍，正常表格不超过 %(max_ratio)s 倍），疑似压缩炸弹；%(fix)s。",
                part=member.filename, ratio=format(ratio, ".0f"), max_ratio=max_ratio, fix=Message(RESAVE),
            ))
        if member.filename == SHARED_STRINGS_PART and member.file_size > upload_limit("XLSX_MAX_SHARED_STRINGS_BYTES"):
            raise error_class(M_(
                "工作簿的共享文本部分为 %(size)s，超过上限 %(limit)s；请拆分成多个文件后分别导入。",
                size=_mb(member.file_size), limit=_mb(upload_limit("XLSX_MAX_SHARED_STRINGS_BYTES")),
            ))
    max_total = upload_limit("XLSX_MAX_EXPANDED_BYTES")
    total = sum(member.file_size for member in members)
    if total > max_total:
        raise error_class(M_("工作簿解压后为 %(size)s，超过上限 %(limit)s；请拆分成多个文件后分别导入。", size=_mb(total), limit=_mb(max_total)))


def _check_parts(archive, members, error_class):
    for member in members:
        name = member.filename.lower()
        if name.endswith("vbaproject.bin"):
            raise error_class(
                M_("工作簿含有宏（VBA），系统不接受带宏的文件；请在 Excel 中另存为“Excel 工作簿 (*.xlsx)”后重新上传。")
            )
        if name.endswith((".xml", ".rels")):
            with archive.open(member) as part:
                start = part.read(HEAD_SCAN_BYTES)
            if b"<!DOCTYPE" in start or b"<!ENTITY" in start:
                raise error_class(M_(
                    "工作簿中的 %(part)s 含有 DTD 或实体声明，Excel 不会生成这种内容，已拒绝；%(fix)s。",
                    part=member.filename, fix=Message(RESAVE),
                ))
            if name.startswith("xl/worksheets/") and member.file_size > UNSIZED_SHEET_MAX_BYTES and b"<dimension" not in start:
                raise error_class(M_(
                    "工作簿中的 %(part)s 没有记录数据范围（dimension），而内容有 %(size)s，读取它需要过多内存；"
                    "%(fix)s（Excel 保存时会记录数据范围）。",
                    part=member.filename, size=_mb(member.file_size), fix=Message(RESAVE),
                ))


def open_xlsx(content, error_class):
    """Check `content` and open it read-only with cached formula values, or raise `error_class`."""
    check_xlsx_archive(content, error_class)
    try:
        return openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except (InvalidFileException, KeyError, zipfile.BadZipFile, OSError, ValueError, TypeError, ParseError) as error:
        raise error_class(M_("无法读取该工作簿（%(error)s）；%(fix)s。", error=error, fix=Message(RESAVE))) from error


def iter_sheet_rows(sheet, max_rows, error_class, header_rows=0):
    """Yield the value tuples of `sheet`, raising `error_class` once it has more than `max_rows` data rows.

    `header_rows` rows above the data (titles, the header) are allowed on top. The sheet's
    recorded dimension rejects a large sheet before any row is read. A sheet that records
    too few rows is read to its end all the same and rejected when the first row beyond
    the limit arrives. Rows are parsed lazily, so an XML error deep inside the sheet raises
    here too. Rows are not padded, so callers must allow short rows.
    """
    limit = max_rows + header_rows
    too_many = M_("工作表「%(sheet)s」超过 %(max_rows)s 行数据；请拆分成多个文件后分别导入。", sheet=sheet.title, max_rows=max_rows)
    try:
        recorded = sheet.max_row
    except (ValueError, TypeError):
        recorded = None
    if recorded is not None and recorded > limit:
        raise error_class(too_many)
    # openpyxl stops at the recorded dimension, so a sheet that records too few rows would
    # silently lose the rest. Without it every row is read and counted.
    sheet.reset_dimensions()
    try:
        for count, row in enumerate(sheet.iter_rows(values_only=True), start=1):
            if count > limit:
                raise error_class(too_many)
            yield row
    except (ParseError, KeyError, ValueError, TypeError) as error:
        if isinstance(error, error_class):
            raise
        raise error_class(
            M_("工作表「%(sheet)s」的内容无法读取（%(error)s）；%(fix)s。", sheet=sheet.title, error=error, fix=Message(RESAVE))
        ) from error


def find_header_row(rows, headers, search_rows):
    """Return (row index, {key: column position}) of the first of `search_rows` rows naming a column for every key, or None.

    `headers` maps each key to the cell texts accepted as its column name; a cell matches
    after stripping blanks, also in lower case.
    """
    for index, row in enumerate(rows[:search_rows]):
        texts = ["" if value is None else str(value).strip() for value in row]
        columns = {}
        for key, names in headers.items():
            position = next((i for i, text in enumerate(texts) if text in names or text.lower() in names), None)
            if position is not None:
                columns[key] = position
        if len(columns) == len(headers):
            return index, columns
    return None


SHEET_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
RELATIONSHIP_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
PACKAGE_RELATIONSHIP_NS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
# A formula element with or without a namespace prefix, as in <f>, <f t="shared" …> or <x:f>.
FORMULA_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?f[\s>/]")
SCAN_CHUNK_BYTES = 1024 * 1024


def _sheet_part(archive, sheet_title):
    """Return the archive path of the sheet named `sheet_title`, or None."""
    workbook_part = "xl/workbook.xml"
    with archive.open("_rels/.rels") as rels:
        for _event, element in iterparse(rels):
            if element.tag == f"{PACKAGE_RELATIONSHIP_NS}Relationship" and element.get("Type", "").endswith("/officeDocument"):
                workbook_part = element.get("Target", workbook_part).lstrip("/")
    relationship_id = None
    with archive.open(workbook_part) as workbook:
        for _event, element in iterparse(workbook):
            if element.tag == f"{SHEET_NS}sheet" and element.get("name") == sheet_title:
                relationship_id = element.get(f"{RELATIONSHIP_NS}id")
    folder, name = posixpath.split(workbook_part)
    with archive.open(posixpath.join(folder, "_rels", f"{name}.rels")) as rels:
        for _event, element in iterparse(rels):
            if element.tag == f"{PACKAGE_RELATIONSHIP_NS}Relationship" and element.get("Id") == relationship_id:
                target = element.get("Target", "")
                return target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join(folder, target))
    return None


def _has_formulas(archive, part):
    """Return whether the sheet part contains a formula element, reading it in chunks."""
    tail = b""
    with archive.open(part) as source:
        while chunk := source.read(SCAN_CHUNK_BYTES):
            if FORMULA_TAG.search(tail + chunk):
                return True
            tail = chunk[-16:]
    return False


def uncomputed_formulas(content, sheet_title, error_class):
    """Return {(Excel row, 0-based column): formula text} of the formula cells saved without a value.

    Excel, WPS and LibreOffice store each formula's result beside it, and the importers read
    that result (open_xlsx opens with data_only=True). Tools that do not calculate, such as
    openpyxl, save a formula with an empty result, which reads as a blank cell. A formula
    whose result is the empty string is stored with t="str" and is not reported. The sheet is
    parsed only when it contains a formula. `content` must have passed check_xlsx_archive.
    Raises `error_class` when the sheet's XML cannot be read.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            part = _sheet_part(archive, sheet_title)
            if part is None or not _has_formulas(archive, part):
                return {}
            with archive.open(part) as source:
                return _scan_uncomputed(source)
    except (ParseError, KeyError, ValueError, zipfile.BadZipFile, OSError) as error:
        raise error_class(
            M_("工作表「%(sheet)s」的内容无法读取（%(error)s）；%(fix)s。", sheet=sheet_title, error=error, fix=Message(RESAVE))
        ) from error


def _scan_uncomputed(source):
    found = {}
    shared = {}  # shared-formula index -> Translator of its first cell
    row_number, column = 0, 0
    for event, element in iterparse(source, events=("start", "end")):
        tag = element.tag.rpartition("}")[2]
        if event == "start":
            if tag == "row":
                row_number = int(element.get("r") or row_number + 1)
                column = 0
            continue
        if tag == "row":
            element.clear()
            continue
        if tag != "c":
            continue
        reference = element.get("r")
        if reference:
            letters, row_number = coordinate_from_string(reference)
            column = column_index_from_string(letters)
        else:
            column += 1
            reference = f"{openpyxl.utils.get_column_letter(column)}{row_number}"
        formula = element.find(f"{SHEET_NS}f")
        if formula is None:
            continue
        text = f"={formula.text}" if formula.text else ""
        if formula.get("t") == "shared":
            if text:
                shared[formula.get("si")] = Translator(text, origin=reference)
            elif formula.get("si") in shared:
                try:
                    text = shared[formula.get("si")].translate_formula(reference)
                except (TokenizerError, ValueError):
                    text = ""
        value = element.find(f"{SHEET_NS}v")
        if (value is None or not value.text) and element.get("t") != "str":
            found[(row_number, column - 1)] = text or "="
    return found
