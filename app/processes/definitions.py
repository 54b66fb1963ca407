"""Per-type definitions of the six processes: start form, allowed statuses, start data and the approver's preview.

`prepare` runs under the account's row lock after the start form is validated. It checks
the account against the request and returns the start data (task data of the start
event) and the audit data of the `started` event. It raises InputError for a bad value
and ConflictError when the account does not allow the request.
"""

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import sqlalchemy as sa
from flask_babel import gettext as _

from app.billing.late_fees import late_fee_receivable
from app.billing.services import account_charge_inputs, season_receivable
from app.extensions import db
from app.fieldwork.models import FINDINGS
from app.i18n import N_, join_items, translate_label
from app.money import ZERO, format_money, round_money
from app.network.models import BILLING_STATUSES
from app.payments.services import amount_owed
from app.processes.access import ConflictError, InputError
from app.processes.escalation import WAIVER_CATEGORIES
from app.processes.fields import DOCUMENT_NO_PATTERN, Field, comment_field
from app.processes.models import PROCESS_TYPES
from app.processes.options import PROCESS_OPTIONS, process_option
from app.tariffs.models import Season
from app.tariffs.services import TariffError, compute_charge, tariff_in_force

SUSPENSION_REASONS = {"vacant": N_("房屋空置"), "renovation": N_("装修停用"), "away": N_("长期外出"), "other": N_("其他")}
WAIVER_MODES = {"amount": N_("按金额"), "percent": N_("按应收比例")}
# Waiver target -> Chinese label: the season's heating charge, or the late fees posted on a season.
WAIVER_TARGETS = {"charge": N_("热费"), "late_fee": N_("滞纳金")}
EVIDENCE_KINDS = {"certificate": N_("不动产证"), "measurement": N_("测绘报告")}
HUNDRED = Decimal(100)


@dataclass(frozen=True)
class ProcessDefinition:
    """One process type as the account page and the services see it."""

    code: str
    start_fields: tuple
    # Billing statuses an account must have to start the process.
    start_statuses: tuple
    # prepare(account, season, clean) -> (start data, started-event data)
    prepare: object
    # preview(account, season, data) -> (label in the reader's language, Decimal) or None: the receivable after approval.
    preview: object = None
    # Task data shown to approvers, in display order: (key, Chinese label marked with N_).
    summary_keys: tuple = field(default_factory=tuple)
    # form_choices(account) -> {field name: {code: label}}: choices of start-form fields that
    # depend on the account, set on the form when the account page renders it.
    form_choices: object = None

    @property
    def label(self):
        return PROCESS_TYPES[self.code]


def season_charge(account, season, status=None, area=None):
    """Season charge of an account at a status and area (default: its own), or None when the status owes nothing."""
    has_lift, kind = account_charge_inputs(account)
    subject = account
    if area is not None:
        subject = SimpleNamespace(user_type=account.user_type, building_area=area, usable_area=account.usable_area)
    charge = compute_charge(tariff_in_force(season), subject, has_lift, kind, billing_status=status or account.billing_status)
    return charge.amount if charge is not None else None


def prorated_days(season, first_day):
    """Days from `first_day` to the season's end, both included; raises InputError outside the season."""
    if not season.start_on <= first_day <= season.end_on:
        raise InputError(_("日期 %(day)s 不在供暖季 %(season)s（%(start)s 至 %(end)s）之内。", day=first_day, season=season.name, start=season.start_on, end=season.end_on))
    return (season.end_on - first_day).days + 1


def _require_season(season):
    if season is None:
        raise ConflictError(_("本公司尚未建立供暖季及收费标准，无法受理该申请；请先在收费标准中添加。"))


# -- 报停 suspension


def _prepare_suspension(account, season, clean):
    reason = clean["reason"]
    reason_label = SUSPENSION_REASONS.get(reason, reason)
    if reason == "other" and not clean["comment"]:
        raise InputError(_("报停原因为「其他」时必须填写说明。"))
    return {"reason": reason_label}, {"reason": reason, "reason_label": reason_label}


def _preview_suspension(account, season, data):
    return _("报停后应收"), season_charge(account, season, status="suspended")


# -- 减免 waiver


def _waiver_target(account, season, clean):
    """Return (target, season, receivable, label) of a waiver: the season's charge or its posted late fees.

    A late-fee waiver names its season. Without one, the only season with posted late fees
    is taken.
    """
    if clean["target"] == "charge":
        if clean["late_fee_season"]:
            raise InputError(_("减免对象为「热费」时不填写滞纳金所属供暖季；如需减免滞纳金，请把减免对象选为「滞纳金」。"))
        _require_season(season)
        return "charge", season, season_receivable(account.id, season.id), WAIVER_TARGETS["charge"]
    choices = late_fee_season_choices(account)
    name = clean["late_fee_season"]
    if not choices:
        raise ConflictError(_("该户没有已入账的滞纳金，不能申请滞纳金减免；请把减免对象选为「热费」。"))
    if not name:
        if len(choices) > 1:
            raise InputError(_("请选择滞纳金所属供暖季；该户有已入账滞纳金的供暖季：%(seasons)s。", seasons=join_items(choices)))
        name = next(iter(choices))
    late_fee_season = db.session.scalar(sa.select(Season).filter_by(company_id=account.company_id, name=name))
    if late_fee_season is None:
        raise InputError(_("供暖季「%(name)s」在本公司不存在；请从列表中选择有滞纳金的供暖季。", name=name[:20]))
    return "late_fee", late_fee_season, late_fee_receivable(account.id, late_fee_season.id), WAIVER_TARGETS["late_fee"]


def late_fee_season_choices(account):
    """Return {season name: label} of the account's seasons with posted late fees left to waive, oldest first."""
    return {
        owed.season.name: _(
            "%(season)s（滞纳金 %(late_fee)s 元，未缴 %(outstanding)s 元）",
            season=owed.season.name, late_fee=format_money(owed.late_fee), outstanding=format_money(owed.late_fee_outstanding),
        )
        for owed in amount_owed(account).seasons if owed.late_fee > ZERO
    }


def _waiver_form_choices(account):
    return {"late_fee_season": late_fee_season_choices(account)}


def _prepare_waiver(account, season, clean):
    target, season, receivable, target_label = _waiver_target(account, season, clean)
    owed_label = _("应收") if target == "charge" else _("滞纳金应收")
    if receivable <= ZERO:
        raise ConflictError(_("该户 %(season)s %(owed)s为 %(amount)s 元，没有可减免的金额。", season=season.name, owed=owed_label, amount=format_money(receivable)))
    if clean["mode"] == "amount":
        if clean["amount"] is None:
            raise InputError(_("按金额减免时请填写减免金额。"))
        amount = clean["amount"]
    else:
        if clean["percent"] is None:
            raise InputError(_("按应收比例减免时请填写减免比例。"))
        # Exact product, rounded once to 0.01 yuan.
        amount = round_money(receivable * clean["percent"] / HUNDRED)
        if amount <= ZERO:
            raise InputError(_("按 %(percent)s%% 计算的减免金额不足 0.01 元，请核对比例。", percent=clean["percent"]))
    if amount > receivable:
        raise InputError(
            _("减免金额 %(amount)s 元超过该户 %(season)s %(owed)s %(receivable)s 元，请核对。", amount=format_money(amount), season=season.name,
              owed=owed_label, receivable=format_money(receivable))
        )
    category_label = WAIVER_CATEGORIES[clean["category"]]
    # receivable_at_start is the receivable of the target, so the escalation table's share
    # of the receivable is a share of the late fees for a late-fee waiver.
    start_data = {
        "season": season.name, "receivable_at_start": receivable, "waiver_amount": amount,
        "waiver_target": target, "waiver_target_label": target_label,
        "waiver_category": clean["category"], "waiver_category_label": category_label,
        "waiver_mode": WAIVER_MODES[clean["mode"]], "waiver_percent": clean["percent"], "evidence": clean["evidence"],
    }
    event_data = {"amount": format_money(amount), "category": clean["category"], "reason_label": category_label,
                  "evidence": clean["evidence"], "target": target, "season": season.name}
    return start_data, event_data


def _preview_waiver(account, season, data):
    if data.get("waiver_target") == "late_fee":
        late_fee_season = db.session.scalar(sa.select(Season).filter_by(company_id=account.company_id, name=data["season"]))
        return _("减免后滞纳金"), late_fee_receivable(account.id, late_fee_season.id) - data.get("waiver_amount", ZERO)
    return _("减免后应收"), season_receivable(account.id, season.id) - data.get("waiver_amount", ZERO)


# -- 强停 forced shutoff


def _prepare_forced_shutoff(account, season, clean):
    owed = amount_owed(account).total
    if owed <= ZERO:
        raise ConflictError(_("该户没有欠费，不能申请强停。"))
    return {"arrears": owed}, {"arrears": format_money(owed)}


def _preview_forced_shutoff(account, season, data):
    return _("强停后应收（不减少）"), season_receivable(account.id, season.id)


# -- 调整面积 area adjustment


def _prepare_area_adjustment(account, season, clean):
    new_area = clean["new_area"]
    if new_area == account.building_area:
        raise InputError(_("新面积 %(area)s ㎡ 与现有建筑面积相同，无需调整。", area=new_area))
    start_data = {
        "old_area": account.building_area, "new_area": new_area, "certificate_no": clean["certificate_no"],
        "evidence_kind": EVIDENCE_KINDS[clean["evidence_kind"]], "evidence": clean["evidence"],
    }
    event_data = {
        "old_area": f"{account.building_area.normalize():f}", "new_area": f"{new_area.normalize():f}",
        "certificate_no": clean["certificate_no"], "evidence_kind": clean["evidence_kind"],
    }
    return start_data, event_data


def _preview_area_adjustment(account, season, data):
    old_charge = season_charge(account, season)
    if old_charge is None:
        return None
    new_area = data.get("new_area")
    if new_area is None:
        return None
    difference = season_charge(account, season, area=new_area) - old_charge
    return _("调整后应收"), season_receivable(account.id, season.id) + difference


# -- 复热 reheating


def reheating_amount(account, season, first_day):
    """Difference line of a reheating from `first_day`: (full fee − fee at the current status) × remaining days / statutory days.

    The fee already billed at the suspension ratio (or in full for 强停) stays for the
    whole season, and the heated days add the difference pro rata. The product is exact
    and rounded once. Example: TJ 87.35 m² suspended (436.75 of 2183.75) reheated from
    2026-01-20 has 55 days left of 121: 1747.00 × 55 / 121 = 794.0909 → 794.09.
    """
    days = prorated_days(season, first_day)
    full = season_charge(account, season, status="normal")
    current = season_charge(account, season) or ZERO
    return round_money((full - current) * days / season.statutory_days), days


def _prepare_reheating(account, season, clean):
    _require_season(season)
    prorated_days(season, clean["requested_on"])
    return {"previous_status": account.billing_status, "requested_on": clean["requested_on"]}, {
        "previous_status": account.billing_status, "requested_on": clean["requested_on"].isoformat(),
    }


def _preview_reheating(account, season, data):
    requested_on = data.get("requested_on")
    if requested_on is None or account.billing_status not in ("suspended", "forced_off"):
        return None
    amount, _days = reheating_amount(account, season, requested_on)
    return _("自 %(day)s 复热后应收（按申请日估算）", day=requested_on), season_receivable(account.id, season.id) + amount


# -- 追补 back-charge after an inspection


def back_charge_amount(account, season, inspected_on, netting=None):
    """Back-charge of a violation found on `inspected_on`, rounded once, by the company's netting method.

    The days run from the season start to the inspection day, both included. With netting
    `difference` the charge is (full fee − fee at the current status) × days / statutory
    days. Example: TJ 87.35 m² suspended (436.75 of 2183.75) found with the valve open on
    2026-01-20: 1747.00 × 67 / 121 = 967.347… → 967.35. With `full` the fee already billed
    at the current status is not deducted: 2183.75 × 67 / 121 = 1209.183… → 1209.18.
    `netting` None reads the company's current option.
    """
    if not season.start_on <= inspected_on <= season.end_on:
        raise InputError(_("稽查日期 %(day)s 不在供暖季 %(season)s（%(start)s 至 %(end)s）之内。", day=inspected_on, season=season.name,
                             start=season.start_on, end=season.end_on))
    netting = netting or process_option(account.company_id, "back_charge_netting")
    if netting not in PROCESS_OPTIONS["back_charge_netting"].choices:
        raise InputError(_("追补计算方式「%(value)s」无效，请在审批规则页选择“按差额追补”或“按全额追补”。", value=netting))
    days = (inspected_on - season.start_on).days + 1
    full = season_charge(account, season, status="normal")
    deducted = ZERO if netting == "full" else (season_charge(account, season) or ZERO)
    return round_money((full - deducted) * days / season.statutory_days), days


def _prepare_back_charge(account, season, clean):
    _require_season(season)
    # The method is fixed when the request starts, so the approved amount is the one posted.
    netting = process_option(account.company_id, "back_charge_netting")
    amount, days = back_charge_amount(account, season, clean["inspected_on"], netting)
    finding = FINDINGS.get(clean["finding"], clean["finding"])
    data = {
        "inspected_on": clean["inspected_on"], "finding": finding, "back_charge_days": days,
        "back_charge_amount": amount, "previous_status": account.billing_status, "back_charge_netting": netting,
    }
    return data, {
        "inspected_on": clean["inspected_on"].isoformat(), "finding": clean["finding"], "back_charge_days": days,
        "back_charge_amount": format_money(amount), "previous_status": account.billing_status,
        "back_charge_netting": netting,
    }


def _preview_back_charge(account, season, data):
    amount = data.get("back_charge_amount")
    inspected_on = data.get("inspected_on")
    if amount is None or inspected_on is None or account.billing_status not in ("suspended", "forced_off"):
        return None
    rest = ZERO
    if inspected_on < season.end_on:
        rest, _days = reheating_amount(account, season, inspected_on + timedelta(days=1))
    return _("追补并恢复正常供热后应收"), season_receivable(account.id, season.id) + amount + rest


# -- 入网 connection


def connection_amount(account, season, area, first_day):
    """First-season charge of a connection: full fee at `area` × days from `first_day` / statutory days, rounded once.

    Example: BJ 80 m² at 24.00 connected on 2026-01-10 has 65 days of 121:
    1920.00 × 65 / 121 = 1031.4049 → 1031.40.
    """
    days = prorated_days(season, first_day)
    full = season_charge(account, season, status="normal", area=area)
    return round_money(full * days / season.statutory_days), days


def _prepare_connection(account, season, clean):
    return {"applied_area": clean["applied_area"], "contract_no": clean["contract_no"]}, {
        "applied_area": f"{clean['applied_area'].normalize():f}", "contract_no": clean["contract_no"],
    }


def _preview_connection(account, season, data):
    area = data.get("surveyed_area") or data.get("applied_area")
    if area is None:
        return None
    area_text = f"{area.normalize():f}"
    return _("按 %(area)s ㎡ 计的本季全额热费（实际按接网日折算）", area=area_text), season_charge(account, season, status="normal", area=area)


COMMON_SUMMARY = (
    ("comment", N_("申请说明")), ("escalation_reason", N_("审批级别")),
    ("company_decision", N_("分公司意见")), ("company_comment", N_("分公司审批意见")), ("company_approval_by", N_("分公司审批人")),
)

DEFINITIONS = {
    "suspension": ProcessDefinition(
        "suspension",
        (
            Field("reason", N_("报停原因"), "choice", required=True, choices=SUSPENSION_REASONS, free_text=True),
            comment_field(N_("说明"), N_("原因为「其他」时必填")),
        ),
        ("normal",), _prepare_suspension, _preview_suspension,
        (("reason", N_("报停原因")), *COMMON_SUMMARY),
    ),
    "waiver": ProcessDefinition(
        "waiver",
        (
            Field("target", N_("减免对象"), "radio", choices=WAIVER_TARGETS, default="charge"),
            # Choices are the account's seasons with posted late fees (late_fee_season_choices).
            Field("late_fee_season", N_("滞纳金所属供暖季"), "choice", free_text=True, max_chars=9,
                  hint=N_("减免滞纳金时选择")),
            Field("category", N_("减免类别"), "choice", required=True, choices=WAIVER_CATEGORIES),
            Field("mode", N_("减免方式"), "choice", required=True, choices=WAIVER_MODES),
            Field("amount", N_("减免金额（元）"), "money", hint=N_("按金额减免时填写")),
            Field("percent", N_("减免比例（%）"), "percent", hint=N_("按应收比例减免时填写")),
            Field("evidence", N_("证明材料"), "textarea", required=True, max_chars=200,
                  hint=N_("材料名称与编号"), missing_message=N_("请填写证明材料：减免必须附证明材料的名称与编号。")),
            comment_field(N_("说明")),
        ),
        ("normal", "suspended", "forced_off"), _prepare_waiver, _preview_waiver,
        (
            ("waiver_target_label", N_("减免对象")), ("season", N_("供暖季")), ("receivable_at_start", N_("申请时减免对象应收（元）")),
            ("waiver_category_label", N_("减免类别")), ("waiver_mode", N_("减免方式")), ("waiver_percent", N_("减免比例（%）")),
            ("waiver_amount", N_("减免金额（元）")), ("evidence", N_("证明材料")), *COMMON_SUMMARY,
            ("finance_decision", N_("财务意见")), ("finance_comment", N_("财务复核意见")), ("finance_review_by", N_("财务复核人")),
        ),
        form_choices=_waiver_form_choices,
    ),
    "forced_shutoff": ProcessDefinition(
        "forced_shutoff",
        (comment_field(N_("强停事由"), N_("欠费情况与催缴经过")),),
        ("normal",), _prepare_forced_shutoff, _preview_forced_shutoff,
        (("arrears", N_("申请时欠费（元）")), ("notice_no", N_("催缴通知书编号")), ("served_on", N_("送达日期")), *COMMON_SUMMARY),
    ),
    "area_adjustment": ProcessDefinition(
        "area_adjustment",
        (
            Field("new_area", N_("新建筑面积（㎡）"), "area", required=True),
            Field("evidence_kind", N_("证据类型"), "choice", required=True, choices=EVIDENCE_KINDS),
            Field("certificate_no", N_("证书或报告编号"), required=True, max_chars=64, pattern=DOCUMENT_NO_PATTERN,
                  pattern_hint=N_("只能包含文字、数字、括号、斜杠和连字符，最多 64 位"),
                  missing_message=N_("请填写不动产证或测绘报告编号：没有证据的面积变更不予受理。")),
            Field("evidence", N_("证据说明"), "textarea", max_chars=200, hint=N_("如测量日期、测量单位")),
            comment_field(N_("说明")),
        ),
        ("normal", "suspended", "forced_off", "not_connected"), _prepare_area_adjustment, _preview_area_adjustment,
        (("old_area", N_("原建筑面积（㎡）")), ("new_area", N_("新建筑面积（㎡）")), ("evidence_kind", N_("证据类型")),
         ("certificate_no", N_("证书或报告编号")), ("evidence", N_("证据说明")), *COMMON_SUMMARY),
    ),
    "reheating": ProcessDefinition(
        "reheating",
        (Field("requested_on", N_("申请复热日期"), "date", required=True), comment_field(N_("说明"))),
        ("suspended", "forced_off"), _prepare_reheating, _preview_reheating,
        (("requested_on", N_("申请复热日期")), *COMMON_SUMMARY),
    ),
    "back_charge": ProcessDefinition(
        "back_charge",
        (
            Field("inspected_on", N_("稽查日期"), "date", required=True),
            Field("finding", N_("违规类型"), "choice", required=True, choices={k: v for k, v in FINDINGS.items() if k != "none"}),
            comment_field(N_("稽查说明")),
        ),
        ("suspended", "forced_off"), _prepare_back_charge, _preview_back_charge,
        (("finding", N_("违规类型")), ("inspected_on", N_("稽查日期")), ("back_charge_days", N_("追补天数")),
         ("back_charge_amount", N_("追补金额（元）")), *COMMON_SUMMARY),
    ),
    "connection": ProcessDefinition(
        "connection",
        (
            Field("applied_area", N_("申请入网面积（㎡）"), "area", required=True),
            Field("contract_no", N_("入网合同编号"), required=True, max_chars=64, pattern=DOCUMENT_NO_PATTERN,
                  pattern_hint=N_("只能包含文字、数字、括号、斜杠和连字符，最多 64 位")),
            comment_field(N_("说明")),
        ),
        ("not_connected",), _prepare_connection, _preview_connection,
        (("applied_area", N_("申请入网面积（㎡）")), ("contract_no", N_("入网合同编号")), ("surveyed_area", N_("实测建筑面积（㎡）")),
         ("survey_comment", N_("勘察意见")), *COMMON_SUMMARY),
    ),
}


def definition_for(process_type):
    """Return the definition of a process type, or raise InputError naming the known types."""
    definition = DEFINITIONS.get(process_type)
    if definition is None:
        raise InputError(_("未知的业务类型「%(value)s」；可选：%(choices)s。", value=process_type,
                             choices=join_items(translate_label(label) for label in PROCESS_TYPES.values())))
    return definition


def status_error(definition, account):
    """Return the reason why the account's status does not allow the process, or None."""
    if account.billing_status in definition.start_statuses:
        return None
    allowed = join_items(_("「%(status)s」", status=translate_label(BILLING_STATUSES[s])) for s in definition.start_statuses)
    return _("该户当前供热状态为「%(status)s」，只有%(allowed)s状态的用户可以申请%(process)s。", status=account.status_label, allowed=allowed,
             process=translate_label(definition.label))


def preview(definition, account, season, data):
    """Compute the approver's preview of the receivable after approval; returns None when it cannot be computed."""
    if definition.preview is None or season is None:
        return None
    try:
        return definition.preview(account, season, data)
    except (TariffError, InputError):
        return None
