"""Time a large ledger import against openpyxl's read-only parse of the same file.

Writes a ledger .xlsx in the layout of tests/fixtures/ledgers/TJ-shared.xlsx (title row,
header, one row per account, total row, 热源 and 换热站 sheets) with --rows accounts, then
times:

  parse       openpyxl read-only load plus iterating every row of every sheet
  SQLite      import_ledger into company TJ of a fresh migrated SQLite file
  PostgreSQL  import_ledger into company TJ of a fresh database heatflow_bench_<random>

Both databases are removed at the end, also after a failure.

    .venv/bin/python benchmarks/ledger_import.py --rows 100000
"""

import cProfile
import io
import pstats
import re
import tempfile
import zipfile
from pathlib import Path

import openpyxl

from common import argument_parser, check_range, demo_app, parse_local, scratch_database, timed

from app.ledger.services import find_company, import_ledger  # noqa: E402

COMPANY = "TJ"
HEADER = ["原用户编号", "户主姓名", "联系电话", "小区名称", "楼号", "单元", "房号", "建筑面积", "用户类型", "供热状态",
          "换热站", "热源", "往年欠费", "备注"]
STATIONS = {"津南一站": "津南热电厂", "津南二站": "津南热电厂", "咸水沽站": "津南热电厂", "葛沽站": "葛沽燃气锅炉房"}
HEAT_SOURCES = {"津南热电厂": "热电联产", "葛沽燃气锅炉房": "燃气锅炉"}
ROOMS_PER_UNIT = 20
UNITS_PER_BUILDING = 5
BUILDINGS_PER_COMMUNITY = 20
# Fewer rows would measure start-up more than import; more would exceed LEDGER_MAX_ROWS (200,000).
MAX_ROWS = 200_000


def parse_arguments():
    parser = argument_parser(__doc__)
    parser.add_argument("--rows", type=int, default=100_000, help="account rows in the generated ledger (default 100,000)")
    parser.add_argument("--profile", choices=["sqlite", "postgres"], help="print the 25 costliest functions of that import")
    arguments = parse_local(parser)
    check_range(parser, "--rows", arguments.rows, 1, MAX_ROWS)
    return arguments


def ledger_row(number):
    """Return the cells of account `number` (0-based), mixing the cell formats real ledgers use."""
    room_index = number % ROOMS_PER_UNIT
    unit = number // ROOMS_PER_UNIT % UNITS_PER_BUILDING + 1
    building = number // (ROOMS_PER_UNIT * UNITS_PER_BUILDING) % BUILDINGS_PER_COMMUNITY + 1
    community = number // (ROOMS_PER_UNIT * UNITS_PER_BUILDING * BUILDINGS_PER_COMMUNITY) + 1
    room = (room_index // 2 + 1) * 100 + room_index % 2 + 1
    area_hundredths = 4000 + number * 7919 % 15000
    area = f"{area_hundredths // 100}.{area_hundredths % 100:02d}"
    station = list(STATIONS)[number % len(STATIONS)]
    return [
        f"TJ-{number + 1:07d}",
        f"用户{number % 997}",
        f"1{number % 10**10:010d}",
        f"压测小区{community}",
        f"{building}号楼" if number % 2 else building,
        f"{unit}单元" if number % 3 else unit,
        str(room),
        float(area) if number % 4 else area,
        "非居民" if number % 20 == 0 else ("低保" if number % 20 == 1 else "住宅"),
        "报停" if number % 12 == 0 else ("未入网" if number % 50 == 1 else "正常"),
        station,
        STATIONS[station],
        f"{number % 3000 + 100}.50" if number % 20 == 7 else None,
        "已过户" if number % 9 == 0 else None,
    ]


def write_ledger(rows):
    """Return the bytes of a ledger workbook with `rows` account rows."""
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("用户台账")
    sheet.append(["津南热力有限公司 2025-2026采暖季 热用户台账"])
    sheet.append(HEADER)
    for number in range(rows):
        sheet.append(ledger_row(number))
    sheet.append(["合计"])
    sources = workbook.create_sheet("热源")
    sources.append(["热源名称", "热源类型"])
    for name, kind in HEAT_SOURCES.items():
        sources.append([name, kind])
    stations = workbook.create_sheet("换热站")
    stations.append(["换热站名称", "热源名称"])
    for name, source in STATIONS.items():
        stations.append([name, source])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return with_dimensions(buffer.getvalue())


def with_dimensions(content):
    """Return `content` with each sheet's used range recorded, as Excel writes it.

    openpyxl's write-only mode records none, and the upload check rejects a large sheet
    without one (app/uploads.py), so the file would not model what a company sends.
    """
    source = zipfile.ZipFile(io.BytesIO(content))
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as target:
        for member in source.infolist():
            data = source.read(member)
            if member.filename.startswith("xl/worksheets/sheet"):
                rows = re.findall(rb'<row r="(\d+)"', data)
                columns = re.findall(rb'<c r="([A-Z]+)\d+"', data)
                last_column = max(columns, key=lambda name: (len(name), name)) if columns else b"A"
                dimension = b'<dimension ref="A1:' + last_column + (rows[-1] if rows else b"1") + b'"/>'
                data = data.replace(b"</sheetPr>", b"</sheetPr>" + dimension, 1)
            target.writestr(member, data)
    return output.getvalue()


def parse_only(content):
    """Load `content` read-only and iterate every row of every sheet; return the row count."""
    workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    count = 0
    for sheet in workbook.worksheets:
        for _ in sheet.iter_rows(values_only=True):
            count += 1
    workbook.close()
    return count


def import_into(url, content, label, profile):
    """Migrate the database at `url`, install the demo and time import_ledger; return seconds."""
    with demo_app(url):
        company = find_company(COMPANY)
        profiler = cProfile.Profile() if profile else None

        def run():
            if profiler:
                profiler.enable()
            try:
                return import_ledger(company, content, "benchmark.xlsx")
            finally:
                if profiler:
                    profiler.disable()

        result, seconds = timed(f"import_ledger on {label}", run)
        if not result.ok:
            raise RuntimeError(f"The generated ledger was rejected: {result.summary()}")
        print(f"  {result.summary()}")
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    return seconds


def main():
    arguments = parse_arguments()
    content, _ = timed(f"write {arguments.rows:,}-row ledger", lambda: write_ledger(arguments.rows))
    print(f"  {len(content) / 1e6:.1f} MB")
    row_count, parse_seconds = timed("(baseline) openpyxl read-only parse", lambda: parse_only(content))
    print(f"  {row_count:,} rows in all sheets")

    with tempfile.TemporaryDirectory(prefix="heatflow_bench_") as directory:
        sqlite_url = f"sqlite:///{Path(directory) / 'bench.db'}"
        sqlite_seconds = import_into(sqlite_url, content, "SQLite", arguments.profile == "sqlite")

    with scratch_database(arguments.admin_url) as url:
        postgres_seconds = import_into(url, content, "PostgreSQL", arguments.profile == "postgres")

    print()
    print(f"ratio SQLite / parse     {sqlite_seconds / parse_seconds:.2f}")
    print(f"ratio PostgreSQL / parse {postgres_seconds / parse_seconds:.2f}")


if __name__ == "__main__":
    main()
