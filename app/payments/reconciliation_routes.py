"""Reconciliation pages: download or upload channel statements for a day, see the runs and resolve differences."""

import logging
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from app.clock import LOCAL_TIME
from app.extensions import db
from app.payments.models import ReconciliationItem, ReconciliationOrderCopy, ReconciliationRun, WechatMerchant
from app.payments.daily_reconciliation import reconciliation_targets, statement_channel_label
from app.payments.reconciliation import ReconciliationError, parse_statement, resolve_item, store_statement
from app.org.services import has_permission

logger = logging.getLogger(__name__)
bp = Blueprint("reconciliation", __name__, url_prefix="/reconciliation")
STATEMENT_MAX_BYTES = 20 * 1024 * 1024
RUNS_SHOWN = 60


def _local_today():
    return datetime.now(LOCAL_TIME).date()


def _require(company_id=None):
    if not has_permission(current_user, "reconcile.resolve", company_id):
        abort(403, _("您没有渠道对账的权限，请联系本公司管理员分配“财务”角色。"))


@bp.route("/")
@login_required
def index():
    """Recent reconciliation runs, the open differences and the statement upload form."""
    _require()
    runs = db.session.scalars(sa.select(ReconciliationRun).order_by(ReconciliationRun.day.desc(), ReconciliationRun.id.desc()).limit(RUNS_SHOWN)).all()
    items = db.session.scalars(
        sa.select(ReconciliationItem).where(ReconciliationItem.status == "open").order_by(ReconciliationItem.id)
    ).all()
    # Only headquarters' scope reads the copies; a company's query returns none.
    order_copies = {
        copy.item_id: copy for copy in db.session.scalars(
            sa.select(ReconciliationOrderCopy).where(ReconciliationOrderCopy.item_id.in_([item.id for item in items]))
        )
    } if items else {}
    merchants = db.session.scalars(sa.select(WechatMerchant).where(WechatMerchant.active.is_(True)).order_by(WechatMerchant.id)).all()
    return render_template(
        "payments/reconciliation.html", runs=runs, items=items, order_copies=order_copies, merchants=merchants, today=_local_today(),
        yesterday=_local_today() - timedelta(days=1), channel_label=statement_channel_label,
    )


@bp.route("/run", methods=["POST"])
@login_required
def run_day():
    """Queue the download and reconciliation of a day for every merchant of the companies the user may reconcile."""
    _require()
    try:
        day = date.fromisoformat(request.form.get("day", ""))
    except ValueError:
        flash(_("对账日期「%(value)s」无效，请按 2025-12-03 的格式填写。", value=request.form.get("day", "")), "error")
        return redirect(url_for("reconciliation.index"))
    if day >= _local_today():
        flash(_("%(day)s 尚未结束，渠道还没有该日对账单；请选择今天以前的日期。", day=day), "error")
        return redirect(url_for("reconciliation.index"))
    targets = [t for t in reconciliation_targets() if has_permission(current_user, "reconcile.resolve", t.company_id)]
    if not targets:
        flash(_("您可对账的公司没有开通任何收款渠道商户。"), "error")
        return redirect(url_for("reconciliation.index"))
    from app.tasks.reconciliation import reconcile_day_task

    try:
        for target in targets:
            reconcile_day_task.delay(target.company_id, target.channel, target.merchant_id, day.isoformat())
    except Exception:
        db.session.rollback()
        logger.exception("Could not queue reconciliation of %s", day)
        flash(_("对账任务未能提交，请稍后重试。"), "error")
        return redirect(url_for("reconciliation.index"))
    flash(_("已提交 %(count)s 个商户 %(day)s 的对账单下载和对账，完成后结果显示在下方。", count=len(targets), day=day), "success")
    return redirect(url_for("reconciliation.index"))


@bp.route("/statements", methods=["POST"])
@login_required
def upload_statement():
    """Store a WeChat Pay trade bill of one sub-merchant and day and queue its reconciliation."""
    _require()
    sub_mchid = request.form.get("merchant_id", "").strip()
    merchant = db.session.scalar(sa.select(WechatMerchant).filter_by(sub_mchid=sub_mchid))
    if merchant is None:
        flash(_("特约商户号「%(value)s」不属于本公司，请从列表中选择。", value=sub_mchid), "error")
        return redirect(url_for("reconciliation.index"))
    _require(merchant.company_id)
    try:
        day = date.fromisoformat(request.form.get("day", ""))
    except ValueError:
        flash(_("对账日期「%(value)s」无效，请按 2025-12-03 的格式填写。", value=request.form.get("day", "")), "error")
        return redirect(url_for("reconciliation.index"))
    upload = request.files.get("statement")
    content = upload.read(STATEMENT_MAX_BYTES + 1) if upload and upload.filename else b""
    if not content:
        flash(_("请选择从微信支付下载的交易账单文件（CSV）。"), "error")
        return redirect(url_for("reconciliation.index"))
    if len(content) > STATEMENT_MAX_BYTES:
        flash(_("对账单超过 %(size)s MB 上限，请按单日下载。", size=STATEMENT_MAX_BYTES // (1024 * 1024)), "error")
        return redirect(url_for("reconciliation.index"))
    try:
        parse_statement("wechatpay", sub_mchid, day, content)
    except ReconciliationError as error:
        flash(str(error), "error")
        return redirect(url_for("reconciliation.index"))
    statement = store_statement(merchant.company_id, "wechatpay", sub_mchid, day, upload.filename, content, current_user.id)
    from app.tasks.reconciliation import reconcile_day_task

    try:
        reconcile_day_task.delay(merchant.company_id, "wechatpay", sub_mchid, day.isoformat(), download=False)
    except Exception:
        db.session.rollback()
        logger.exception("Could not queue reconciliation of %s for %s", sub_mchid, day)
        flash(_("对账单已保存，但对账任务未能提交，请稍后重试。"), "error")
        return redirect(url_for("reconciliation.index"))
    run = db.session.scalar(sa.select(ReconciliationRun).filter_by(company_id=merchant.company_id, channel="wechatpay", merchant_id=sub_mchid, day=day))
    if run is not None and run.statement_sha256 == statement.sha256:
        flash(_("%(day)s 对账完成：一致 %(matched)s 笔，差异 %(differences)s 笔。", day=day, matched=run.matched, differences=run.differences), "success")
    else:
        flash(_("对账单已保存，%(day)s 的对账已提交后台处理，请稍后刷新本页。", day=day), "success")
    return redirect(url_for("reconciliation.index"))


@bp.route("/items/<int:item_id>/resolve", methods=["POST"])
@login_required
def resolve(item_id):
    """Close one difference with the reason finance gives."""
    _require()
    item = db.first_or_404(
        sa.select(ReconciliationItem).filter_by(id=item_id),
        description=_("未找到编号为 %(id)s 的对账差异，或它不属于您的公司。", id=item_id),
    )
    _require(item.company_id)
    try:
        resolve_item(item, request.form.get("reason"), current_user)
    except ReconciliationError as error:
        flash(str(error), "error")
    else:
        flash(_("差异 %(number)s 已处理。", number=item.channel_txn_id), "success")
    return redirect(url_for("reconciliation.index"))
