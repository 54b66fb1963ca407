"""Walk an acquired company from nothing to its first bills through the onboarding pages.

A group administrator's session in headless Chromium: log in, create the company from the
group template, upload a --rows ledger written in the old system's wording, map that
wording to codes, import and bill. The script counts what the person types, picks and
clicks, and times every step, so that the person's time can be estimated as

    inputs × --seconds-per-input  +  the time the person waits for the machine

against the target of one hour. The baseline is openpyxl's read-only parse of the same
file, timed in the same run, because reading the file is work no importer can skip.

    .venv/bin/python benchmarks/onboarding_walkthrough.py --rows 10000

The app runs in this process on a temporary SQLite file (or --database-url, which must be
on 127.0.0.1 or localhost) with Celery tasks run eagerly, as in the demo.
"""

import argparse
import io
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import openpyxl
import sqlalchemy as sa
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import create_app  # noqa: E402
from app.demo import DEMO_PASSWORD, install_demo  # noqa: E402
from app.extensions import db  # noqa: E402
from tests.onboarding.legacy import LEGACY_STATUSES, LEGACY_USER_TYPES, generated_rows, ledger_bytes  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TARGET_SECONDS = 3600
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
COMPANY_FIELDS = [
    ("公司代码", "ZZ"), ("公司编号", "21"), ("公司名称", "中原热力有限公司"), ("城市", "郑州"),
    ("管理员登录名", "zz_admin"), ("管理员姓名", "中原管理员"), ("采暖季", "2025-2026"),
    ("开始日期", "2025-11-15"), ("结束日期", "2026-03-15"), ("居民单价（元/㎡）", "20.00"),
    ("非居民单价（元/㎡）", "30.00"), ("报停收费比例", "0.30"),
]


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000, help="Accounts in the generated ledger (1 to 200,000).")
    parser.add_argument("--seconds-per-input", type=float, default=15.0,
                        help="Seconds a person is assumed to spend per field typed, option picked or button pressed.")
    parser.add_argument("--database-url", help="Database to run on instead of a temporary SQLite file (local only).")
    arguments = parser.parse_args()
    if not 1 <= arguments.rows <= 200_000:
        parser.error(f"--rows {arguments.rows} is out of range; use 1 to 200,000.")
    if arguments.database_url and sa.engine.make_url(arguments.database_url).host not in (None, "127.0.0.1", "localhost"):
        parser.error("--database-url must point at 127.0.0.1 or localhost.")
    return arguments


class Walkthrough:
    """The browser session, counting inputs and timing steps."""

    def __init__(self, page):
        self.page = page
        self.inputs = 0
        self.steps = []

    def step(self, label, action):
        started = time.perf_counter()
        action()
        seconds = time.perf_counter() - started
        self.steps.append((label, seconds))
        print(f"{label:<34} {seconds:8.2f} s")

    def fill(self, label, value):
        self.page.get_by_label(label, exact=True).fill(value)
        self.inputs += 1

    def click(self, locator):
        locator.click()
        self.inputs += 1


def parse_only(content):
    workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    count = sum(1 for sheet in workbook.worksheets for _ in sheet.iter_rows(values_only=True))
    workbook.close()
    return count


def serve(application):
    server = make_server("127.0.0.1", 0, application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_port}"


def walk_through(base_url, content, rows):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(base_url=base_url, locale="zh-CN")
        context.set_default_timeout(600_000)
        context.set_default_navigation_timeout(600_000)
        page = context.new_page()
        walk = Walkthrough(page)

        def log_in():
            page.goto("/login")
            walk.fill("用户名", "hq_admin")
            walk.fill("密码", DEMO_PASSWORD)
            walk.click(page.get_by_role("button", name="登录"))
            page.wait_for_url("**/")

        def create_company():
            walk.click(page.get_by_role("link", name="新公司接入"))
            walk.click(page.locator("#start-onboarding"))
            for label, value in COMPANY_FIELDS:
                walk.fill(label, value)
            walk.click(page.get_by_role("button", name="建立公司"))
            page.locator("#admin-password").wait_for()
            walk.click(page.locator("#to-ledgers"))

        def upload():
            page.set_input_files("#onboarding-upload input[type=file]",
                                 files=[{"name": "legacy.xlsx", "mimeType": XLSX, "buffer": content}])
            walk.inputs += 1
            walk.click(page.get_by_role("button", name="上传"))
            page.locator("#value-mapping").wait_for()

        def map_and_import():
            for text, code in LEGACY_STATUSES.items():
                page.get_by_label(f"供热状态 {text}").select_option(code)
                walk.inputs += 1
            for text, code in LEGACY_USER_TYPES.items():
                page.get_by_label(f"用户类型 {text}").select_option(code)
                walk.inputs += 1
            walk.click(page.get_by_role("button", name="保存对应并导入"))
            page.locator("#onboarding-imports").get_by_text("已导入").wait_for()

        def bill():
            walk.click(page.get_by_role("button", name="生成应收"))
            page.locator("#onboarding-receivables").wait_for()

        walk.step("log in", log_in)
        walk.step("create company from template", create_company)
        walk.step(f"upload {rows:,}-row ledger", upload)
        walk.step("map wording and import", map_and_import)
        walk.step("bill the season", bill)
        summary = page.locator("#onboarding-receivables").inner_text()
        browser.close()
    return walk, summary


def main():
    arguments = parse_arguments()
    logging.basicConfig(level=logging.WARNING)
    rows = generated_rows(arguments.rows)
    content = ledger_bytes(rows)
    started = time.perf_counter()
    parse_only(content)
    parse_seconds = time.perf_counter() - started
    print(f"(baseline) openpyxl read-only parse {parse_seconds:8.2f} s for {arguments.rows:,} rows")

    with tempfile.TemporaryDirectory(prefix="heatflow_walk_") as directory:
        url = arguments.database_url or f"sqlite:///{Path(directory) / 'walk.db'}"
        application = create_app({"SQLALCHEMY_DATABASE_URI": url, "WTF_CSRF_ENABLED": True}, config_name="testing")
        with application.app_context():
            from flask_migrate import upgrade

            upgrade()
            install_demo()
            db.session.remove()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server, base_url = serve(application)
        try:
            walk, summary = walk_through(base_url, content, arguments.rows)
        finally:
            server.shutdown()

    machine = sum(seconds for _, seconds in walk.steps)
    person = walk.inputs * arguments.seconds_per_input + machine
    print(summary)
    print(f"inputs by the person            {walk.inputs}")
    print(f"machine time (person waits)     {machine:8.2f} s")
    print(f"estimated person time           {person:8.2f} s  (inputs × {arguments.seconds_per_input:g} s + waits)")
    print(f"ratio person time / 1 h target  {person / TARGET_SECONDS:.3f}")
    print(f"ratio machine time / parse      {machine / parse_seconds:.2f}")



if __name__ == "__main__":
    main()
