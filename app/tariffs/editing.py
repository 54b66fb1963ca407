"""Editing tariffs: a tariff already used for charges is never changed in place."""

import logging
from datetime import date
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa
from flask_babel import gettext as _

from app.billing.models import LedgerEntry, RerateChange
from app.extensions import db
from app.i18n import N_, translate_label
from app.tariffs.models import ChargeAreaRule, Tariff, TariffPrice

logger = logging.getLogger(__name__)

CATEGORIES = {"residential": N_("居民"), "non_residential": N_("非居民")}
BASES = {"building_area": N_("建筑面积"), "usable_area": N_("使用面积")}


class TariffEditError(ValueError):
    """A tariff form value that cannot be saved."""


def _decimal(form, name, label, required=True, minimum=Decimal(0)):
    label = translate_label(label)
    raw = (form.get(name) or "").strip()
    if not raw:
        if required:
            raise TariffEditError(_("%(field)s未填写，请填写数字。", field=label))
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise TariffEditError(_("%(field)s「%(value)s」不是数字。", field=label, value=raw)) from None
    if not value.is_finite() or value < minimum or value != value.quantize(Decimal("0.000001")):
        raise TariffEditError(_("%(field)s「%(value)s」必须是不小于 %(minimum)s 的数字，最多 6 位小数。", field=label, value=raw, minimum=minimum))
    return value


def tariff_is_used(tariff):
    """True when charges of the tariff's season were posted while it was in force."""
    return bool(
        db.session.scalar(
            sa.select(LedgerEntry.id).where(
                LedgerEntry.company_id == tariff.company_id,
                LedgerEntry.season_id == tariff.season_id,
                LedgerEntry.kind == "charge",
            ).limit(1)
        )
    )


def _check_no_waiting_change(tariff):
    waiting = db.session.scalar(
        sa.select(RerateChange.id).filter_by(company_id=tariff.company_id, tariff_id=tariff.id, status="pending")
    )
    if waiting is not None:
        raise TariffEditError(f"本版本有待审批的追溯调整单 {waiting}；请先在追溯调整中审批或驳回，再修改。")


def parse_tariff_form(form):
    """Validate the tariff form and return its values; nothing is written.

    Returns a dict of the tariff's scalar fields plus `prices` as [(category,
    heat_source_kind, unit price)] and `rules` as [(category, basis, factor, lift factor,
    fallback factor)].
    """
    suspension_ratio = _decimal(form, "suspension_ratio", N_("报停比例"))
    if suspension_ratio > 1:
        raise TariffEditError(_("报停比例必须在 0 到 1 之间。"))
    late_start = (form.get("late_fee_starts_after") or "").strip()
    try:
        late_fee_starts_after = date.fromisoformat(late_start) if late_start else None
    except ValueError:
        raise TariffEditError(_("滞纳金起算日「%(value)s」不是有效日期，格式如 2025-12-31。", value=late_start)) from None
    late_stop = (form.get("late_fee_stops_after") or "").strip()
    try:
        late_fee_stops_after = date.fromisoformat(late_stop) if late_stop else None
    except ValueError:
        raise TariffEditError(_("滞纳金截止日「%(value)s」不是有效日期，格式如 2027-06-30；不设截止则留空。", value=late_stop)) from None
    if late_fee_stops_after is not None and (late_fee_starts_after is None or late_fee_stops_after <= late_fee_starts_after):
        raise TariffEditError(_(
            "滞纳金截止日 %(stop)s 须晚于滞纳金起算日（%(start)s）；请改正截止日，或留空表示欠费缴清前一直计收。",
            stop=late_fee_stops_after, start=late_fee_starts_after or _("未填写"),
        ))
    values = {
        "suspension_ratio": suspension_ratio,
        "late_fee_rate_per_day": _decimal(form, "late_fee_rate_per_day", N_("滞纳金日费率"), required=False),
        "late_fee_starts_after": late_fee_starts_after,
        "late_fee_stops_after": late_fee_stops_after,
        "metered_base_per_m2": _decimal(form, "metered_base_per_m2", N_("两部制基本热价"), required=False),
        "metered_per_gj": _decimal(form, "metered_per_gj", N_("计量热价"), required=False),
    }
    prices = []
    for category in CATEGORIES:
        prices.append((category, "", _decimal(form, f"price_{category}", _("%(category)s单价", category=translate_label(CATEGORIES[category])))))
    kind = (form.get("override_kind") or "").strip()
    override = _decimal(form, "override_price", N_("热源类型单价"), required=False)
    if kind and override is not None:
        prices.append(("residential", kind, override))
    rules = []
    for category in CATEGORIES:
        basis = form.get(f"basis_{category}", "building_area")
        if basis not in BASES:
            raise TariffEditError(_("计费面积依据「%(value)s」无法识别。", value=basis))
        rules.append((
            category, basis,
            _decimal(form, f"factor_{category}", N_("面积系数")),
            _decimal(form, f"lift_factor_{category}", N_("电梯系数"), required=False),
            _decimal(form, f"fallback_factor_{category}", N_("使用面积缺省系数"), required=False),
        ))
    values["prices"] = prices
    values["rules"] = rules
    return values


def save_tariff(tariff, form, user_id):
    """Apply the edit form to `tariff`, or to a new tariff from a later effective date.

    Returns the tariff that was written. A tariff whose season is already billed can only
    be followed by a new version with another effective date inside the season. That
    version is saved as `pending` and takes effect when its tariff re-rating
    (/billing/rerates) is posted.
    """
    season = tariff.season
    effective_text = (form.get("effective_from") or "").strip()
    try:
        effective_from = date.fromisoformat(effective_text) if effective_text else tariff.effective_from
    except ValueError:
        raise TariffEditError(_("生效日期「%(value)s」不是有效日期，格式如 2026-01-10。", value=effective_text)) from None
    if not season.start_on <= effective_from <= season.end_on:
        raise TariffEditError(_(
            "生效日期 %(date)s 不在供暖季 %(season)s（%(start)s 至 %(end)s）内。",
            date=effective_from, season=season.name, start=season.start_on, end=season.end_on,
        ))

    # A new version of a billed season waits for the tariff re-rating that bills it.
    new_status = "pending" if tariff_is_used(tariff) else "active"
    target = tariff
    if effective_from != tariff.effective_from:
        clash = db.session.scalar(sa.select(Tariff).filter_by(company_id=tariff.company_id, season_id=season.id, effective_from=effective_from))
        if clash is not None and clash.status != "withdrawn":
            raise TariffEditError(_("已有自 %(date)s 起的收费标准（%(status)s）；请修改那一版。", date=effective_from,
                                    status=translate_label(clash.status_label)))
        if clash is None:
            target = Tariff(company_id=tariff.company_id, season_id=season.id, effective_from=effective_from, suspension_ratio=0)
            db.session.add(target)
        else:
            # A withdrawn version's date is taken again by the new version.
            target = clash
        target.status = new_status
    elif tariff.status == "active" and new_status == "pending":
        raise TariffEditError(_("本标准已用于生成应收，不能原地修改；请填写新的生效日期保存为新版本。"))
    else:
        _check_no_waiting_change(tariff)
        target.status = new_status

    values = parse_tariff_form(form)
    for name in (
        "suspension_ratio", "late_fee_rate_per_day", "late_fee_starts_after", "late_fee_stops_after", "metered_base_per_m2",
        "metered_per_gj",
    ):
        setattr(target, name, values[name])
    prices = values["prices"]
    rules = values["rules"]

    db.session.flush()
    for price in list(target.prices):
        db.session.delete(price)
    for rule in list(target.area_rules):
        db.session.delete(rule)
    db.session.flush()
    for category, heat_source_kind, value in prices:
        db.session.add(TariffPrice(company_id=target.company_id, tariff_id=target.id, category=category,
                                   heat_source_kind=heat_source_kind, unit_price=value))
    for category, basis, factor, lift, fallback in rules:
        db.session.add(ChargeAreaRule(company_id=target.company_id, tariff_id=target.id, category=category, basis=basis,
                                      factor=factor, lift_factor=lift, fallback_factor=fallback))
    db.session.commit()
    logger.info("User %s saved tariff %s of company %s from %s", user_id, target.id, target.company_id, target.effective_from)
    return target
