"""Read a company's Excel ledger: find the header, map columns by name, normalise and
validate every row. Nothing here touches the database.

Rows are reported by their 1-based Excel row number and by the header text as it appears
in the file, so that the sender can find each cell.
"""

import re
from dataclasses import dataclass, field
from decimal import Decimal

from flask_babel import gettext

from app.i18n import M_, N_, stored_message
from app.spreadsheet import (
    CellValueError,
    cell_text,
    character_names,
    has_more_places,
    hidden_sheet_message,
    is_hidden,
    is_invisible,
    parse_number,
    read_sheet,
    visible_text,
)
from app.uploads import open_xlsx

# Canonical field -> header texts seen in ledgers (compared after normalise_header).
HEADER_SYNONYMS = {
    "legacy_no": ["原用户编号", "原户号", "户号", "用户编号", "原编号", "用户号", "用户编码", "客户编号", "原系统编号"],
    "customer_name": ["户主姓名", "户主", "用户名称", "用户姓名", "姓名", "户名", "业主姓名", "业主", "客户名称"],
    "phone": ["联系电话", "手机", "电话", "手机号", "手机号码", "联系方式", "电话号码"],
    "community": ["小区名称", "小区", "小区名", "所属小区"],
    "building": ["楼号", "楼栋", "楼栋号", "楼", "栋号"],
    "unit": ["单元", "单元号"],
    "room": ["房号", "房间号", "户室号", "室号", "门牌号", "房间"],
    "building_area": ["建筑面积"],
    "usable_area": ["使用面积"],
    "has_lift": ["是否有电梯", "电梯", "有无电梯"],
    "user_type": ["用户类型", "用热性质", "用户性质", "用热类型"],
    "billing_status": ["供热状态", "采暖状态", "供暖状态", "用热状态", "状态"],
    "billing_method": ["计费方式", "收费方式"],
    "valve_state": ["阀门状态", "阀门", "开关栓状态", "栓状态"],
    "station": ["换热站", "热力站", "换热站名称", "所属换热站", "热力站名称"],
    "heat_source": ["热源", "热源名称", "所属热源"],
    "prior_arrears": ["往年欠费", "欠费金额", "上季欠费", "历史欠费", "往年欠费金额", "历年欠费", "陈欠"],
    "note": ["备注"],
}
REQUIRED_FIELDS = ["community", "building", "unit", "room", "building_area", "user_type", "billing_status"]
FIELD_LABELS = {
    "legacy_no": "原用户编号",
    "community": "小区名称",
    "building": "楼号",
    "unit": "单元",
    "room": "房号",
    "building_area": "建筑面积",
    "usable_area": "使用面积",
    "user_type": "用户类型",
    "billing_status": "供热状态",
    "billing_method": "计费方式",
}

# Ledger wording -> code. Keys are the group's accepted synonyms; anything else is rejected.
STATUS_SYNONYMS = {"正常": "normal", "正常供热": "normal", "报停": "suspended", "停供": "suspended", "未入网": "not_connected"}
USER_TYPE_SYNONYMS = {
    "居民": "residential",
    "住宅": "residential",
    "低保": "low_income",
    "非居民": "non_residential",
    "公建": "non_residential",
    "商业": "non_residential",
}
BILLING_METHOD_SYNONYMS = {"面积": "area", "计量": "metered"}
# Words of the optional valve column. A blank cell keeps a stored account's valve state (open for a new one).
# TODO: let a company's legacy_values map its own valve wording, as for billing_status.
VALVE_SYNONYMS = {"开栓": "open", "开": "open", "关栓": "closed", "关": "closed", "施封": "sealed", "已施封": "sealed"}
YES_NO = {"是": True, "有": True, "否": False, "无": False}

AREA_SUFFIXES = ("平方米", "平米", "平方", "m2", "m²", "㎡")
# First cells that mark a total row rather than an account.
TOTAL_LABELS = {"合计", "总计", "小计"}
# Rows a sheet may have beyond max_rows for titles and the header (find_header searches the first 15).
HEADER_ROWS_ALLOWANCE = 20
# Maximum length of a 备注. The column is unlimited text, and this bound keeps a note readable
# on the account page. A longer note is a row error, never cut.
NOTE_MAX_CHARS = 2000
# Longest text per field, as the account columns store it; longer values are row errors.
TEXT_LIMITS = {
    "legacy_no": 64, "customer_name": 100, "phone": 32, "community": 100, "station": 100, "heat_source": 100,
    "note": NOTE_MAX_CHARS,
}
# Longest cell value repeated in an error report.
SHOWN_VALUE_CHARS = 100
# Fields whose text is matched against stored records: a legacy number finds its account, and
# names find their community, station and heat source. An invisible character in them would
# make a value that looks like a stored one into a different value.
MATCHED_TEXT_FIELDS = ("legacy_no", "community", "station", "heat_source")
# Decimal places a stored area may have; numbers are read to Excel's 15 significant digits first (app/spreadsheet.py).
AREA_PLACES = 4
# Plausibility limits that also keep quantize() within Decimal's 28-digit precision: an
# area in m² (a large commercial building, not a typo in the unit) and an amount in yuan.
MAX_AREA = Decimal("1000000")
# Decimal places of an amount in yuan: amounts are stored in fen (app/money.py).
MONEY_PLACES = 2
MAX_PRIOR_ARREARS = Decimal("100000000")


def translated_reason(error):
    """The reason of a stored error dict in the reader's language; errors stored without a msgid keep their text."""
    if error.get("reason_message"):
        return stored_message(error["reason_message"], error.get("reason", ""))
    reason_id = error.get("reason_id")
    if not reason_id:
        return error.get("reason", "")
    return gettext(reason_id, **error.get("reason_params") or {})


class LedgerFileError(ValueError):
    """The file cannot be read as a ledger at all (not xlsx, no header, no sheet).

    Raised with a Message (app.i18n), so the import history can show it in the reader's language.
    """


@dataclass
class RowError:
    """One invalid cell: Excel row number, header text as in the file, value and reason.

    `reason` is the Chinese text. `reason_id` and `reason_params` keep its catalog msgid
    and values, so a page can show the reason in the reader's language (`translated_reason`).
    """

    excel_row: int
    column: str
    value: str
    reason: str
    reason_id: str = ""
    reason_params: dict = field(default_factory=dict)

    @classmethod
    def build(cls, excel_row, column, value, reason_id, **params):
        """Make an error whose reason is the msgid `reason_id` (marked with N_) filled with `params`.

        Invisible characters in the value and in text parameters are written as [U+XXXX],
        so that a value never looks the same as the different value it is compared with.
        """
        value = visible_text(value) if isinstance(value, str) else value
        params = {name: visible_text(v) if isinstance(v, str) else v for name, v in params.items()}
        return cls(excel_row, column, value, reason_id % params if params else reason_id, reason_id, params)

    def as_dict(self):
        """The JSON form stored in LedgerImport.errors."""
        return {
            "excel_row": self.excel_row, "column": self.column, "value": self.value, "reason": self.reason,
            "reason_id": self.reason_id, "reason_params": self.reason_params,
        }

    def message(self):
        """Return the error as one line in the current language (the CLI prints English)."""
        return gettext(
            "第 %(row)s 行，列「%(column)s」，值「%(value)s」：%(reason)s",
            row=self.excel_row, column=self.column, value=self.value, reason=translated_reason(self.as_dict()),
        )


@dataclass
class LedgerRow:
    """One valid, normalised data row."""

    excel_row: int
    legacy_no: str | None
    customer_name: str
    phone: str
    community: str
    building: int
    unit: int
    room: int
    building_area: Decimal
    usable_area: Decimal | None
    has_lift: bool
    user_type: str
    billing_status: str
    billing_method: str
    station: str
    heat_source: str
    prior_arrears: Decimal
    note: str
    # None when the ledger has no valve column or the cell is blank.
    valve_state: str | None = None


@dataclass
class ParsedLedger:
    """A parsed ledger file: valid rows, row errors and the heat-source and station sheets."""

    sheet: str
    header_row: int
    columns: dict  # field -> header text as in the file
    rows: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    # RowErrors that describe a change the import made to a valid row's value, such as the
    # trimmed spaces of a legacy number. They do not reject the file.
    notices: list = field(default_factory=list)
    data_rows: int = 0
    heat_sources: dict = field(default_factory=dict)  # name -> kind
    stations: dict = field(default_factory=dict)  # name -> heat source name


def clean_text(value):
    """Normalise a cell to text: full-width to ASCII (NFKC), trimmed, None for blank."""
    return cell_text(value)


def clean_free_text(value):
    """Return a free-text cell (备注) as typed, only trimmed; None for blank.

    Unlike clean_text it keeps full-width punctuation such as ，and （）, because nothing
    matches against a note.
    """
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, Decimal):
        value = format(value, "f")
    text = str(value).strip()
    return text or None


def normalise_header(value):
    """Header text without spaces and without a unit in brackets, e.g. 建筑面积(㎡) → 建筑面积."""
    text = clean_text(value) or ""
    text = re.sub(r"[(\[（【].*?[)\]）】]", "", text)
    return re.sub(r"\s+", "", text)


_HEADER_LOOKUP = {normalise_header(name): key for key, names in HEADER_SYNONYMS.items() for name in names}


def parse_decimal(value):
    """Read a number cell (a number, or text with full-width digits, thousands separators and a unit suffix).

    Raises CellValueError (a ValueError) for anything else; see app.spreadsheet.parse_number.
    """
    return parse_number(value, AREA_SUFFIXES)


_DIGITS = re.compile(r"\d+")
_BLANKS = re.compile(r"\s+")


def parse_ordinal(value, suffixes, max_value):
    """Read a building, unit or room number such as 3, '3号楼' or '1单元'."""
    text = clean_text(value)
    if text is None:
        raise ValueError("blank")
    for suffix in suffixes:
        if text.endswith(suffix):
            text = text[: -len(suffix)].strip()
            break
    if not _DIGITS.fullmatch(text):
        raise ValueError("not a whole number")
    number = int(text)
    if not 1 <= number <= max_value:
        raise ValueError(f"outside 1..{max_value}")
    return number


def normalise_phone(value):
    """Phone as digits only, without a +86 prefix."""
    text = clean_text(value)
    if text is None:
        return ""
    text = re.sub(r"[\s\-()]", "", text)
    if text.startswith("+86"):
        text = text[3:]
    return text


def open_workbook(content):
    """Open xlsx bytes read-only, or raise LedgerFileError saying what is wrong."""
    return open_xlsx(content, LedgerFileError)


def find_header(rows):
    """Return (row index, {field: column index}, {field: header text}) of the header row."""
    for index, row in enumerate(rows[:15]):
        mapping, texts = {}, {}
        for column, cell in enumerate(row):
            key = _HEADER_LOOKUP.get(normalise_header(cell))
            if key and key not in mapping:
                mapping[key] = column
                texts[key] = clean_text(cell)
        if len(mapping) >= 3:
            return index, mapping, texts
    return None, None, None


# Header texts of the name column, and of the second column, of the station and heat-source sheets.
STATION_NAME_HEADERS = ("换热站名称", "换热站", "热力站")
STATION_SOURCE_HEADERS = ("热源名称", "热源")
HEAT_SOURCE_NAME_HEADERS = ("热源名称", "热源")
HEAT_SOURCE_KIND_HEADERS = ("热源类型", "类型")
INVISIBLE_REASON = N_(
    "含有看不见的字符：%(characters)s（值中标为 [U+…]），所以与看起来相同的值不一致；请清空单元格后重新输入（不要粘贴），"
    "或在 Excel 中用 =SUBSTITUTE(单元格,UNICHAR(%(code)s),\"\") 去掉该字符"
)


def _network_columns(header):
    """Return (kind, name column, second column or None) of a station or heat-source sheet header, or None."""
    names = [normalise_header(cell) for cell in header]

    def column(accepted):
        return next((i for i, name in enumerate(names) if name in accepted), None)

    station = column(STATION_NAME_HEADERS)
    if station is not None:
        return "station", station, column(STATION_SOURCE_HEADERS)
    source = column(HEAT_SOURCE_NAME_HEADERS)
    if source is not None:
        return "heat_source", source, column(HEAT_SOURCE_KIND_HEADERS)
    return None


def _read_network_sheets(workbook, parsed, ledger_sheet, max_rows):
    """Read the station and heat-source sheets into `parsed`, adding a RowError for each unreadable cell.

    Errors name the column as 工作表!表头 (sheet!header), so they are distinguished from the
    ledger sheet's. A hidden station or heat-source sheet raises LedgerFileError.
    """
    for sheet in workbook.worksheets:
        if sheet.title == ledger_sheet.title:
            continue
        data = _read_rows(sheet, max_rows)
        if not data.rows:
            continue
        found = _network_columns(data.rows[0])
        if found is None:
            continue
        if is_hidden(sheet):
            raise LedgerFileError(hidden_sheet_message(sheet))
        kind, name_column, other_column = found
        columns = {"name": name_column}
        if other_column is not None:
            columns["other"] = other_column
        labels = {key: f"{sheet.title}!{clean_text(data.rows[0][column])}" for key, column in columns.items()}
        for index in range(1, len(data.rows)):
            _read_network_row(parsed, kind, data, index + 1, columns, labels)


def _read_network_row(parsed, kind, data, excel_row, columns, labels):
    row = data.rows[excel_row - 1]
    problems = data.row_problems(excel_row, columns)
    for key, problem in problems.items():
        reason_id, params = problem.reason()
        parsed.errors.append(RowError.build(excel_row, labels[key], problem.shown, reason_id, **params))
    if problems:
        return
    texts = {key: clean_text(row[column]) if column < len(row) else None for key, column in columns.items()}
    name = texts["name"]
    if name is None:
        return
    invisible = [c for c in name if is_invisible(c)]
    if invisible:
        parsed.errors.append(RowError.build(
            excel_row, labels["name"], name, INVISIBLE_REASON, characters=character_names(invisible), code=ord(invisible[0]),
        ))
        return
    if kind == "station":
        parsed.stations[name] = texts.get("other") or ""
    else:
        parsed.heat_sources[name] = texts.get("other") or ""


def _read_rows(sheet, max_rows):
    return read_sheet(sheet, max_rows, LedgerFileError, header_rows=HEADER_ROWS_ALLOWANCE)


def _choose_ledger_sheet(workbook, max_rows):
    """Return (sheet, SheetData, header index, mapping, texts) of the sheet that contains the accounts.

    That is the first sheet whose header has the account columns; the heat-source and
    station sheets may come before or after it. A hidden sheet with an account header
    raises LedgerFileError, because the sender cannot see what would be imported.
    """
    first_found = None
    for sheet in workbook.worksheets:
        data = _read_rows(sheet, max_rows)
        header_index, mapping, texts = find_header(data.rows)
        if header_index is None:
            continue
        if is_hidden(sheet):
            raise LedgerFileError(hidden_sheet_message(sheet))
        if "community" in mapping and "building_area" in mapping:
            return sheet, data, header_index, mapping, texts
        first_found = first_found or (sheet, data, header_index, mapping, texts)
    if first_found:
        return first_found
    title = workbook.worksheets[0].title
    raise LedgerFileError(M_(
        "工作表「%(sheet)s」前 15 行中没有找到表头；表头应包含%(columns)s等列。",
        sheet=title, columns=["小区名称", "建筑面积", "用户类型", "供热状态"],
    ))


def parse_ledger(content, max_rows=200_000, progress=None, value_maps=None):
    """Parse ledger bytes into a ParsedLedger; raise LedgerFileError if it is no ledger.

    `progress(done, total)` is called every 1,000 sheet rows while rows are validated.
    `value_maps` adds a company's own wording for coded columns to the group's synonyms:
    {"billing_status" | "user_type" | "billing_method": {ledger text: code}}.
    """
    workbook = open_workbook(content)
    try:
        if not workbook.worksheets:
            raise LedgerFileError(M_("工作簿中没有工作表。"))
        sheet, data, header_index, mapping, texts = _choose_ledger_sheet(workbook, max_rows)
        missing = [FIELD_LABELS[f] for f in REQUIRED_FIELDS if f not in mapping]
        if missing:
            raise LedgerFileError(M_("表头（第 %(row)s 行）缺少这些列：%(columns)s；请补上后重新上传。", row=header_index + 1, columns=missing))
        parsed = ParsedLedger(sheet=sheet.title, header_row=header_index + 1, columns=texts)
        _read_network_sheets(workbook, parsed, sheet, max_rows)
    finally:
        workbook.close()

    rows = data.rows
    validator = _RowValidator(parsed, mapping, texts, value_maps or {})
    total = len(rows) - header_index - 1
    for index in range(header_index + 1, len(rows)):
        if progress and (index - header_index) % 1000 == 0:
            progress(index - header_index, total)
        row = rows[index]
        first = next((text for text in map(clean_text, row) if text is not None), None)
        if first is None and not data.has_content(index + 1):
            continue
        if first is not None and _BLANKS.sub("", first) in TOTAL_LABELS:
            continue
        parsed.data_rows += 1
        validator.validate(index + 1, row, data.row_problems(index + 1, mapping))
    return parsed


# Columns whose text the parser turns into a code, with the group's accepted wording.
CODED_FIELDS = {"billing_status": STATUS_SYNONYMS, "user_type": USER_TYPE_SYNONYMS, "billing_method": BILLING_METHOD_SYNONYMS}


def scan_coded_values(content, max_rows=200_000, value_maps=None):
    """Count the texts of each coded column that neither the group nor `value_maps` knows.

    Returns {field: {text: (row count, first Excel row)}} so that an operator can map a
    legacy system's wording (such as 在供 or 民用) to codes before importing. Raises
    LedgerFileError when the file is no ledger.
    """
    value_maps = value_maps or {}
    workbook = open_workbook(content)
    try:
        if not workbook.worksheets:
            raise LedgerFileError(M_("工作簿中没有工作表。"))
        _, data, header_index, mapping, _ = _choose_ledger_sheet(workbook, max_rows)
    finally:
        workbook.close()
    rows = data.rows
    unknown = {name: {} for name in CODED_FIELDS}
    for index in range(header_index + 1, len(rows)):
        row = rows[index]
        for name, synonyms in CODED_FIELDS.items():
            column = mapping.get(name)
            text = clean_text(row[column]) if column is not None and column < len(row) else None
            if text is None or text in synonyms or text in value_maps.get(name, {}):
                continue
            count, first_row = unknown[name].get(text, (0, index + 1))
            unknown[name][text] = (count + 1, first_row)
    return unknown


class _RowValidator:
    """Validate rows one by one, remembering what later rows must not repeat."""

    def __init__(self, parsed, mapping, texts, value_maps):
        self.parsed = parsed
        self.mapping = mapping
        self.texts = texts
        self.user_types = {**USER_TYPE_SYNONYMS, **value_maps.get("user_type", {})}
        self.statuses = {**STATUS_SYNONYMS, **value_maps.get("billing_status", {})}
        self.billing_methods = {**BILLING_METHOD_SYNONYMS, **value_maps.get("billing_method", {})}
        self.legacy_seen = {}
        self.dwelling_seen = {}
        self.lift_by_building = {}

    def validate(self, excel_row, row, problems=None):
        """Check one sheet row and add it to the parsed rows, or add its errors.

        `problems` maps each field whose cell reads as blank or as a value it does not show
        (app.spreadsheet.CellProblem: a formula without its saved value, an error value, a
        merged cell, a percentage) to its problem. Such a cell gets one error naming the
        cell and the fix, in place of the errors its value would cause.
        """
        problems = problems or {}
        width = len(row)
        # Each mapped cell as read, and as clean_text makes it, so that no cell is normalised twice.
        raw_cells = {key: row[column] for key, column in self.mapping.items() if column < width}
        cell_texts = {key: clean_text(value) for key, value in raw_cells.items()}
        cell_texts["note"] = clean_free_text(raw_cells.get("note"))
        errors = []

        def error(key, value, reason_id, **params):
            if key in problems:
                return
            shown = "" if value is None else str(value)
            if len(shown) > SHOWN_VALUE_CHARS:
                shown = shown[:SHOWN_VALUE_CHARS] + "…"
            errors.append(RowError.build(excel_row, self.texts.get(key, FIELD_LABELS.get(key, key)), shown, reason_id, **params))

        for key in MATCHED_TEXT_FIELDS:
            text = cell_texts.get(key)
            invisible = [c for c in text if is_invisible(c)] if text else []
            if invisible:
                error(key, text, INVISIBLE_REASON, characters=character_names(invisible), code=ord(invisible[0]))

        legacy_no = cell_texts.get("legacy_no")
        if legacy_no is not None:
            if legacy_no in self.legacy_seen:
                error("legacy_no", legacy_no, N_("原用户编号重复，已在第 %(row)s 行出现；每个编号只能出现一次"), row=self.legacy_seen[legacy_no])
            else:
                self.legacy_seen[legacy_no] = excel_row

        community = cell_texts.get("community")
        if community is None:
            error("community", None, N_("小区为空，请填写小区名称"))

        numbers = {}
        for key, suffixes, max_value, label in (
            ("building", ("号楼", "栋", "幢", "号"), 999, N_("楼号须为 1 到 999 的整数")),
            ("unit", ("单元",), 99, N_("单元须为 1 到 99 的整数")),
            ("room", ("室", "号"), 9999, N_("房号须为 1 到 9999 的整数")),
        ):
            raw = raw_cells.get(key)
            try:
                numbers[key] = parse_ordinal(raw, suffixes, max_value)
            except ValueError:
                error(key, raw, label)

        raw_area = raw_cells.get("building_area")
        building_area = None
        try:
            building_area = parse_decimal(raw_area)
            if building_area is None:
                error("building_area", raw_area, N_("建筑面积为空，请填写大于 0 的数字"))
            elif building_area <= 0:
                error("building_area", raw_area, N_("建筑面积必须大于 0"))
            elif building_area > MAX_AREA:
                error("building_area", raw_area, N_("建筑面积超过 %(max)s ㎡，请核对单位和数值"), max=str(MAX_AREA))
            elif has_more_places(building_area, AREA_PLACES):
                error("building_area", raw_area, N_("建筑面积最多 %(places)s 位小数"), places=AREA_PLACES)
        except CellValueError as problem:
            error("building_area", raw_area, problem.reason_id or N_("建筑面积不是数字，请填写大于 0 的数字（可带㎡或平米）"), **problem.params)

        raw_usable = raw_cells.get("usable_area")
        usable_area = None
        try:
            usable_area = parse_decimal(raw_usable)
            if usable_area is not None and usable_area <= 0:
                error("usable_area", raw_usable, N_("使用面积必须大于 0，或留空"))
            elif usable_area is not None and usable_area > MAX_AREA:
                error("usable_area", raw_usable, N_("使用面积超过 %(max)s ㎡，请核对单位和数值"), max=str(MAX_AREA))
            elif usable_area is not None and has_more_places(usable_area, AREA_PLACES):
                error("usable_area", raw_usable, N_("使用面积最多 %(places)s 位小数"), places=AREA_PLACES)
        except CellValueError as problem:
            error("usable_area", raw_usable, problem.reason_id or N_("使用面积不是数字，请填写数字或留空"), **problem.params)

        raw_type = cell_texts.get("user_type")
        user_type = self.user_types.get(raw_type)
        if user_type is None:
            error("user_type", raw_type, N_("用户类型无法识别，应为：%(choices)s"), choices="、".join(self.user_types))

        raw_status = cell_texts.get("billing_status")
        status = self.statuses.get(raw_status)
        if status is None:
            error("billing_status", raw_status, N_("供热状态无法识别，应为：%(choices)s"), choices="、".join(self.statuses))

        raw_method = cell_texts.get("billing_method")
        method = self.billing_methods.get(raw_method) if raw_method is not None else "area"
        if method is None:
            error("billing_method", raw_method, N_("计费方式无法识别，应为：%(choices)s"), choices="、".join(self.billing_methods))

        raw_valve = cell_texts.get("valve_state")
        valve_state = VALVE_SYNONYMS.get(raw_valve) if raw_valve is not None else None
        if raw_valve is not None and valve_state is None:
            error("valve_state", raw_valve, f"阀门状态无法识别，应为：{'、'.join(VALVE_SYNONYMS)}，或留空")

        raw_lift = cell_texts.get("has_lift")
        has_lift = YES_NO.get(raw_lift) if raw_lift is not None else False
        if has_lift is None:
            error("has_lift", raw_lift, N_("是否有电梯应填“是”或“否”"))

        raw_arrears = raw_cells.get("prior_arrears")
        prior_arrears = None
        try:
            prior_arrears = parse_decimal(raw_arrears)
            if prior_arrears is not None and prior_arrears > MAX_PRIOR_ARREARS:
                error("prior_arrears", raw_arrears, N_("往年欠费超过 %(max)s 元，请核对数值"), max=str(MAX_PRIOR_ARREARS))
            elif prior_arrears is not None and (prior_arrears < 0 or has_more_places(prior_arrears, MONEY_PLACES)):
                error("prior_arrears", raw_arrears, N_("往年欠费须为不小于 0 的金额，最多两位小数"))
        except CellValueError as problem:
            error("prior_arrears", raw_arrears, problem.reason_id or N_("往年欠费不是金额，请填写数字或留空"), **problem.params)

        station = cell_texts.get("station") or ""

        if community is not None and len(numbers) == 3:
            dwelling = (community, numbers["building"], numbers["unit"], numbers["room"])
            if dwelling in self.dwelling_seen:
                error("room", raw_cells.get("room"), N_("与第 %(row)s 行是同一房屋（小区、楼号、单元、房号都相同）"), row=self.dwelling_seen[dwelling])
            else:
                self.dwelling_seen[dwelling] = excel_row
            if "has_lift" in self.mapping and has_lift is not None:
                building_key = (community, numbers["building"])
                first = self.lift_by_building.setdefault(building_key, (has_lift, excel_row))
                if first[0] != has_lift:
                    error("has_lift", raw_lift, N_("同一楼栋在第 %(row)s 行填写的电梯情况不同；一栋楼只能有一个值"), row=first[1])

        for key, limit in TEXT_LIMITS.items():
            text = cell_texts.get(key)
            if text is None or len(text) <= limit:
                continue
            if key == "note":
                error(key, text, N_("备注过长（%(length)s 个字），最多 %(limit)s 个字；备注不会被截断，请精简后重新导入"), length=len(text), limit=limit)
            else:
                error(key, text, N_("内容过长（%(length)s 个字），最多 %(limit)s 个字"), length=len(text), limit=limit)

        for key, problem in problems.items():
            reason_id, params = problem.reason()
            errors.append(RowError.build(excel_row, self.texts.get(key, FIELD_LABELS.get(key, key)), problem.shown, reason_id, **params))
        if errors:
            self.parsed.errors.extend(errors)
            return
        self._note_normalised_legacy_no(excel_row, raw_cells.get("legacy_no"), legacy_no)
        self.parsed.rows.append(
            LedgerRow(
                excel_row=excel_row,
                legacy_no=legacy_no,
                customer_name=cell_texts.get("customer_name") or "",
                phone=normalise_phone(raw_cells.get("phone")),
                community=community,
                building=numbers["building"],
                unit=numbers["unit"],
                room=numbers["room"],
                building_area=building_area,
                usable_area=usable_area,
                has_lift=has_lift,
                user_type=user_type,
                billing_status=status,
                billing_method=method,
                station=station,
                heat_source=cell_texts.get("heat_source") or "",
                prior_arrears=prior_arrears or Decimal("0.00"),
                note=cell_texts.get("note") or "",
                valve_state=valve_state,
            )
        )

    def _note_normalised_legacy_no(self, excel_row, raw, stored):
        """Add a notice when the stored legacy number differs from the cell's text.

        A legacy number finds the account that owes money, so the import report lists every
        change clean_text made to one: trimmed spaces (including U+00A0 and U+3000) and
        full-width or other compatibility characters turned into plain ones by NFKC.
        """
        if not isinstance(raw, str) or raw == stored:
            return
        column = self.texts.get("legacy_no", FIELD_LABELS["legacy_no"])
        trimmed = raw.strip()
        if trimmed != raw:
            self.parsed.notices.append(RowError.build(
                excel_row, column, raw, N_("已去掉原用户编号首尾的空白字符（空格、全角空格或不换行空格），按「%(stored)s」导入"),
                stored=stored,
            ))
        if trimmed != stored:
            self.parsed.notices.append(RowError.build(
                excel_row, column, raw, N_("原用户编号中的全角字符或特殊空格已换成普通字符，按「%(stored)s」导入；若原系统中的编号不同，请改正后重新导入"),
                stored=stored,
            ))
