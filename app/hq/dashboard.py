"""Figures of the HQ dashboards, each exact as of the end of a chosen local day.

Money views read the daily totals (app/hq/models.py) and sum the days up to the chosen
one; only the account list of one community reads the ledger itself. Every view returns
`columns` (key, Chinese label) and `rows` for its table and its Excel export, plus what
its chart needs.

Received (实收) is the season's payments less refunds and reversals; money paid beyond
what was owed is posted as a credit line and is not in it. Receivable (应收) is the
season's charges, re-ratings, settlements, waivers and write-offs. Arrears (欠费) are
receivable less received, and also count prior arrears taken over at import.

Shut-off valves (关栓户数) are the accounts whose valve was closed or sealed at the end of
the chosen day, read from the valve history (app/network/valves.py).
"""

from collections import defaultdict
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import sqlalchemy as sa
from flask import has_request_context, request
# Named gettext, not _, because this module unpacks unused values into _.
from flask_babel import gettext

from app.billing.models import RECEIVABLE_KINDS, RECEIVED_KINDS, LedgerEntry
from app.billing.seasons import default_season_name
from app.clock import LOCAL_TIME
from app.extensions import db
from app.hq.models import NO_SEASON, CommunityDailyTotal, CompanyDailyTotal, StepDailyTotal
from app.hq.totals import epoch_seconds
from app.i18n import N_, translate_label
from app.money import ZERO, Money
from app.network.models import USER_TYPES, VALVE_STATES, Account, Building, Community, Unit
from app.network.valves import shut_off_by_community, shut_off_counts, valve_states_at
from app.org.models import Company
from app.processes.models import PROCESS_TYPES, HumanTask
from app.processes.step_names import shown_step_name
from app.tariffs.models import Season

HUNDRED = Decimal(100)
ARREARS_KINDS = (*RECEIVABLE_KINDS, *RECEIVED_KINDS, "prior_arrears")
CHARGED_KINDS = ("charge", "settlement")
AGE_BUCKETS = {"current": N_("本季"), "previous": N_("上季"), "older": N_("往季及更早")}
# Robust z-score (Iglewicz and Hoaglin): 0.6745 (x - median) / MAD; above 3.5 is an outlier.
OUTLIER_Z = Decimal("3.5")
MAD_SCALE = Decimal("0.6745")
# When more than half the values are equal the MAD is 0; the mean absolute deviation,
# scaled by 1.2533 to estimate the same spread, takes its place.
MEAN_AD_SCALE = Decimal("1.2533")
# Scores beyond this are shown as this. Near-equal rates give a spread so small that one
# distant rate scores beyond what Decimal can round to 0.01; it is an outlier either way.
Z_LIMIT = Decimal("9999.99")
MAX_CHART_DAYS = 400
WAIVER_RATE_PLACES = Decimal("0.001")
SECONDS_PER_HOUR = Decimal(3600)


# Earliest and latest as-of dates the views accept.
AS_OF_RANGE = (date(1900, 1, 1), date(2999, 12, 31))


class DashboardInputError(ValueError):
    """A query parameter of a dashboard view is invalid; the message names it and the fix."""


def today():
    return datetime.now(LOCAL_TIME).date()


def parse_as_of(value):
    """Parse the as-of date from `as_of=YYYY-MM-DD`; today (local) when absent.

    Dates outside AS_OF_RANGE are rejected, because the views step a year back and a day
    forward from the as-of date, which leaves Python's date range near year 1 and 9999.
    """
    if not value:
        return today()
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise DashboardInputError(gettext("截止日期「%(value)s」无效，请按 2026-01-31 的格式填写。", value=value[:20])) from None
    first, last = AS_OF_RANGE
    if not first <= day <= last:
        raise DashboardInputError(gettext(
            "截止日期「%(value)s」超出范围；请填写 %(first)s 至 %(last)s 之间的日期。",
            value=value.strip()[:20], first=first.isoformat(), last=last.isoformat(),
        ))
    return day


def parse_season(value):
    """Validate a season name such as 2025-2026 and return it stripped."""
    value = (value or "").strip()
    parts = value.split("-")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 4 for p in parts) or int(parts[1]) != int(parts[0]) + 1:
        raise DashboardInputError(gettext("供暖季「%(value)s」无效，请按 2025-2026 的格式填写。", value=value[:20]))
    return value


def previous_season_name(name):
    first = int(name[:4])
    return f"{first - 1}-{first}"


def default_season(as_of):
    """Return the group's default season as of a date, by the rule every page shares (app.billing.seasons)."""
    return default_season_name(as_of)


def end_of_day_utc(as_of):
    """Return the UTC instant at which the local day `as_of` ends."""
    return datetime.combine(as_of + timedelta(days=1), time.min, LOCAL_TIME).astimezone(timezone.utc)


def year_earlier(day):
    try:
        return day.replace(year=day.year - 1)
    except ValueError:
        return day.replace(year=day.year - 1, day=28)


def rate(part, whole, places=Decimal("0.01")):
    """`part` in percent of `whole`, rounded to `places`; None when `whole` is zero."""
    if not whole:
        return None
    return (part * HUNDRED / whole).quantize(places)


def robust_z_scores(values):
    """Robust z-score of each value (Decimal), rounded to 0.01; None for a missing value."""
    present = sorted(v for v in values if v is not None)
    zero = Decimal("0.00")
    if len(present) < 3:
        return [None if v is None else zero for v in values]
    median = _median(present)
    deviations = [abs(v - median) for v in present]
    mad = _median(sorted(deviations))
    if mad:
        scale = mad / MAD_SCALE
    else:
        scale = MEAN_AD_SCALE * sum(deviations) / len(deviations)
    if not scale:
        return [None if v is None else zero for v in values]
    return [None if v is None else _bounded((v - median) / scale) for v in values]


def _bounded(z):
    return max(-Z_LIMIT, min(Z_LIMIT, z)).quantize(Decimal("0.01"))


def _median(ordered):
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def companies():
    """Return the subsidiaries in number order, without headquarters."""
    return db.session.scalars(sa.select(Company).where(Company.is_headquarters.is_(False)).order_by(Company.number)).all()


def company_by_code(code):
    company = db.session.scalar(sa.select(Company).where(Company.code == code, Company.is_headquarters.is_(False)))
    if company is None:
        raise LookupError(gettext("没有代码为「%(code)s」的分公司。", code=code[:16]))
    return company


def _seasons():
    """Map company id -> {season name: Season}."""
    seasons = defaultdict(dict)
    for season in db.session.scalars(sa.select(Season)):
        seasons[season.company_id][season.name] = season
    return seasons


def _amount(expression):
    return sa.type_coerce(sa.func.coalesce(sa.func.sum(expression), 0), Money())


def _company_totals(as_of):
    """Map (company id, season id, category, kind) -> [amount, entries] up to the end of `as_of`.

    Within a web request the result is cached, because the dashboard page builds several
    views from the same totals.
    """
    cache = request.environ.setdefault("heatflow.hq_company_totals", {}) if has_request_context() else {}
    if as_of in cache:
        return cache[as_of]
    t = CompanyDailyTotal
    statement = (
        sa.select(t.company_id, t.season_id, t.category, t.kind, _amount(t.amount), sa.func.sum(t.entries))
        .where(t.day <= as_of).group_by(t.company_id, t.season_id, t.category, t.kind)
    )
    totals = {(c, s, cat, k): (amount, entries) for c, s, cat, k, amount, entries in db.session.execute(statement)}
    cache[as_of] = totals
    return totals


def _sum(totals, kinds, **match):
    """Sum amounts and entries of `totals` rows whose kind is in `kinds` and whose key fields match."""
    amount, entries = ZERO, 0
    for (company_id, season_id, category, kind), (value, count) in totals.items():
        if kind not in kinds:
            continue
        if "company_id" in match and company_id != match["company_id"]:
            continue
        if "season_id" in match and season_id != match["season_id"]:
            continue
        if "category" in match and category != match["category"]:
            continue
        amount += value
        entries += count
    return amount, entries


def company_view(season_name, as_of):
    """Build the company table: billed accounts, receivable, received and arrears of the season, the rate now and a year earlier."""
    seasons = _seasons()
    totals = _company_totals(as_of)
    earlier = _company_totals(year_earlier(as_of))
    shut_off = shut_off_counts(end_of_day_utc(as_of))
    previous_name = previous_season_name(season_name)
    rows = []
    group = {"receivable": ZERO, "received": ZERO, "arrears": ZERO, "all_arrears": ZERO, "billed_accounts": 0, "shut_off": 0}
    for company in companies():
        season = seasons[company.id].get(season_name)
        previous = seasons[company.id].get(previous_name)
        receivable = received = previous_rate = None
        billed = 0
        if season is not None:
            receivable, _ = _sum(totals, RECEIVABLE_KINDS, company_id=company.id, season_id=season.id)
            paid, _ = _sum(totals, RECEIVED_KINDS, company_id=company.id, season_id=season.id)
            received = -paid
            _, billed = _sum(totals, ("charge",), company_id=company.id, season_id=season.id)
        if previous is not None:
            earlier_receivable, _ = _sum(earlier, RECEIVABLE_KINDS, company_id=company.id, season_id=previous.id)
            earlier_paid, _ = _sum(earlier, RECEIVED_KINDS, company_id=company.id, season_id=previous.id)
            previous_rate = rate(-earlier_paid, earlier_receivable)
        all_arrears, _ = _sum(totals, ARREARS_KINDS, company_id=company.id)
        rows.append({
            "code": company.code, "name": company.name, "billed_accounts": billed,
            "receivable": receivable or ZERO, "received": received or ZERO,
            "arrears": (receivable or ZERO) - (received or ZERO), "collection_rate": rate(received or ZERO, receivable or ZERO),
            "previous_rate": previous_rate, "all_arrears": all_arrears, "shut_off": shut_off.get(company.id, 0),
        })
        for key in ("receivable", "received", "arrears", "all_arrears"):
            group[key] += rows[-1][key]
        group["billed_accounts"] += billed
        group["shut_off"] += rows[-1]["shut_off"]
    rows.append({
        "code": "", "name": gettext("集团合计"), **group, "collection_rate": rate(group["received"], group["receivable"]),
        "previous_rate": None,
    })
    return {
        "title": gettext("分公司收费概况"),
        "columns": [
            ("name", gettext("公司")), ("billed_accounts", gettext("开票户数")), ("receivable", gettext("本季应收")), ("received", gettext("本季实收")),
            ("arrears", gettext("本季欠费")), ("collection_rate", gettext("收费率 %")), ("previous_rate", gettext("上季同期收费率 %")),
            ("all_arrears", gettext("累计欠费（含往季）")), ("shut_off", gettext("关栓户数")),
        ],
        "rows": rows,
    }


def collection_by_day(season_name, as_of):
    """Build the cumulative collection rate per company and day, this season and last season one year earlier."""
    seasons = _seasons()
    previous_name = previous_season_name(season_name)
    current_ids = {s.id: cid for cid, named in seasons.items() if (s := named.get(season_name))}
    previous_ids = {s.id: cid for cid, named in seasons.items() if (s := named.get(previous_name))}
    t = CompanyDailyTotal
    received_case = sa.case((t.kind.in_(RECEIVED_KINDS), t.amount), else_=0)
    receivable_case = sa.case((t.kind.in_(RECEIVABLE_KINDS), t.amount), else_=0)
    statement = (
        sa.select(t.season_id, t.day, _amount(receivable_case), _amount(received_case))
        .where(t.season_id.in_(list(current_ids) + list(previous_ids)), t.kind.in_(RECEIVABLE_KINDS + RECEIVED_KINDS),
               t.day <= as_of)
        .group_by(t.season_id, t.day)
    )
    daily = defaultdict(dict)
    first_day = as_of
    for season_id, day, due, paid in db.session.execute(statement):
        if season_id in current_ids:
            daily[("current", current_ids[season_id])][day] = (due, -paid)
            first_day = min(first_day, day)
        else:
            if day > year_earlier(as_of):
                continue
            moved = day.replace(year=day.year + 1) if not (day.month == 2 and day.day == 29) else day.replace(year=day.year + 1, day=28)
            daily[("previous", previous_ids[season_id])][moved] = (due, -paid)
            first_day = min(first_day, moved)
    first_day = max(first_day, as_of - timedelta(days=MAX_CHART_DAYS - 1))
    days = [first_day + timedelta(days=n) for n in range((as_of - first_day).days + 1)]
    series = []
    rows = []
    for company in companies():
        for season_key, label in (("current", season_name), ("previous", previous_name)):
            per_day = daily.get((season_key, company.id))
            if not per_day:
                continue
            due = paid = ZERO
            for day in sorted(d for d in per_day if d < first_day):
                due += per_day[day][0]
                paid += per_day[day][1]
            rates = []
            for day in days:
                if day in per_day:
                    due += per_day[day][0]
                    paid += per_day[day][1]
                rates.append(rate(paid, due))
            series.append({"company": company.code, "name": f"{company.name} {label}", "season": season_key, "rates": rates})
            rows.append({"name": company.name, "season": label, "receivable": due, "received": paid, "collection_rate": rate(paid, due)})
    return {
        "title": gettext("收费率累计走势"),
        "columns": [("name", gettext("公司")), ("season", gettext("供暖季")), ("receivable", gettext("应收")), ("received", gettext("实收")),
                    ("collection_rate", gettext("收费率 %"))],
        "rows": rows,
        "chart": {"days": [d.isoformat() for d in days], "series": series},
    }


def _age_bucket(season_id, season_name, names):
    if season_id == NO_SEASON:
        return "older"
    name = names.get(season_id, "")
    if name == season_name:
        return "current"
    if name == previous_season_name(season_name):
        return "previous"
    if name > season_name:
        return None
    return "older"


def arrears_view(season_name, as_of):
    """Arrears per company by age (this season, last season, older) and by user type."""
    names = {s.id: s.name for s in db.session.scalars(sa.select(Season))}
    totals = _company_totals(as_of)
    by_company = defaultdict(lambda: defaultdict(lambda: ZERO))
    for (company_id, season_id, category, kind), (amount, _) in totals.items():
        if kind not in ARREARS_KINDS:
            continue
        bucket = _age_bucket(season_id, season_name, names)
        if bucket is None:
            continue
        by_company[company_id][bucket] += amount
        by_company[company_id][category] += amount
        by_company[company_id]["total"] += amount
    rows = []
    for company in companies():
        figures = by_company[company.id]
        rows.append({"code": company.code, "name": company.name, **{k: figures[k] for k in (*AGE_BUCKETS, *USER_TYPES, "total")}})
    ages = {key: translate_label(label) for key, label in AGE_BUCKETS.items()}
    categories = {key: translate_label(label) for key, label in USER_TYPES.items()}
    return {
        "title": gettext("欠费账龄与用户类别"),
        "columns": [("name", gettext("公司")), *ages.items(), *categories.items(), ("total", gettext("欠费合计"))],
        "rows": rows,
        "chart": {"ages": ages, "categories": categories},
    }


def _late_fee_waiver_columns():
    return [("late_fee_waiver_amount", gettext("滞纳金减免金额")), ("late_fee_waiver_count", gettext("滞纳金减免笔数")),
            ("late_fee_waiver_rate", gettext("滞纳金减免率 %"))]


def _late_fee_waiver_figures(waived, count, posted):
    """Late-fee waiver columns of a row: `waived` is the (negative) sum of late_fee_waiver lines, `posted` of late_fee lines."""
    return {"late_fee_waiver_amount": -waived, "late_fee_waiver_count": int(count),
            "late_fee_waiver_rate": rate(-waived, posted, WAIVER_RATE_PLACES)}


def waiver_view(season_name, as_of):
    """Waivers of the season per company: charge waivers with their share of the charged amount and the
    outlier flag, and late-fee waivers with their share of the posted late fees."""
    seasons = _seasons()
    totals = _company_totals(as_of)
    rows = []
    for company in companies():
        season = seasons[company.id].get(season_name)
        amount = charged = late_fee_waived = late_fees = ZERO
        count = late_fee_waivers = 0
        if season is not None:
            amount, count = _sum(totals, ("waiver",), company_id=company.id, season_id=season.id)
            charged, _ = _sum(totals, CHARGED_KINDS, company_id=company.id, season_id=season.id)
            late_fee_waived, late_fee_waivers = _sum(totals, ("late_fee_waiver",), company_id=company.id, season_id=season.id)
            late_fees, _ = _sum(totals, ("late_fee",), company_id=company.id, season_id=season.id)
        rows.append({"code": company.code, "name": company.name, "amount": -amount, "count": count,
                     "waiver_rate": rate(-amount, charged, WAIVER_RATE_PLACES), "ratio": -amount / charged if charged else None,
                     **_late_fee_waiver_figures(late_fee_waived, late_fee_waivers, late_fees)})
    _flag_outliers(rows)
    return {
        "title": gettext("减免金额与笔数"),
        "columns": [("name", gettext("公司")), ("amount", gettext("减免金额")), ("count", gettext("减免笔数")), ("waiver_rate", gettext("减免率 %")),
                    ("z_score", gettext("稳健 z 值")), ("outlier_label", gettext("异常")), *_late_fee_waiver_columns()],
        "rows": rows,
        "rule": gettext(
            "减免率 = 减免金额 ÷ 本季应收热费。稳健 z 值 = 0.6745 ×（减免率 − 中位数）÷ 绝对中位差；|z| > 3.5 标为异常。"
            "滞纳金减免率 = 滞纳金减免金额 ÷ 本季已计滞纳金，不计入异常判断。"
        ),
    }


def _flag_outliers(rows):
    """Set z_score, outlier and outlier_label from each row's unrounded waiver `ratio` (removed)."""
    for row, z in zip(rows, robust_z_scores([row.pop("ratio") for row in rows])):
        row["z_score"] = z
        row["outlier"] = z is not None and abs(z) > OUTLIER_Z
        row["outlier_label"] = gettext("异常") if row["outlier"] else ""


def process_view(as_of):
    """Build the step table: per company, process and step, tasks done with their mean wait, and tasks open at the date.

    Completed tasks come from the per-step daily totals. Tasks open at the end of the day
    (created before it and not completed by then, cancelled ones left out) come from the
    task table through its completion-time index.
    """
    end = end_of_day_utc(as_of)
    steps = {}
    t = StepDailyTotal
    done = db.session.execute(
        sa.select(t.company_id, t.process_type, t.task_spec_name, sa.func.max(t.title), sa.func.sum(t.completed),
                  sa.func.sum(t.wait_seconds))
        .where(t.day <= as_of).group_by(t.company_id, t.process_type, t.task_spec_name)
    )
    for company_id, process_type, spec, title, completed, wait_seconds in done:
        steps[(company_id, process_type, spec)] = [title, int(completed), Decimal(int(wait_seconds)), 0, Decimal(0)]
    still_open = sa.and_(
        HumanTask.created_at < end, HumanTask.status != "cancelled",
        sa.or_(HumanTask.completed_at.is_(None), HumanTask.completed_at >= end),
    )
    waiting = db.session.execute(
        sa.select(HumanTask.company_id, HumanTask.process_type, HumanTask.task_spec_name, sa.func.max(HumanTask.title),
                  sa.func.count(), sa.func.sum(epoch_seconds(db.engine.dialect.name, HumanTask.created_at)))
        .where(still_open).group_by(HumanTask.company_id, HumanTask.process_type, HumanTask.task_spec_name)
    )
    for company_id, process_type, spec, title, count, created_sum in waiting:
        step = steps.setdefault((company_id, process_type, spec), [title, 0, Decimal(0), 0, Decimal(0)])
        step[3] = int(count)
        step[4] = Decimal(str(created_sum))
    names = {c.id: c for c in companies()}
    end_epoch = Decimal(int(end.timestamp()))
    rows = []
    for (company_id, process_type, _spec), (title, completed, wait_seconds, open_count, created_sum) in steps.items():
        if company_id not in names:
            continue
        mean_wait = (wait_seconds / completed / SECONDS_PER_HOUR).quantize(Decimal("0.1")) if completed else None
        mean_age = (
            ((end_epoch * open_count - created_sum) / open_count / SECONDS_PER_HOUR).quantize(Decimal("0.1")) if open_count else None
        )
        company = names[company_id]
        rows.append({
            "code": company.code, "name": company.name, "number": company.number,
            "process": translate_label(PROCESS_TYPES.get(process_type, process_type)), "step": shown_step_name(title),
            "completed": completed, "mean_wait_hours": mean_wait, "open": open_count, "open_age_hours": mean_age,
        })
    rows.sort(key=lambda r: (-(r["open_age_hours"] or 0), r["number"], r["process"], r["step"]))
    for row in rows:
        del row["number"]
    return {
        "title": gettext("流程吞吐与等待时间"),
        "columns": [("name", gettext("公司")), ("process", gettext("流程")), ("step", gettext("环节")), ("completed", gettext("已办件数")),
                    ("mean_wait_hours", gettext("平均办理时长（小时）")), ("open", gettext("在办件数")), ("open_age_hours", gettext("在办平均等待（小时）"))],
        "rows": rows,
    }


def community_view(company, season_name, as_of):
    """Build one company's community table: the season's receivable, received, arrears, rate and waivers, with outliers flagged."""
    season = db.session.scalar(sa.select(Season).where(Season.company_id == company.id, Season.name == season_name))
    t = CommunityDailyTotal
    statement = (
        sa.select(t.community_id, t.season_id, t.kind, _amount(t.amount), sa.func.sum(t.entries))
        .where(t.company_id == company.id, t.day <= as_of)
        .group_by(t.community_id, t.season_id, t.kind)
    )
    figures = defaultdict(lambda: defaultdict(lambda: ZERO))
    season_id = season.id if season is not None else None
    for community_id, row_season, kind, amount, entries in db.session.execute(statement):
        target = figures[community_id]
        if kind in ARREARS_KINDS:
            target["all_arrears"] += amount
        if row_season != season_id:
            continue
        if kind in RECEIVABLE_KINDS:
            target["receivable"] += amount
        if kind in RECEIVED_KINDS:
            target["received"] -= amount
        if kind == "charge":
            target["billed_accounts"] += entries
        if kind in CHARGED_KINDS:
            target["charged"] += amount
        if kind == "waiver":
            target["waiver"] -= amount
            target["waivers"] += entries
        if kind == "late_fee_waiver":
            target["late_fee_waiver"] += amount
            target["late_fee_waivers"] += entries
        if kind == "late_fee":
            target["late_fee"] += amount
    communities = db.session.scalars(sa.select(Community).where(Community.company_id == company.id).order_by(Community.code)).all()
    shut_off = shut_off_by_community(company.id, end_of_day_utc(as_of))
    rows = []
    for community in communities:
        f = figures[community.id]
        rows.append({
            "id": community.id, "code": community.code, "name": community.name, "billed_accounts": int(f["billed_accounts"]),
            "receivable": f["receivable"], "received": f["received"], "arrears": f["receivable"] - f["received"],
            "collection_rate": rate(f["received"], f["receivable"]), "all_arrears": f["all_arrears"],
            "waiver_amount": f["waiver"], "count": int(f["waivers"]),
            "waiver_rate": rate(f["waiver"], f["charged"], WAIVER_RATE_PLACES),
            "ratio": f["waiver"] / f["charged"] if f["charged"] else None, "shut_off": shut_off.get(community.id, 0),
            **_late_fee_waiver_figures(f["late_fee_waiver"], f["late_fee_waivers"], f["late_fee"]),
        })
    _flag_outliers(rows)
    return {
        "title": gettext("%(company)s 各小区收费", company=company.name),
        "columns": [("code", gettext("小区编号")), ("name", gettext("小区")), ("billed_accounts", gettext("开票户数")), ("receivable", gettext("本季应收")),
                    ("received", gettext("本季实收")), ("arrears", gettext("本季欠费")), ("collection_rate", gettext("收费率 %")),
                    ("all_arrears", gettext("累计欠费（含往季）")), ("waiver_amount", gettext("减免金额")), ("count", gettext("减免笔数")),
                    ("waiver_rate", gettext("减免率 %")), ("outlier_label", gettext("减免异常")), *_late_fee_waiver_columns(),
                    ("shut_off", gettext("关栓户数"))],
        "rows": rows,
    }


def account_view(company, community, season_name, as_of):
    """Build one community's account table from the ledger with each valve's state at the end of the day, largest arrears first."""
    season = db.session.scalar(sa.select(Season).where(Season.company_id == company.id, Season.name == season_name))
    season_id = season.id if season is not None else -1
    in_season = LedgerEntry.season_id == season_id
    statement = (
        sa.select(
            LedgerEntry.account_id,
            _amount(sa.case((sa.and_(in_season, LedgerEntry.kind.in_(RECEIVABLE_KINDS)), LedgerEntry.amount), else_=0)),
            _amount(sa.case((sa.and_(in_season, LedgerEntry.kind.in_(RECEIVED_KINDS)), LedgerEntry.amount), else_=0)),
            _amount(sa.case((LedgerEntry.kind.in_(ARREARS_KINDS), LedgerEntry.amount), else_=0)),
        )
        .join(Account, Account.id == LedgerEntry.account_id)
        .join(Unit, Unit.id == Account.unit_id)
        .join(Building, Building.id == Unit.building_id)
        .where(LedgerEntry.company_id == company.id, Account.company_id == company.id, Building.community_id == community.id,
               LedgerEntry.created_at < end_of_day_utc(as_of))
        .group_by(LedgerEntry.account_id)
    )
    money = {account_id: (due, -paid, arrears) for account_id, due, paid, arrears in db.session.execute(statement)}
    accounts = db.session.execute(
        sa.select(Account.id, Account.account_no, Account.customer_name, Account.user_type,
                  Building.code, Unit.code, Account.room)
        .join(Unit, Unit.id == Account.unit_id).join(Building, Building.id == Unit.building_id)
        .where(Account.company_id == company.id, Building.community_id == community.id)
    ).all()
    valves = valve_states_at(company.id, [row[0] for row in accounts], end_of_day_utc(as_of))
    rows = []
    for account_id, number, name, user_type, building, unit, room in accounts:
        due, paid, arrears = money.get(account_id, (ZERO, ZERO, ZERO))
        valve = valves.get(account_id, "open")
        rows.append({
            "id": account_id, "account_no": number, "customer_name": name,
            "address": gettext("%(building)s号楼%(unit)s单元%(room)s", building=int(building), unit=int(unit), room=room),
            "user_type": translate_label(USER_TYPES.get(user_type, user_type)), "valve": translate_label(VALVE_STATES.get(valve, valve)), "receivable": due, "received": paid, "arrears": due - paid,
            "collection_rate": rate(paid, due), "all_arrears": arrears,
        })
    rows.sort(key=lambda r: (-r["all_arrears"], r["account_no"]))
    return {
        "title": gettext("%(company)s %(community)s 各户收费", company=company.name, community=community.name),
        "columns": [("account_no", gettext("用户编号")), ("customer_name", gettext("户名")), ("address", gettext("地址")), ("user_type", gettext("用户类型")),
                    ("valve", gettext("阀门")), ("receivable", gettext("本季应收")), ("received", gettext("本季实收")), ("arrears", gettext("本季欠费")),
                    ("collection_rate", gettext("收费率 %")), ("all_arrears", gettext("累计欠费（含往季）"))],
        "rows": rows,
    }


def community_of(company, community_id):
    community = db.session.scalar(sa.select(Community).where(Community.company_id == company.id, Community.id == community_id))
    if community is None:
        raise LookupError(gettext("%(company)s没有编号为 %(id)s 的小区。", company=company.name, id=community_id))
    return community

