"""Builders of malformed upload files: broken zips, zip bombs, huge sheets, macros, extra
shared strings and XML with entity expansion.

Large members are written as raw deflate streams built from one compressed block repeated,
so a sheet that expands to gigabytes takes seconds to build and megabytes to hold.
"""

import io
import struct
import zipfile
import zlib
from xml.sax.saxutils import escape

import openpyxl

LEDGER_HEADER = ["小区名称", "楼号", "单元", "房号", "建筑面积", "用户类型", "供热状态"]
METER_HEADER = ["用户编号", "起始读数", "结束读数"]
SHEET_PATH = "xl/worksheets/sheet1.xml"
SHEET_START = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
)
SHEET_END = "</sheetData></worksheet>"
# Distinct data rows per repeated block of a large sheet.
BLOCK_ROWS = 10_000
# Signature of an OLE2 compound file, the container of a legacy .xls and of a password-protected .xlsx.
OLE_HEADER = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def workbook_bytes(rows):
    """An .xlsx of one sheet with `rows`, as openpyxl writes it."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def ledger_rows(count, start_room=1):
    return [LEDGER_HEADER] + [["测试小区", 1, 1, start_room + i, 80, "居民", "正常"] for i in range(count)]


def zip_members(content):
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return {info.filename: archive.read(info.filename) for info in archive.infolist()}


def _cell_xml(value):
    if isinstance(value, (int, float)):
        return f"<c><v>{value}</v></c>"
    return f'<c t="inlineStr"><is><t>{escape(str(value))}</t></is></c>'


def row_xml(values):
    return "<row>" + "".join(_cell_xml(value) for value in values) + "</row>"


class RepeatedMember:
    """A zip member of `head` + `block` × `count` + `tail`, compressed without ever holding it whole."""

    def __init__(self, head, block, count, tail):
        self.parts = (head, block, count, tail)

    def deflate(self):
        head, block, count, tail = self.parts
        # After a full flush the compressor starts afresh, so the block compresses to the same bytes each time.
        pieces = []
        for data, mode in ((head, zlib.Z_FULL_FLUSH), (block, zlib.Z_FULL_FLUSH), (tail, zlib.Z_FINISH)):
            compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
            pieces.append(compressor.compress(data) + compressor.flush(mode))
        crc = zlib.crc32(head)
        for _ in range(count):
            crc = zlib.crc32(block, crc)
        crc = zlib.crc32(tail, crc)
        size = len(head) + len(block) * count + len(tail)
        return pieces[0] + pieces[1] * count + pieces[2], crc, size


class StreamedMember:
    """A zip member written from an iterable of byte chunks, compressed as they come."""

    def __init__(self, chunks):
        self.chunks = chunks

    def deflate(self):
        compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
        pieces, crc, size = [], 0, 0
        for chunk in self.chunks:
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
            pieces.append(compressor.compress(chunk))
        pieces.append(compressor.flush())
        return b"".join(pieces), crc, size


def zip_bytes(members):
    """Write a zip of {name: bytes | RepeatedMember | StreamedMember}, all deflated, by hand.

    zipfile cannot write an already compressed stream, which RepeatedMember needs.
    """
    out = io.BytesIO()
    central = []
    for name, data in members.items():
        if isinstance(data, (RepeatedMember, StreamedMember)):
            compressed, crc, size = data.deflate()
        else:
            compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
            compressed = compressor.compress(data) + compressor.flush()
            crc, size = zlib.crc32(data), len(data)
        encoded = name.encode("utf-8")
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0x800, 8, 0, 0x21, crc, len(compressed), size, len(encoded), 0))
        out.write(encoded)
        out.write(compressed)
        central.append(
            struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0x800, 8, 0, 0x21, crc, len(compressed), size,
                        len(encoded), 0, 0, 0, 0, 0, offset) + encoded
        )
    start = out.tell()
    for entry in central:
        out.write(entry)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), out.tell() - start, start, 0))
    return out.getvalue()


def with_sheet(template, sheet):
    """`template` (.xlsx bytes) with its first sheet replaced by `sheet` (bytes or a member class above)."""
    members = zip_members(template)
    members[SHEET_PATH] = sheet
    return zip_bytes(members)


def zip_bomb(template, header, expanded_bytes):
    """`template` whose sheet expands to about `expanded_bytes` of one cell repeated."""
    block = ("<row>" + "<c><v>1</v></c>" * 64 + "</row>").encode("utf-8") * 1024
    return with_sheet(template, RepeatedMember((SHEET_START + row_xml(header)).encode("utf-8"), block,
                                               expanded_bytes // len(block), SHEET_END.encode("utf-8")))


def many_rows_sheet(header, row_format, row_values, row_count, dimension=True):
    """A sheet member with a header and `row_count` data rows.

    `dimension` True records the used range as Excel does, False records none, and a
    number records that many rows, which is wrong unless it equals row_count + 1.

    `row_format` is a %-format of one row's XML and `row_values(index)` gives its arguments.
    The data is one block of BLOCK_ROWS distinct rows repeated, compressed once
    (RepeatedMember), so a million rows take well under a second to build. So that the
    block can repeat, data rows and cells carry no r attribute (optional in SpreadsheetML,
    readers number them in order).
    """
    last_column = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[len(header) - 1]
    header_cells = "".join(
        f'<c r="{column}1" t="inlineStr"><is><t>{escape(text)}</t></is></c>'
        for column, text in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", header)
    )
    start = SHEET_START.replace("<sheetData>", "")
    if dimension is not False:
        recorded = row_count + 1 if dimension is True else dimension
        start += f'<dimension ref="A1:{last_column}{recorded}"/>'
    head = (start + f'<sheetData><row r="1">{header_cells}</row>').encode("utf-8")
    blocks, rest = divmod(row_count, BLOCK_ROWS)

    def rows(count):
        return "".join([row_format % row_values(index) for index in range(count)]).encode("utf-8")

    return RepeatedMember(head, rows(BLOCK_ROWS), blocks, rows(rest) + SHEET_END.encode("utf-8"))


LEDGER_ROW = (
    '<row><c t="inlineStr"><is><t>测试小区</t></is></c><c><v>%(building)d</v></c><c><v>1</v></c>'
    '<c><v>%(room)d</v></c><c><v>%(area)d</v></c><c t="inlineStr"><is><t>居民</t></is></c>'
    '<c t="inlineStr"><is><t>正常</t></is></c></row>'
)
METER_ROW = '<row><c t="inlineStr"><is><t>12%(index)013d</t></is></c><c><v>%(start)d</v></c><c><v>%(end)d</v></c></row>'


def million_ledger_rows(template, row_count=1_000_000, dimension=True):
    """`template` with a ledger sheet of `row_count` rows, distinct within each block."""

    def values(index):
        building, room = divmod(index, 9999)
        return {"building": building + 1, "room": room + 1, "area": 80 + index % 50}

    return with_sheet(template, many_rows_sheet(LEDGER_HEADER, LEDGER_ROW, values, row_count, dimension))


def million_meter_rows(template, row_count=1_000_000, dimension=True):
    """`template` with a readings sheet of `row_count` rows, distinct within each block."""

    def values(index):
        return {"index": index, "start": index % 1000, "end": index % 1000 + 5}

    return with_sheet(template, many_rows_sheet(METER_HEADER, METER_ROW, values, row_count, dimension))


def with_macros(template):
    """`template` saved as a macro-enabled workbook: a vbaProject.bin part and the .xlsm content type."""
    members = zip_members(template)
    members["xl/vbaProject.bin"] = OLE_HEADER + b"\x00" * 504
    members["[Content_Types].xml"] = members["[Content_Types].xml"].replace(
        b"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
        b"application/vnd.ms-excel.sheet.macroEnabled.main+xml",
    )
    return zip_bytes(members)


def with_shared_strings(template, count):
    """`template` with a shared-strings part of `count` distinct strings (the part is not referenced by any cell)."""
    members = zip_members(template)
    items = "".join(f"<si><t>文本{index}</t></si>" for index in range(count))
    members["xl/sharedStrings.xml"] = (
        '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        f'count="{count}" uniqueCount="{count}">{items}</sst>'
    ).encode("utf-8")
    return zip_bytes(members)


def truncated(content):
    return content[: len(content) // 2]


def billion_laughs_xml(document):
    """`document` with LAUGHS replaced by entity `lol9`, declared to expand to 10**9 copies of "lol"."""
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, 10)
    ]
    return f'<?xml version="1.0"?>\n<!DOCTYPE lolz [{"".join(entities)}]>\n' + document.replace("LAUGHS", "&lol9;")


def sheet_with_entities(template, header):
    """`template` whose sheet XML declares the billion-laughs entities and uses them in a cell."""
    body = billion_laughs_xml(
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        + row_xml(header) + '<row><c t="inlineStr"><is><t>LAUGHS</t></is></c></row></sheetData></worksheet>'
    )
    return with_sheet(template, body.encode("utf-8"))
