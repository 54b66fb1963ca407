"""Import of one year's official holidays and adjusted working days from CSV or Excel.

chinesecalendar covers the years up to its release, so a later year's State Council list
is imported from a file: a header row naming the columns 日期, 类型 and 名称 (synonyms
below), then one row per day. 类型 is 假日 (a day off) or 调休工作日 (a weekend day
worked). Every row is checked before anything is stored, and a file with any invalid row
stores nothing. A valid file sets its days in the calendar of each target company (the
importer's own company, or every subsidiary when headquarters imports it) in one
transaction. Days of the year that the file does not list are kept, so a company's own
local days survive a re-import.
"""

import csv
import io
import logging
from dataclasses import dataclass, field

import sqlalchemy as sa

from flask_babel import gettext as _

from app.extensions import db
from app.i18n import N_, join_items, translate_label
from app.org.models import Company
from app.processes.calendar import MAX_NAME_LENGTH, MAX_YEAR, MIN_YEAR
from app.processes.models import CalendarDay
from app.spreadsheet import (
    CellValueError,
    SheetData,
    cell_text,
    find_header_row,
    first_visible_sheet,
    parse_date,
    read_sheet,
    visible_text,
)
from app.uploads import open_xlsx

logger = logging.getLogger(__name__)

HEADERS = {
    "day": ("日期", "date"),
    "kind": ("类型", "kind", "类别"),
    "name": ("名称", "name", "节日", "说明"),
}
HEADER_LABELS = {"day": N_("日期"), "kind": N_("类型"), "name": N_("名称")}
# Cell text of 类型 -> CalendarDay.kind.
KIND_VALUES = {
    "假日": "holiday", "节假日": "holiday", "休息": "holiday", "放假": "holiday", "holiday": "holiday",
    "调休工作日": "workday", "调休上班": "workday", "上班": "workday", "补班": "workday", "workday": "workday",
}
# A year has at most a few dozen such days; the limit stops a wrong file early.
MAX_ROWS = 366
WEEKDAYS = (N_("星期一"), N_("星期二"), N_("星期三"), N_("星期四"), N_("星期五"), N_("星期六"), N_("星期日"))
MAX_FILE_BYTES = 1024 * 1024
HEADER_SEARCH_ROWS = 10


class CalendarImportError(ValueError):
    """A calendar file that cannot be read at all: wrong format, no header, empty or too large."""


@dataclass(frozen=True)
class RowError:
    """One invalid cell: file row, column label, the value as found, and the fix."""

    row: int
    column: str
    value: str
    message: str

    def __post_init__(self):
        # Invisible characters are shown as [U+XXXX], so that the value in an error is not mistaken for a valid one.
        object.__setattr__(self, "value", visible_text(self.value))

    def __str__(self):
        return _("第 %(row)s 行「%(column)s」值「%(value)s」：%(message)s", row=self.row, column=translate_label(self.column), value=self.value, message=self.message)


@dataclass
class CalendarImportResult:
    """Outcome of one import: the year, per-row errors, and the days added and changed per company code."""

    year: int | None = None
    errors: list = field(default_factory=list)
    rows: int = 0
    added: dict = field(default_factory=dict)
    changed: dict = field(default_factory=dict)

    @property
    def stored(self):
        return not self.errors and self.rows > 0


def _cell_text(value):
    return cell_text(value) or ""


def _read_csv(content):
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = content.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise CalendarImportError(_("CSV 文件的编码无法识别；请另存为 UTF-8 编码的 CSV 后重新导入。"))
    try:
        return SheetData("csv", list(csv.reader(io.StringIO(text))), {})
    except csv.Error as error:
        raise CalendarImportError(_("CSV 文件无法读取（%(error)s）；请检查引号是否成对。", error=error)) from error


def _read_xlsx(content):
    """Read the first visible sheet: hidden sheets are not read, because the sender does not see them as the first."""
    workbook = open_xlsx(content, CalendarImportError)
    try:
        sheet = first_visible_sheet(workbook)
        if sheet is None:
            raise CalendarImportError(_("工作簿中没有可见的工作表；请在第一个工作表中填写放假安排后重新导入。"))
        return read_sheet(sheet, MAX_ROWS, CalendarImportError, header_rows=HEADER_SEARCH_ROWS)
    finally:
        workbook.close()


def read_rows(filename, content):
    """Return the file's rows and problem cells as SheetData; raise CalendarImportError for a file that cannot be read."""
    if not content:
        raise CalendarImportError(_("文件为空；请选择包含节假日安排的 CSV 或 Excel（.xlsx）文件。"))
    if len(content) > MAX_FILE_BYTES:
        raise CalendarImportError(_("文件超过 %(limit)s KB，不像是一年的放假安排；请检查是否选错了文件。", limit=MAX_FILE_BYTES // 1024))
    suffix = (filename or "").rsplit(".", 1)[-1].lower()
    if suffix == "csv":
        return _read_csv(content)
    if suffix == "xlsx":
        return _read_xlsx(content)
    raise CalendarImportError(_("文件「%(name)s」不是 .csv 或 .xlsx；请另存为这两种格式之一后重新导入。", name=(filename or "")[:60]))


def _find_header(rows):
    """Return (index of the header row, {column key: position}); raise CalendarImportError when none is found."""
    found = find_header_row(rows, HEADERS, HEADER_SEARCH_ROWS)
    if found is not None:
        return found
    expected = join_items(translate_label(label) for label in HEADER_LABELS.values())
    raise CalendarImportError(_("前 %(rows)s 行中没有找到表头；第一行须为列名：%(expected)s。", rows=HEADER_SEARCH_ROWS, expected=expected))


def parse_rows(rows, year=None):
    """Check the rows of a calendar file (SheetData from read_rows); returns (year, {day: (kind, name)}, [RowError]).

    `year`, when given, is the year every date must be in; otherwise the first valid date
    sets it. Row numbers count from 1 at the file's first line, as a spreadsheet shows them.
    A date is a date cell or text such as 2027-10-01, 2027/10/01, 2027.10.01 or 2027年10月1日
    (app.spreadsheet.parse_date).
    """
    header_index, columns = _find_header(rows.rows)
    days, errors, first_row = {}, [], {}
    for offset, row in enumerate(rows.rows[header_index + 1:], start=header_index + 2):
        cells = {key: _cell_text(row[position]) if position < len(row) else "" for key, position in columns.items()}
        problems = rows.row_problems(offset, columns)
        if not problems and not any(_cell_text(value) for value in row):
            continue

        def reject(key, message, offset=offset, cells=cells):
            errors.append(RowError(offset, HEADER_LABELS[key], cells[key][:40], message))

        for key, problem in problems.items():
            reason_id, params = problem.reason()
            errors.append(RowError(offset, HEADER_LABELS[key], problem.shown[:40], _(reason_id, **params)))
        if problems:
            continue
        day = None
        try:
            day = parse_date(row[columns["day"]] if columns["day"] < len(row) else None)
        except CellValueError as error:
            if error.reason_id:
                reject("day", _(error.reason_id, **error.params))
            else:
                reject("day", _("不是有效日期；请按 YYYY-MM-DD 填写，例如 2027-10-01。"))
        if day is None:
            if not cells["day"]:
                reject("day", _("不是有效日期；请按 YYYY-MM-DD 填写，例如 2027-10-01。"))
        elif not MIN_YEAR <= day.year <= MAX_YEAR:
            reject("day", _("年份超出范围；请填写 %(first)s 至 %(last)s 年之间的日期。", first=MIN_YEAR, last=MAX_YEAR))
            day = None
        kind = KIND_VALUES.get(cells["kind"].lower())
        if kind is None:
            reject("kind", _("类型无效；请填写「假日」或「调休工作日」。"))
        name = cells["name"]
        if not name:
            reject("name", _("名称为空；请填写节日名称，例如 国庆节、国庆节调休上班。"))
        elif len(name) > MAX_NAME_LENGTH:
            reject("name", _("名称超过 %(limit)s 个字；请缩短。", limit=MAX_NAME_LENGTH))
        if day is None:
            continue
        if year is None:
            year = day.year
        if day.year != year:
            reject("day", _("不在 %(year)s 年；一个文件只能导入一年的安排，请把其他年份的行放到另一个文件。", year=year))
            continue
        if kind == "workday" and day.weekday() < 5:
            reject("day", _("是%(weekday)s，本来就上班；调休工作日须是周六或周日，请核对日期或类型。", weekday=translate_label(WEEKDAYS[day.weekday()])))
            continue
        if day in first_row:
            reject("day", _("与第 %(row)s 行重复；每个日期只能出现一次，请删除其中一行。", row=first_row[day]))
            continue
        first_row[day] = offset
        if kind is not None and name and len(name) <= MAX_NAME_LENGTH:
            days[day] = (kind, name)
    if not errors and not days:
        raise CalendarImportError(_("表头下没有数据行；请每行填写一个日期、类型和名称。"))
    return year, days, errors


def target_companies(user):
    """Companies an import by `user` writes to: every subsidiary for a headquarters user, else the user's own company."""
    if user.company.is_headquarters:
        return db.session.scalars(
            sa.select(Company).where(Company.is_headquarters.is_(False)).order_by(Company.code)
        ).all()
    return [user.company]


def import_calendar(filename, content, companies, user=None, year=None):
    """Check a calendar file and, when every row is valid, set its days in each company's calendar (not committed).

    Returns a CalendarImportResult; when it lists errors nothing was changed. Raises
    CalendarImportError for a file that cannot be read.
    """
    year, days, errors = parse_rows(read_rows(filename, content), year)
    result = CalendarImportResult(year=year, errors=errors, rows=len(days))
    if errors:
        return result
    user_id = user.id if user is not None else None
    for company in companies:
        existing = {
            row.day: row for row in db.session.scalars(
                sa.select(CalendarDay).where(CalendarDay.company_id == company.id, CalendarDay.day.in_(list(days)))
            )
        }
        added = changed = 0
        for day, (kind, name) in sorted(days.items()):
            row = existing.get(day)
            if row is None:
                db.session.add(CalendarDay(company_id=company.id, day=day, kind=kind, name=name, updated_by_id=user_id))
                added += 1
            elif (row.kind, row.name) != (kind, name):
                row.kind, row.name, row.updated_by_id = kind, name, user_id
                changed += 1
        result.added[company.code] = added
        result.changed[company.code] = changed
    db.session.flush()
    logger.info(
        "Imported %s calendar days of %s from %s for companies %s (added %s, changed %s)",
        len(days), year, filename, [company.code for company in companies], result.added, result.changed,
    )
    return result
