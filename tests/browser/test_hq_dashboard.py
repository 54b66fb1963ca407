"""HQ in the browser: dashboard charts with DB figures, drill-down to an account, as-of date, Excel export, audit explorer."""

import io
from datetime import datetime, time, timedelta

import openpyxl
import pytest
import sqlalchemy as sa

from app.clock import LOCAL_TIME
from app.extensions import db
from app.hq.dashboard import today
from app.hq.services import collection_summary
from app.network.valves import record_valve_change, utcnow
from app.org.models import User
from tests.hq.conftest import SEASON, accounts_of, hq_ledger  # noqa: F401
from tests.processes.conftest import instance_of, make_account, start_request  # noqa: F401

pytestmark = pytest.mark.browser

CHARTS = ("collection", "arrears", "waivers", "processes")


def _cells(page, table, code):
    return page.locator(f'#{table} tr[data-company="{code}"] td').all_inner_texts()


def _column(page, table, label):
    headers = page.locator(f"#{table} thead th").all_inner_texts()
    return headers.index(label)


def test_dashboard_charts_drill_down_as_of_and_export(hq_ledger, demo, page, browser_login, screenshot):
    expected = {r["code"]: r for r in collection_summary(SEASON)["companies"]}
    # A TJ valve closed early yesterday (local time) and opened again now.
    valve_account = accounts_of(demo["TJ"], 5)[4]
    closed_at = datetime.combine(today() - timedelta(days=1), time(1), LOCAL_TIME)
    record_valve_change(valve_account, "closed", closed_at, "process_instance")
    record_valve_change(valve_account, "open", utcnow(), "process_instance")
    db.session.commit()
    browser_login(page, "hq_auditor")
    page.goto(f"/hq/dashboard?season={SEASON}")
    for chart in CHARTS:
        page.locator(f'[data-chart="{chart}"][data-rendered="true"] canvas').first.wait_for()
    received = _column(page, "hq-companies", "本季实收")
    receivable = _column(page, "hq-companies", "本季应收")
    for code in ("TJ", "QD"):
        row = _cells(page, "hq-companies", code)
        assert row[receivable] == expected[code]["receivable"]
        assert row[received] == expected[code]["received"]
    assert _cells(page, "hq-companies", "TJ")[received] == "300.00"
    shut_off = _column(page, "hq-companies", "关栓户数")
    assert _cells(page, "hq-companies", "TJ")[shut_off] == "0"
    assert "异常" in _cells(page, "hq-waivers", "QD")
    screenshot(page, "hq-dashboard")

    # Drill down: company -> community -> account.
    page.locator('#hq-companies tr[data-company="TJ"] a').click()
    page.locator('[data-chart="communities"][data-rendered="true"] canvas').wait_for()
    assert page.locator("#hq-communities tbody tr").count() > 1
    screenshot(page, "hq-dashboard-company")
    page.locator("#hq-communities tbody tr a").first.click()
    first = page.locator("#hq-accounts tbody tr").first
    account_no = first.locator("td").first.inner_text()
    screenshot(page, "hq-dashboard-community")
    first.locator("a").click()
    page.wait_for_url("**/accounts/*")
    assert account_no in page.content()

    # As of yesterday the counter payments of today are not there yet.
    page.goto(f"/hq/dashboard?season={SEASON}")
    page.fill("input[name=as_of]", (today() - timedelta(days=1)).isoformat())
    with page.expect_navigation():
        page.locator("#period").get_by_role("button", name="查询").click()
    page.locator('[data-chart="collection"][data-rendered="true"] canvas').wait_for()
    assert _cells(page, "hq-companies", "TJ")[received] == "0.00"
    assert _cells(page, "hq-companies", "TJ")[shut_off] == "1"
    screenshot(page, "hq-dashboard-as-of")

    # Export the company view of today and read it back.
    page.goto(f"/hq/dashboard?season={SEASON}")
    with page.expect_download() as download:
        page.locator("section.card", has=page.locator("#hq-companies")).get_by_role("link", name="导出 Excel").click()
    sheet = openpyxl.load_workbook(io.BytesIO(open(download.value.path(), "rb").read())).active
    values = list(sheet.values)
    header = next(i for i, row in enumerate(values) if row and row[0] == "公司")
    columns = values[header]
    by_name = {row[0]: row for row in values[header + 1:]}
    tj = by_name[demo["TJ"].name]
    assert f"{tj[columns.index('本季实收')]:.2f}" == "300.00"
    assert f"{tj[columns.index('本季应收')]:.2f}" == expected["TJ"]["receivable"]


@pytest.fixture
def qd_request(make_account, login):
    """A 报停 request filed by qd_clerk through the test client, before the live server turns CSRF checks on."""
    account = make_account("QD", "88.00")
    assert start_request(login("qd_clerk"), account.id).status_code in (302, 303)
    return account, instance_of(account.id, "suspension")


def test_audit_explorer_finds_instance_history(qd_request, page, browser_login, screenshot):
    account, instance = qd_request
    browser_login(page, "hq_auditor")
    page.goto("/hq/audit")
    page.get_by_label("公司").select_option("QD")
    page.get_by_label("流程").select_option("suspension")
    page.get_by_label("用户编号").fill(account.account_no)
    with page.expect_navigation():
        page.locator("#audit-filters").get_by_role("button", name="查询").click()
    rows = page.locator("#audit-results tbody tr")
    assert rows.count() == 1
    assert rows.first.get_attribute("data-instance") == str(instance.id)
    screenshot(page, "hq-audit")
    rows.first.locator("a").click()
    page.locator('#instance-diagram[data-loaded="true"]').wait_for()
    assert "审计链校验通过" in page.locator("#chain-status").inner_text()
    assert page.locator("#instance-diagram svg").count() >= 1
    screenshot(page, "hq-audit-instance")


def test_dashboard_in_english(hq_ledger, demo, page, browser_login, screenshot):
    """An English HQ user sees the tables, the chart axes and the legends in English."""
    db.session.execute(sa.update(User).where(User.username == "hq_auditor").values(locale="en"))
    db.session.commit()
    browser_login(page, "hq_auditor")
    page.goto(f"/hq/dashboard?season={SEASON}")
    for chart in CHARTS:
        page.locator(f'[data-chart="{chart}"][data-rendered="true"] canvas').first.wait_for()
    assert page.locator("main h1").inner_text().startswith("Group dashboard")
    received = _column(page, "hq-companies", "Collected this season")
    assert _cells(page, "hq-companies", "TJ")[received] == "300.00"
    assert "Outlier" in _cells(page, "hq-waivers", "QD")
    labels = page.evaluate("JSON.parse(document.getElementById('hq-chart-labels').textContent)")
    assert labels["rate_axis"] == "Collection rate %"
    screenshot(page, "hq-dashboard-english")


# For every legend item of a chart: its box and how far its label's ink reaches when drawn on a
# canvas placed in the chart's container, in the item's own font. The ink is scanned pixel by pixel:
# ECharts measures text on a detached canvas, and for a generic family the page's lang can pick a
# wider CJK fallback font on the drawn canvas than on the measuring one.
LEGEND_ITEMS_JS = """(name) => {
  const chart = window.hqCharts[name];
  const view = chart.getViewOfComponentModel(chart.getModel().getComponent('legend'));
  const canvas = document.createElement('canvas');
  canvas.style.display = 'none';
  chart.getDom().appendChild(canvas);
  canvas.width = 800;
  canvas.height = 40;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const ink = (label, font) => {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.font = font;
    ctx.textBaseline = 'middle';
    ctx.fillText(label, 0, 20);
    const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    for (let x = canvas.width - 1; x >= 0; x -= 1) {
      for (let y = 0; y < canvas.height; y += 1) if (pixels[(y * canvas.width + x) * 4 + 3] > 0) return x + 1;
    }
    return 0;
  };
  const items = view.getContentGroup().children().map((item) => {
    const text = item.children().find((el) => el.style && typeof el.style.text === 'string');
    const box = item.getBoundingRect();
    return { label: text.style.text, x: item.x + box.x, y: item.y + box.y, height: box.height,
             textLeft: item.x + (text.style.x || 0), drawn: ink(text.style.text, text.style.font) };
  });
  canvas.remove();
  return items;
}"""


def _legend_overlaps(page, chart):
    """Return the pairs of legend items in one row whose drawn label runs into the next item."""
    items = sorted(page.evaluate(LEGEND_ITEMS_JS, chart), key=lambda i: (round(i["y"]), i["x"]))
    overlaps = []
    for left, right in zip(items, items[1:]):
        same_row = abs(left["y"] - right["y"]) < left["height"] / 2
        if same_row and left["textLeft"] + left["drawn"] > right["x"]:
            overlaps.append((left["label"], right["label"]))
    return overlaps


def _box(page, selector):
    return page.evaluate(
        """(sel) => { const el = document.querySelector(sel); const r = el.getBoundingClientRect();
                    return { width: r.width, height: r.height, scrollWidth: el.scrollWidth, clientWidth: el.clientWidth,
                             overflowX: getComputedStyle(el).overflowX }; }""",
        selector,
    )


@pytest.mark.parametrize("locale", ["zh", "en"])
def test_dashboard_layout_fits_desktop_and_phone(hq_ledger, demo, page, browser_login, screenshot, locale):
    """Legends never overlap, the waiver table stays in its card, and the top-bar menu fits at 1366 px."""
    db.session.execute(sa.update(User).where(User.username.in_(["hq_auditor", "hq_admin"])).values(locale=locale))
    db.session.commit()
    browser_login(page, "hq_auditor")
    for width, height in ((1366, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"/hq/dashboard?season={SEASON}")
        for chart in CHARTS:
            page.locator(f'[data-chart="{chart}"][data-rendered="true"] canvas').first.wait_for()
        screenshot(page, f"hq-dashboard-{locale}-{width}")
        for chart in ("collection", "arrears", "waivers", "processes"):
            assert _legend_overlaps(page, chart) == [], (width, chart)
        # The waiver table scrolls inside its card instead of running past it or squeezing its headers.
        wrapper = _box(page, "#hq-waivers-scroll")
        card = _box(page, "section.card:has(#hq-waivers)")
        assert wrapper["width"] <= card["width"]
        assert wrapper["scrollWidth"] <= wrapper["clientWidth"] or wrapper["overflowX"] in ("auto", "scroll")
        font = page.evaluate("parseFloat(getComputedStyle(document.querySelector('#hq-waivers th')).fontSize)")
        header_heights = page.locator("#hq-waivers thead th").evaluate_all("ths => ths.map((th) => th.clientHeight)")
        assert max(header_heights) < 4 * font, header_heights
        if width == 1366:
            _assert_menu_fits(page, width)
    # The group administrator has the longest menu.
    page.context.clear_cookies()
    browser_login(page, "hq_admin")
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"/hq/dashboard?season={SEASON}")
    screenshot(page, f"hq-admin-topbar-{locale}")
    _assert_menu_fits(page, 1366)


def _assert_menu_fits(page, width):
    """The top-bar menu wraps instead of scrolling, so every item ends inside the window."""
    menu = _box(page, "header.topbar nav")
    assert menu["scrollWidth"] <= menu["clientWidth"], width
    rights = page.locator("header.topbar nav a").evaluate_all("links => links.map((link) => link.getBoundingClientRect().right)")
    assert max(rights) <= width, width


# The drawn boxes of one chart's axis labels, per axis, in chart pixels. Each label is a
# zrender Text element that AxisBuilder marks with anid "label_<tick>"; labels that ECharts
# hid (hideOverlap, interval) are ignored and not drawn.
AXIS_LABEL_BOXES_JS = """(name) => {
  const chart = window.hqCharts[name];
  const axes = [];
  for (const type of ['xAxis', 'yAxis']) {
    chart.getModel().eachComponent(type, (axisModel) => {
      const boxes = [];
      chart.getViewOfComponentModel(axisModel).group.traverse((el) => {
        if (typeof el.anid !== 'string' || !el.anid.startsWith('label_') || el.ignore || el.invisible) return;
        const rect = el.getBoundingRect().clone();
        rect.applyTransform(el.getComputedTransform());
        boxes.push({ text: el.style.text, x: rect.x, y: rect.y, width: rect.width, height: rect.height });
      });
      axes.push({ axis: `${type}${axisModel.componentIndex}`, boxes });
    });
  }
  return axes;
}"""


def _axis_label_overlaps(page, chart):
    """Return (axis, label, label) for each two labels of one axis whose boxes intersect."""
    overlaps = []
    for axis in page.evaluate(AXIS_LABEL_BOXES_JS, chart):
        boxes = axis["boxes"]
        for i, first in enumerate(boxes):
            for second in boxes[i + 1:]:
                apart_x = first["x"] + first["width"] <= second["x"] or second["x"] + second["width"] <= first["x"]
                apart_y = first["y"] + first["height"] <= second["y"] or second["y"] + second["height"] <= first["y"]
                if not (apart_x or apart_y):
                    overlaps.append((axis["axis"], first["text"], second["text"]))
    return overlaps


@pytest.mark.parametrize("width, height", [(390, 844), (1366, 900)])
def test_company_axis_labels_never_overlap(hq_ledger, demo, page, browser_login, width, height):
    """The arrears-by-age and waiver charts show every company name apart from the others."""
    browser_login(page, "hq_auditor")
    page.set_viewport_size({"width": width, "height": height})
    page.goto(f"/hq/dashboard?season={SEASON}")
    names = [demo[code].name for code in ("TJ", "QD", "SJZ")]
    for chart in ("arrears", "waivers"):
        page.locator(f'[data-chart="{chart}"][data-rendered="true"] canvas').first.wait_for()
        labels = [box["text"] for axis in page.evaluate(AXIS_LABEL_BOXES_JS, chart) for box in axis["boxes"]]
        # Each billed company keeps a label of its own (the waiver outlier carries a ⚠ after its name).
        for name in names:
            assert sum(1 for label in labels if label.startswith(name)) == 1, (chart, name, labels)
        assert _axis_label_overlaps(page, chart) == [], (width, chart)
