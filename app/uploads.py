"""Checks an uploaded .xlsx passes before openpyxl opens it, shared by every spreadsheet import.

app/spreadsheet.py reads the sheets of the workbook that open_xlsx returns.

openpyxl streams sheet rows in read-only mode, but it loads the shared-strings part whole
and trusts the sizes the zip declares. So a workbook must be a zip, expand to at most
XLSX_MAX_EXPANDED_BYTES, compress no more than spreadsheets do, and keep its shared strings
under XLSX_MAX_SHARED_STRINGS_BYTES. It may carry no macros and declare no DTD, and every
large sheet must record its used range. Python's zipfile stops reading a member at the size
its header declares, so checking the declared sizes bounds what is actually decompressed.
"""

import io
import zipfile
from xml.etree.ElementTree import ParseError

import openpyxl
from flask import current_app, has_app_context
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
