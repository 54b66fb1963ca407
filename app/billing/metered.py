"""Two-part metered settlement (两部制): a base fee per m² of charge area plus a price per GJ.

Metered accounts prepay the area fee during the season. At settlement the metered fee is
computed and rounded once. Residents pay at most the area fee when the tariff caps them,
while non-residential accounts pay the full metered amount. The difference to what was
billed is posted as one `settlement` line, as the tariff's settlement mode allows.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa
from flask_babel import gettext as _

from app.billing.models import LedgerEntry, memo_columns
from app.billing.precision import company_money_rule
from app.billing.proration import season_charge_lines, season_charge_total, season_tariffs
from app.billing.services import account_charge_inputs
from app.clock import LOCAL_TIME
from app.extensions import db
from app.i18n import M_, N_, Message, translate_label
from app.messaging.models import MeterReading
from app.money import ZERO, round_money
from app.network.models import TARIFF_CATEGORY
from app.tariffs.services import charge_area, tariff_in_force

logger = logging.getLogger(__name__)

# Settlement mode -> Chinese label; the ledger memo keeps the Chinese, messages translate it.
SETTLEMENT_MODES = {"none": N_("不结算"), "refund_only": N_("多退少不补"), "refund_and_surcharge": N_("多退少补")}
# Lines that make up what a metered account was billed for the season. Waivers stay apart,
# so a settlement never takes back relief that was granted.
BILLED_KINDS = ("charge", "rerate", "settlement")
# Heat quantities are read to 0.001 GJ.
GJ_PLACES = Decimal("0.001")
AREA_PLACES = Decimal("0.0001")


class MeteringError(ValueError):
    """A metered settlement that cannot be carried out as requested."""


@dataclass(frozen=True)
class MeteredSettlement:
    """The figures of one account's metered settlement for a season."""

    charge_area: Decimal
    heat_gj: Decimal
    metered_fee: Decimal
    area_fee: Decimal
    capped: bool
    billed: Decimal
    difference: Decimal
    mode: str

    @property
    def settled_fee(self):
        return self.billed + self.difference


def parse_heat_gj(value, label=None):
    """Convert a heat quantity in GJ to Decimal, or raise MeteringError naming `label` (default 用热量) and the input."""
    label = label or _("用热量")
    if isinstance(value, (float, bool)):
        raise MeteringError(_("%(field)s %(value)s 不是 Decimal 或字符串；请以如 \"30.5\" 的字符串传入。", field=label, value=repr(value)))
    try:
        heat = Decimal(str(value).strip())
    except InvalidOperation:
        raise MeteringError(_("%(field)s「%(value)s」不是有效数字；请填写如 30.5 的吉焦数。", field=label, value=value)) from None
    if not heat.is_finite() or heat < 0:
        raise MeteringError(_("%(field)s「%(value)s」无效；请填写不小于 0 的吉焦数。", field=label, value=value))
    if heat != heat.quantize(GJ_PLACES):
        raise MeteringError(_("%(field)s「%(value)s」超过三位小数；请精确到 0.001 吉焦。", field=label, value=value))
    return heat


def _billed(account_id, season_id):
    amount = db.session.scalar(
        sa.select(sa.func.sum(LedgerEntry.amount)).where(
            LedgerEntry.account_id == account_id,
            LedgerEntry.season_id == season_id,
            LedgerEntry.kind.in_(BILLED_KINDS),
        )
    )
    return amount if amount is not None else ZERO


def compute_settlement(account, season, heat_gj):
    """Compute the metered settlement of an account for a season without writing anything."""
    heat_gj = parse_heat_gj(heat_gj)
    if account.billing_method != "metered":
        raise MeteringError(_("用户 %(account)s 按面积计费，不能做计量结算；请先将计费方式改为计量。", account=account.account_no))
    if account.billing_status not in ("normal", "forced_off"):
        raise MeteringError(_(
            "用户 %(account)s 当前状态为「%(status)s」，只有正常或强停的计量用户才做计量结算。",
            account=account.account_no, status=account.status_label,
        ))
    # Settlement follows the rule in force on the last day of the season.
    tariff = tariff_in_force(season, season.end_on)
    mode = tariff.metered_settlement
    if mode not in SETTLEMENT_MODES or mode == "none":
        raise MeteringError(_(
            "供暖季 %(season)s 的收费标准结算方式为「%(mode)s」；请在收费标准中选择多退少不补或多退少补。",
            season=season.name, mode=translate_label(SETTLEMENT_MODES.get(mode, mode)),
        ))
    if tariff.metered_base_per_m2 is None or tariff.metered_per_gj is None:
        raise MeteringError(_("供暖季 %(season)s 的收费标准缺少计量基本热价或计量热价；请在收费标准中补充。", season=season.name))

    has_lift, kind = account_charge_inputs(account)
    area = charge_area(tariff, account, has_lift)
    # NOTE: the base fee is for the whole season even for an account connected mid-season.
    metered_fee = round_money(area * tariff.metered_base_per_m2 + heat_gj * tariff.metered_per_gj)
    area_fee = season_charge_total(season_charge_lines(account, season, season_tariffs(season), has_lift, kind))
    residential = TARIFF_CATEGORY[account.user_type] == "residential"
    capped = residential and tariff.metered_cap_residential and metered_fee > area_fee
    settled = area_fee if capped else metered_fee
    billed = _billed(account.id, season.id)
    difference = settled - billed
    if mode == "refund_only" and residential and difference > 0:
        difference = ZERO
    return MeteredSettlement(
        charge_area=area, heat_gj=heat_gj, metered_fee=metered_fee, area_fee=area_fee, capped=capped,
        billed=billed, difference=difference, mode=mode,
    )


def season_heat_from_readings(account, season):
    """Heat used by an account in a season from its stored meter readings: last minus first reading.

    Readings come from the metering system (app/messaging/inbound.py) and are taken
    from the first day of the season 00:00 to the last day 24:00, local time.
    """
    start = datetime.combine(season.start_on, time.min, LOCAL_TIME).astimezone(timezone.utc)
    end = datetime.combine(season.end_on + timedelta(days=1), time.min, LOCAL_TIME).astimezone(timezone.utc)
    readings = db.session.scalars(
        sa.select(MeterReading.reading_gj)
        .where(MeterReading.company_id == account.company_id, MeterReading.account_id == account.id,
               MeterReading.read_at >= start, MeterReading.read_at < end)
        .order_by(MeterReading.read_at)
    ).all()
    if len(readings) < 2:
        raise MeteringError(_(
            "用户 %(account)s 在供暖季 %(season)s 只有 %(count)s 次表读数，至少需要季初和季末两次；请在计量系统补抄后重发。",
            account=account.account_no, season=season.name, count=len(readings),
        ))
    return readings[-1] - readings[0]


def settle_metered(account, season, heat_gj=None, cause_type="meter_reading", cause_id=None, user_id=None, key=None):
    """Post the metered settlement of an account for a season as one `settlement` line.

    The line carries the difference to what was billed, 0.00 included, so the statement
    shows that the season was settled. Without `heat_gj` the heat comes from the stored
    meter readings (season_heat_from_readings). Returns the line, or None when the key (by
    default one per account and season) was posted before. The caller commits.
    """
    key = key or f"settlement:{season.id}:{account.id}"
    exists = db.session.scalar(
        sa.select(LedgerEntry.id).where(LedgerEntry.company_id == account.company_id, LedgerEntry.idempotency_key == key)
    )
    if exists:
        return None
    if heat_gj is None:
        heat_gj = season_heat_from_readings(account, season)
    with company_money_rule(account.company_id):
        result = compute_settlement(account, season, heat_gj)
    mode = Message(SETTLEMENT_MODES[result.mode])
    if result.capped:
        memo = M_(
            "用热 %(heat_gj)s GJ，计量热费 %(metered_fee)s 元，按面积热费 %(area_fee)s 元封顶（%(mode)s）",
            heat_gj=result.heat_gj, metered_fee=result.metered_fee, area_fee=result.area_fee, mode=mode,
        )
    else:
        memo = M_("用热 %(heat_gj)s GJ，计量热费 %(metered_fee)s 元（%(mode)s）", heat_gj=result.heat_gj, metered_fee=result.metered_fee, mode=mode)
    entry = LedgerEntry(
        company_id=account.company_id, account_id=account.id, season_id=season.id, kind="settlement",
        amount=result.difference,
        charge_area=result.charge_area if result.charge_area == result.charge_area.quantize(AREA_PLACES) else None,
        cause_type=cause_type, cause_id=cause_id,
        idempotency_key=key, **memo_columns(memo), created_by_id=user_id,
    )
    db.session.add(entry)
    db.session.flush()
    logger.info("Metered settlement of account %s season %s: %s", account.id, season.id, result.difference)
    return entry
