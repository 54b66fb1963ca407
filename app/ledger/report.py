"""The error report as an .xlsx: the sender's own workbook with bad cells marked red."""

import io

import openpyxl
from flask_babel import gettext as _
from openpyxl.comments import Comment
from openpyxl.styles import Font, PatternFill

from app.ledger.parser import find_header, normalise_header, translated_reason

BAD_FILL = PatternFill(start_color="FFFFC7CE", end_color="FFFFC7CE", fill_type="solid")


def _ledger_sheet(workbook):
    """Return the sheet the importer read the accounts from: the first with an account header."""
    for sheet in workbook.worksheets:
        _index, mapping, _texts = find_header(list(sheet.iter_rows(max_row=15, values_only=True)))
        if mapping and "community" in mapping and "building_area" in mapping:
            return sheet
    return workbook.worksheets[0]


def marked_workbook(content, errors):
    """Return xlsx bytes of the uploaded file with each error's cell filled and commented.

    `errors` are dicts with excel_row, column (header text), value and reason. A sheet
    named 错误报告 (translated) lists them all, first sheet first.
    """
    workbook = openpyxl.load_workbook(io.BytesIO(content))
    sheet = _ledger_sheet(workbook)
    columns = {}
    for row in sheet.iter_rows(min_row=1, max_row=15):
        for cell in row:
            if cell.value is not None:
                columns.setdefault(normalise_header(cell.value), cell.column)
    for error in errors:
        if not error.get("excel_row"):
            continue
        column = columns.get(normalise_header(error["column"]))
        if column is None:
            continue
        cell = sheet.cell(row=error["excel_row"], column=column)
        cell.fill = BAD_FILL
        note = translated_reason(error)
        cell.comment = Comment(note if cell.comment is None else f"{cell.comment.text}\n{note}", "Heatflow")

    report = workbook.create_sheet(_("错误报告"), 0)
    report.append([_("Excel 行号"), _("列"), _("值"), _("原因")])
    for cell in report[1]:
        cell.font = Font(bold=True)
    for error in errors:
        report.append([error.get("excel_row"), error.get("column"), error.get("value"), translated_reason(error)])
    report.column_dimensions["D"].width = 70
    output = io.BytesIO()
    workbook.save(output)
    return output.getvalue()
