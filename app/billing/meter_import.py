"""Import of season heat-meter readings from Excel, feeding the metered settlement.

The sheet has a header row naming the account, the reading at the start of the season
and the reading at its end (synonyms below). Every row is checked before anything is
stored: a missing value, an unknown or non-metered account, a reading that goes down, a
consumption outside the plausible range or an account listed twice rejects the whole
file with one message per row. A valid file stores each reading and posts its
settlement line in one transaction.
"""

import logging
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa
from flask import current_app, has_app_context
from flask_babel import gettext as _

from app.billing.metered import MeteringError, settle_metered
from app.billing.models import SeasonMeterReading
from app.billing.services import account_charge_inputs
from app.extensions import db
from app.i18n import join_items
from app.network.models import Account
from app.tariffs.services import charge_area, tariff_in_force
from app.spreadsheet import (
    CellValueError,
    character_names,
    cell_text,
    find_header_row,
    first_visible_sheet,
    has_more_places,
    is_invisible,
    parse_number,
    read_sheet,
    visible_text,
)
from app.uploads import open_xlsx

logger = logging.getLogger(__name__)

HEADERS = {
    "account": ("用户编号", "户号", "原户号", "用户号"),
    "start_reading": ("起始读数", "上期读数", "期初读数", "开始读数"),
    "end_reading": ("结束读数", "本期读数", "期末读数", "截止读数"),
}
HEADER_LABELS = {"account": "用户编号", "start_reading": "起始读数", "end_reading": "结束读数"}
# Rows searched for the header row, for sheets with a title above it.
HEADER_SEARCH_ROWS = 10
# Default of METER_READINGS_MAX_ROWS: data rows per file.
MAX_ROWS = 100_000
# Decimal places of a reading in GJ.
READING_PLACES = 3
# Plausible season consumption per m² of charge area, in GJ. Typical northern-China
# dwellings use about 0.3 to 0.6 GJ/m² a season, so anything above 2 is a misread meter.
MAX_GJ_PER_M2 = Decimal("2")


class MeterImportError(ValueError):
    """A readings file that cannot be read at all (not .xlsx, no header)."""


@dataclass(frozen=True)
class RowError:
    """One invalid cell: Excel row, column label, the value as found, and what to do."""

    excel_row: int
    column: str
    value: str
    message: str

    def __post_init__(self):
        # Invisible characters are shown as [U+XXXX], so that the value in an error is not mistaken for a valid one.
        object.__setattr__(self, "value", visible_text(self.value))

    def __str__(self):
        return _("第 %(row)s 行「%(column)s」值「%(value)s」：%(message)s", row=self.excel_row, column=self.column, value=self.value,
                 message=self.message)


@dataclass
class MeterImportResult:
    filename: str
    errors: list = field(default_factory=list)
    stored: int = 0
    unchanged: int = 0
    # Sum of the settlement lines posted, in yuan.
    settled_total: Decimal = Decimal("0.00")


def _find_header(rows):
    found = find_header_row(rows, HEADERS, HEADER_SEARCH_ROWS)
    if found is not None:
        return found
    expected = join_items(
        _("%(name)s（或 %(others)s）", name=HEADER_LABELS[key], others="/".join(names[1:])) for key, names in HEADERS.items()
    )
    raise MeterImportError(_("前 %(rows)s 行中没有找到表头；请在表头中包含：%(expected)s。", rows=HEADER_SEARCH_ROWS, expected=expected))


def _reading(value):
    """Return (Decimal reading, None), (None, None) for a blank cell, or (None, error message)."""
    try:
        reading = parse_number(value)
    except CellValueError as error:
        if error.reason_id:
            return None, _(error.reason_id, **error.params)
        return None, _("不是数字；请填写如 1234.567 的吉焦读数")
    if reading is None:
        return None, None
    if reading < 0:
        return None, _("读数须为不小于 0 的数字")
    if has_more_places(reading, READING_PLACES):
        return None, _("读数超过三位小数；请精确到 0.001 吉焦")
    return reading, None


def _shown(value):
    """Return a cell value as an error repeats it."""
    return cell_text(value) or ""


def read_rows(content, max_rows=None):
    """Return [(excel row, {key: cell value}, {key: CellProblem})] of a readings workbook's first visible sheet.

    A sheet with more than `max_rows` data rows (METER_READINGS_MAX_ROWS by default) is
    rejected whole rather than cut, so no reading is silently left out. Hidden sheets are
    not read, because the sender does not see them as the first sheet.
    """
    if max_rows is None:
        max_rows = current_app.config.get("METER_READINGS_MAX_ROWS", MAX_ROWS) if has_app_context() else MAX_ROWS
    workbook = open_xlsx(content, MeterImportError)
    try:
        sheet = first_visible_sheet(workbook)
        if sheet is None:
            raise MeterImportError(_("工作簿中没有可见的工作表；请在第一个工作表中填写读数后重新上传。"))
        data = read_sheet(sheet, max_rows, MeterImportError, header_rows=HEADER_SEARCH_ROWS)
    finally:
        workbook.close()
    header_index, columns = _find_header(data.rows)
    result = []
    for excel_row in range(header_index + 2, len(data.rows) + 1):
        row = data.rows[excel_row - 1]
        values = {key: row[position] if position < len(row) else None for key, position in columns.items()}
        problems = data.row_problems(excel_row, columns)
        if not problems and not any(cell_text(value) for value in values.values()):
            continue
        result.append((excel_row, values, problems))
    return result


def _validate(company_id, season, rows, max_gj_per_m2):
    """Check every row; return ([(excel row, account, start, end, heat)], [RowError])."""
    numbers = {cell_text(values["account"]) for _, values, _problems in rows} - {None}
    accounts = {}
    if numbers:
        for account in db.session.scalars(
            sa.select(Account).where(
                Account.company_id == company_id,
                sa.or_(Account.account_no.in_(numbers), Account.legacy_no.in_(numbers)),
            )
        ):
            accounts[account.account_no] = account
            if account.legacy_no:
                accounts[account.legacy_no] = account
    tariff = tariff_in_force(season, season.end_on)
    errors = []
    valid = []
    seen = {}
    for excel_row, values, problems in rows:
        row_errors = []
        for key, problem in problems.items():
            reason_id, params = problem.reason()
            row_errors.append(RowError(excel_row, HEADER_LABELS[key], problem.shown, _(reason_id, **params)))
        number = cell_text(values["account"]) or ""
        invisible = [c for c in number if is_invisible(c)]
        account = None if "account" in problems or invisible else accounts.get(number)
        if "account" in problems:
            pass  # The problem's error above replaces the checks of the number.
        elif invisible:
            row_errors.append(RowError(excel_row, "用户编号", number, _(
                "含有看不见的字符：%(characters)s（值中标为 [U+…]）；请清空单元格后重新输入编号（不要粘贴）",
                characters=character_names(invisible),
            )))
        elif not number:
            row_errors.append(RowError(excel_row, "用户编号", "", _("用户编号为空；请填写 15 位用户编号或原户号")))
        elif account is None:
            row_errors.append(RowError(excel_row, "用户编号", number, _("本公司没有该用户；请核对编号")))
        elif account.billing_method != "metered":
            row_errors.append(RowError(excel_row, "用户编号", number, _("该用户按面积计费，不需要读数；请删除该行或先改为计量计费")))
        elif account.id in seen:
            row_errors.append(RowError(excel_row, "用户编号", number, _("与第 %(row)s 行重复；每户只保留一行", row=seen[account.id])))
        readings = {}
        for key in ("start_reading", "end_reading"):
            if key in problems:
                continue
            value, message = _reading(values[key])
            if message:
                row_errors.append(RowError(excel_row, HEADER_LABELS[key], _shown(values[key]), message))
            elif value is None:
                row_errors.append(RowError(excel_row, HEADER_LABELS[key], "", _("读数为空；请填写抄表读数")))
            else:
                readings[key] = value
        if len(readings) == 2 and readings["end_reading"] < readings["start_reading"]:
            row_errors.append(RowError(
                excel_row, "结束读数", _shown(values["end_reading"]),
                _("小于起始读数 %(start)s（读数倒走）；请复核表计或换表记录", start=_shown(values["start_reading"])),
            ))
        if not row_errors and account is not None:
            heat = readings["end_reading"] - readings["start_reading"]
            has_lift, _kind = account_charge_inputs(account)
            area = charge_area(tariff, account, has_lift)
            limit = area * max_gj_per_m2
            if heat > limit:
                row_errors.append(RowError(
                    excel_row, "结束读数", _shown(values["end_reading"]),
                    _(
                        "用热 %(heat)s 吉焦超出合理范围（收费面积 %(area)s㎡ × %(max)s 吉焦/㎡ = %(limit)s）；请复核读数",
                        heat=heat, area=format(area.normalize(), "f"), max=max_gj_per_m2, limit=format(limit.normalize(), "f"),
                    ),
                ))
            else:
                valid.append((excel_row, account, readings["start_reading"], readings["end_reading"], heat))
        if account is not None:
            seen.setdefault(account.id, excel_row)
        errors.extend(row_errors)
    return valid, errors


def import_meter_readings(company_id, season, content, filename, user_id=None, max_gj_per_m2=MAX_GJ_PER_M2):
    """Validate a readings workbook, then store the readings and post each settlement.

    Returns a MeterImportResult; when it lists errors nothing was stored. A reading already
    stored with the same values is counted as unchanged, and its settlement is not posted
    again. Raises MeterImportError for a file that cannot be read.
    """
    result = MeterImportResult(filename=filename)
    rows = read_rows(content)
    if not rows:
        raise MeterImportError(_("表头下没有读数行；请填写后重新上传。"))
    valid, errors = _validate(company_id, season, rows, max_gj_per_m2)
    existing = {
        reading.account_id: reading
        for reading in db.session.scalars(
            sa.select(SeasonMeterReading).where(SeasonMeterReading.company_id == company_id, SeasonMeterReading.season_id == season.id)
        )
    }
    for excel_row, account, start, end, _heat in valid:
        stored = existing.get(account.id)
        if stored is not None and (stored.start_reading, stored.end_reading) != (start, end):
            errors.append(RowError(
                excel_row, "结束读数", f"{end}",
                _(
                    "该户本季已导入读数 %(start)s–%(end)s（%(file)s 第 %(row)s 行）；已结算的读数不能覆盖，请核对后删除该行",
                    start=stored.start_reading, end=stored.end_reading, file=stored.filename, row=stored.excel_row,
                ),
            ))
    if errors:
        result.errors = sorted(errors, key=lambda error: error.excel_row)
        return result
    try:
        for excel_row, account, start, end, heat in valid:
            if account.id in existing:
                result.unchanged += 1
                continue
            reading = SeasonMeterReading(
                company_id=company_id, account_id=account.id, season_id=season.id, start_reading=start,
                end_reading=end, heat_gj=heat, filename=filename[:255], excel_row=excel_row, imported_by_id=user_id,
            )
            db.session.add(reading)
            db.session.flush()
            try:
                line = settle_metered(account, season, heat, cause_type="meter_reading", cause_id=reading.id, user_id=user_id)
            except MeteringError as error:
                raise MeterImportError(_(
                    "第 %(row)s 行（用户 %(account)s）不能结算：%(reason)s", row=excel_row, account=account.account_no, reason=error,
                )) from None
            if line is not None:
                result.settled_total += line.amount
            result.stored += 1
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    logger.info("Meter readings %s for company %s season %s: %s stored, %s unchanged", filename, company_id, season.id,
                result.stored, result.unchanged)
    return result
