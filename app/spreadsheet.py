"""Reading of sheet cells, shared by every Excel import (ledger, meter readings, holiday calendar).

`read_sheet` reads a sheet of a workbook that app.uploads.open_xlsx opened. Each cell
comes back as str, int, Decimal, bool, datetime or None, and never as a float. Numbers
are converted from the number text the file stores. Excel stores binary doubles and
shows 15 significant digits, and it writes a value such as 0.1 + 0.2 as
0.30000000000000004. A number is therefore rounded half-even to 15 significant digits,
which is the value Excel shows at full width, before any check of its decimal places.

Cells that read as blank or as a value they do not show are listed apart as CellProblems:
- a formula saved without its computed value (by a tool that does not calculate, such as openpyxl);
- a formula whose saved result is an error value such as #N/A or #REF!;
- a cell covered by a merged range, which is empty in the file because only the
  top-left cell of a merged range has a value;
- a number shown as a percentage, whose stored value is the fraction (5% is 0.05).
No importer field is a percentage, so each importer rejects that cell like the others.

parse_number, parse_date and cell_text read a cell value by the same rules in every
importer. visible_text writes invisible characters as [U+XXXX] for error messages.
"""

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from xml.etree.ElementTree import ParseError

from openpyxl.styles.numbers import BUILTIN_FORMATS_MAX_SIZE, builtin_format_code
from openpyxl.utils import get_column_letter
from openpyxl.utils.cell import range_boundaries
from openpyxl.worksheet._reader import FORMULA_TAG, VALUE_TAG, WorkSheetParser

from app.i18n import M_, N_, Message
from app.uploads import RESAVE

# Significant digits Excel keeps and shows of a number.
EXCEL_DIGITS = 15
_EXCEL_CONTEXT = Context(prec=EXCEL_DIGITS, rounding=ROUND_HALF_EVEN)
# Hangul fillers (category Lo) that fonts draw as nothing.
HANGUL_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")

# Reasons of the cell problems, one msgid each. A message names the cell and the fix.
PROBLEM_REASONS = {
    "formula": N_("公式 %(formula)s 没有保存计算结果，读出来是空的；请用 Excel 或 WPS 打开文件并保存一次（保存时会计算公式），"
                  "或把公式换成数值，再重新上传"),
    "error": N_("单元格 %(cell)s 的公式结果是错误值 %(error)s；请改正公式，或换成数值后重新上传"),
    "merged": N_("单元格 %(cell)s 在合并单元格 %(range)s 中，合并后只有左上角的 %(anchor)s 有值，这里读出来是空的；"
                 "请取消合并，在每一行填上该值后重新上传"),
    "percent": N_("单元格 %(cell)s 设成了百分比格式（显示为 %(shown)s，实际值是 %(stored)s）；这一列不接受百分数，"
                  "请把单元格格式改为“常规”或“数值”并填写实际数值"),
}

# Reasons parse_number and parse_date give for a value they reject. A value that is simply
# not a number or not a date gets the reason None, and each importer gives its own message.
PERCENT_TEXT = N_("是百分数；这一列不接受百分数，请填写实际数值")
DATE_NOT_NUMBER = N_("是日期，不是数字；请把单元格格式改为“常规”或“数值”后填写数字")
BAD_GROUPING = N_("千位分隔符的位置不对（应每三位一个逗号，如 1,234.50）；小数点只能用“.”，请改正后重新上传")
NUMBER_NOT_DATE = N_("是数字 %(number)s，不是日期（单元格可能设成了“常规”格式）；请把单元格格式设为日期，或填写如 2025-11-15 的文本")
DATE_WITH_TIME = N_("带有时刻 %(time)s；这一列只接受日期，请去掉时刻")


class CellValueError(ValueError):
    """A cell value that a parse_* function rejects, with the msgid of the reason and its parameters.

    `reason_id` is None when the value is simply not of the expected kind, so that the
    caller gives its own message for the field.
    """

    def __init__(self, reason_id=None, **params):
        super().__init__(reason_id % params if reason_id and params else reason_id or "invalid value")
        self.reason_id = reason_id
        self.params = params


@dataclass(frozen=True)
class CellProblem:
    """A cell that reads as blank or as a value it does not show, with what the message needs."""

    kind: str  # a key of PROBLEM_REASONS
    cell: str  # A1 reference
    shown: str  # the value an error repeats: the formula, the error value or the percentage
    params: dict = field(default_factory=dict, compare=False)

    def reason(self):
        """Return (msgid, params) of the error message for this cell."""
        return PROBLEM_REASONS[self.kind], {"cell": self.cell, **self.params}


@dataclass
class SheetData:
    """The rows of a sheet as value tuples (not padded), and its problem cells by (Excel row, 0-based column)."""

    title: str
    rows: list
    problems: dict
    # Excel rows with a formula or error problem: they read as blank but are not.
    rows_with_formulas: set = field(default_factory=set)

    def row_problems(self, excel_row, columns):
        """Return {key: CellProblem} of the cells of `excel_row` at the 0-based `columns` {key: column}."""
        found = {}
        for key, column in columns.items():
            problem = self.problems.get((excel_row, column))
            if problem is not None:
                found[key] = problem
        return found

    def has_content(self, excel_row):
        """Return whether the row has a formula or error problem, which reads as blank but is not."""
        return excel_row in self.rows_with_formulas


def is_hidden(sheet):
    """Return whether Excel hides the sheet's tab (state hidden or veryHidden)."""
    return getattr(sheet, "sheet_state", "visible") != "visible"


def hidden_sheet_message(sheet):
    """Return the Message rejecting a hidden sheet that an import would read."""
    return M_(
        "工作表「%(sheet)s」是隐藏的，系统不读取隐藏的工作表；请在 Excel 中右键工作表标签→取消隐藏后重新上传，"
        "或删除该工作表（标签里找不到时，请把要导入的数据复制到新的工作簿）。",
        sheet=sheet.title,
    )


def first_visible_sheet(workbook):
    """Return the first sheet whose tab Excel shows, or None."""
    return next((sheet for sheet in workbook.worksheets if not is_hidden(sheet)), None)


def excel_number(text):
    """Convert the number text of a cell to int or Decimal, rounded to Excel's 15 significant digits."""
    number = _EXCEL_CONTEXT.plus(Decimal(text)).normalize()
    if number == number.to_integral_value():
        return int(number)
    return Decimal(format(number, "f"))


def _is_percent_format(code):
    # Quoted text and escaped characters are literal, so "%" there is no percent sign.
    bare = re.sub(r'"[^"]*"|\\.', "", code or "")
    return "%" in bare


def _percent_styles(workbook):
    styles = set()
    custom = getattr(workbook, "_number_formats", [])
    for index, style in enumerate(getattr(workbook, "_cell_styles", [])):
        format_id = style.numFmtId
        if format_id < BUILTIN_FORMATS_MAX_SIZE:
            code = builtin_format_code(format_id)
        else:
            position = format_id - BUILTIN_FORMATS_MAX_SIZE
            code = custom[position] if position < len(custom) else None
        if _is_percent_format(code):
            styles.add(index)
    return styles


class _CellParser(WorkSheetParser):
    """openpyxl's sheet parser, keeping numbers exact and noting formulas without a saved value."""

    def __init__(self, *args, percent_styles=frozenset(), **kwargs):
        super().__init__(*args, **kwargs)
        self.percent_styles = percent_styles

    def parse_cell(self, element):
        cell = super().parse_cell(element)
        if element.find(FORMULA_TAG) is not None:
            # parse_formula also records a shared formula's first cell, so call it for every formula.
            formula = self.parse_formula(element)
            formula = getattr(formula, "text", formula)
            if cell["value"] is None and element.get("t") != "str":
                cell["formula"] = formula if isinstance(formula, str) and formula else "="
        if cell["data_type"] == "n" and cell["value"] is not None:
            cell["value"] = excel_number(element.findtext(VALUE_TAG))
            if cell["style_id"] in self.percent_styles:
                cell["percent"] = True
        return cell


def read_sheet(sheet, max_rows, error_class, header_rows=0):
    """Read a read-only sheet into SheetData, raising `error_class` once it has more than `max_rows` data rows.

    `header_rows` rows above the data (titles, the header) are allowed on top. The sheet's
    recorded dimension rejects a large sheet before any row is read, and a sheet that
    records too few rows is read to its end all the same. An XML error anywhere in the
    sheet raises `error_class` too.
    """
    limit = max_rows + header_rows
    too_many = M_("工作表「%(sheet)s」超过 %(max_rows)s 行数据；请拆分成多个文件后分别导入。", sheet=sheet.title, max_rows=max_rows)
    try:
        recorded = sheet.max_row
    except (ValueError, TypeError):
        recorded = None
    if recorded is not None and recorded > limit:
        raise error_class(too_many)
    workbook = sheet.parent
    rows, problems = [], {}
    try:
        with sheet._get_source() as source:
            parser = _CellParser(
                source, sheet._shared_strings, data_only=True, epoch=workbook.epoch,
                date_formats=workbook._date_formats, timedelta_formats=workbook._timedelta_formats,
                percent_styles=_percent_styles(workbook),
            )
            for row_number, cells in parser.parse():
                if row_number > limit:
                    raise error_class(too_many)
                # The file leaves out empty rows, so pad them back.
                while len(rows) < row_number - 1:
                    rows.append(())
                rows.append(_row_values(cells, problems))
            merged = parser.merged_cells
    except (ParseError, KeyError, ValueError, TypeError, InvalidOperation) as error:
        if isinstance(error, error_class):
            raise
        raise error_class(
            M_("工作表「%(sheet)s」的内容无法读取（%(error)s）；%(fix)s。", sheet=sheet.title, error=error, fix=Message(RESAVE))
        ) from error
    if merged is not None:
        _add_merged_problems(merged, rows, problems)
    rows_with_formulas = {row for (row, _column), problem in problems.items() if problem.kind in ("formula", "error")}
    return SheetData(sheet.title, rows, problems, rows_with_formulas)


def _row_values(cells, problems):
    width = cells[-1]["column"] if cells else 0
    values = [None] * width
    for cell in cells:
        row_number, column, value = cell["row"], cell["column"], cell["value"]
        reference = f"{get_column_letter(column)}{row_number}"
        if "formula" in cell:
            problems[(row_number, column - 1)] = CellProblem("formula", reference, cell["formula"], {"formula": cell["formula"]})
        elif cell["data_type"] == "e":
            problems[(row_number, column - 1)] = CellProblem("error", reference, str(value), {"error": str(value)})
            value = None
        elif cell.get("percent"):
            shown = f"{format((Decimal(value) * 100).normalize(), 'f')}%"
            problems[(row_number, column - 1)] = CellProblem("percent", reference, shown, {"shown": shown, "stored": str(value)})
        values[column - 1] = value
    return tuple(values)


def _add_merged_problems(merged, rows, problems):
    """Add a 'merged' problem for each cell of a merged range other than its top-left cell, within the rows read."""
    widest = max((len(row) for row in rows), default=0)
    for merged_range in merged.mergeCell:
        try:
            first_column, first_row, last_column, last_row = range_boundaries(merged_range.ref)
        except (TypeError, ValueError):
            continue
        anchor = f"{get_column_letter(first_column)}{first_row}"
        for row_number in range(first_row, min(last_row, len(rows)) + 1):
            for column in range(first_column, min(last_column, widest) + 1):
                if (row_number, column) == (first_row, first_column) or (row_number, column - 1) in problems:
                    continue
                problems[(row_number, column - 1)] = CellProblem(
                    "merged", f"{get_column_letter(column)}{row_number}", "",
                    {"range": merged_range.ref, "anchor": anchor},
                )


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


def is_invisible(character):
    """Return whether a spreadsheet shows `character` as nothing or as a plain space.

    These are control and format characters (U+200B zero-width space, U+FEFF byte-order mark,
    U+200E direction mark …), line and paragraph separators, every space other than U+0020
    (U+00A0 no-break space, U+3000 full-width space …) and the Hangul fillers.
    """
    category = unicodedata.category(character)
    if category in ("Cc", "Cf", "Zl", "Zp"):
        return True
    return (category == "Zs" and character != " ") or character in HANGUL_FILLERS


def visible_text(text):
    """Return `text` with each invisible character written as [U+XXXX], so that an error shows it."""
    if not any(map(is_invisible, text)):
        return text
    return "".join(f"[U+{ord(c):04X}]" if is_invisible(c) else c for c in text)


def character_names(characters):
    """Name each distinct character once, in order, e.g. 'U+200B ZERO WIDTH SPACE'."""
    names = []
    for character in dict.fromkeys(characters):
        names.append(f"U+{ord(character):04X} {unicodedata.name(character, '')}".rstrip())
    return ", ".join(names)


def cell_text(value):
    """Return a cell as text: full-width characters made plain (NFKC), trimmed, None for blank."""
    if value is None:
        return None
    if isinstance(value, float):
        value = excel_number(repr(value))
    if isinstance(value, Decimal):
        value = format(value, "f")
    elif isinstance(value, datetime) and value.time() == time(0):
        value = value.date().isoformat()
    elif isinstance(value, date):
        value = value.isoformat()
    text = unicodedata.normalize("NFKC", str(value)).strip()
    return text or None


_PLAIN_NUMBER = re.compile(r"\d+(\.\d+)?")
_GROUPED_NUMBER = re.compile(r"\d{1,3}(,\d{3})+(\.\d+)?")


def parse_number(value, suffixes=()):
    """Read a number cell as Decimal, or None for a blank cell; raise CellValueError for anything else.

    Numbers from read_sheet are used as they are (see excel_number). Text is read after NFKC, so
    full-width digits, ，and ．count as plain ones. It may carry a sign, a comma between
    every three digits before the point (1,234.50), accounting brackets for a negative
    amount ((1,234.50) is -1234.50) and one of `suffixes` (a unit) at its end. Percentages,
    dates, decimal commas and other text are rejected.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise CellValueError()
    if isinstance(value, (datetime, date, time)):
        raise CellValueError(DATE_NOT_NUMBER)
    if isinstance(value, float):
        value = excel_number(repr(value))
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise CellValueError()
        return value
    text = cell_text(value)
    if text is None:
        return None
    for suffix in suffixes:
        suffix = unicodedata.normalize("NFKC", suffix)
        if text.endswith(suffix):
            text = text[: -len(suffix)].strip()
            break
    if text.endswith("%"):
        raise CellValueError(PERCENT_TEXT)
    negative = False
    if text.startswith("(") and text.endswith(")"):
        negative, text = True, text[1:-1].strip()
    elif text[:1] in "+-":
        negative, text = text[0] == "-", text[1:].strip()
    if _GROUPED_NUMBER.fullmatch(text):
        text = text.replace(",", "")
    elif "," in text and re.fullmatch(r"[\d,]+(\.\d+)?", text):
        raise CellValueError(BAD_GROUPING)
    if not _PLAIN_NUMBER.fullmatch(text):
        raise CellValueError()
    number = Decimal(text)
    return -number if negative else number


def has_more_places(number, places):
    """Return whether `number` has more than `places` decimal places other than trailing zeros."""
    return number != number.quantize(Decimal(1).scaleb(-places))


_DATE_TEXT = (
    re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})"),
    re.compile(r"(\d{4})/(\d{1,2})/(\d{1,2})"),
    re.compile(r"(\d{4})\.(\d{1,2})\.(\d{1,2})"),
    re.compile(r"(\d{4})年(\d{1,2})月(\d{1,2})日"),
)


def parse_date(value):
    """Read a date cell, or None for a blank cell; raise CellValueError for anything else.

    A date cell, or text with year, month and day in that order: 2025-11-15, 2025/11/15,
    2025.11.15 or 2025年11月15日 (full-width digits too). Day-first text such as
    15/11/2025 is rejected, because 05/11 could be either order. A number is rejected
    even when it is a date serial, because the cell then does not show a date.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.time() != time(0):
            raise CellValueError(DATE_WITH_TIME, time=value.time().isoformat())
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        raise CellValueError(NUMBER_NOT_DATE, number=cell_text(value))
    text = cell_text(value)
    if text is None:
        return None
    for pattern in _DATE_TEXT:
        match = pattern.fullmatch(text)
        if match:
            try:
                return date(*map(int, match.groups()))
            except ValueError:
                raise CellValueError() from None
    raise CellValueError()
