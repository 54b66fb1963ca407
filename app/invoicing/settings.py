"""A company's invoice method, the face of its receipts and invoices, and its VAT rule, as the company admin edits them."""

import logging
import re
from decimal import Decimal, InvalidOperation

from flask_babel import gettext as _

from app.extensions import db
from app.i18n import join_items, translate_label
from app.invoicing.issuing import InvoiceError, invoice_profile
from app.invoicing.models import INVOICE_METHODS, utcnow
from app.org.models import Company

logger = logging.getLogger(__name__)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEAL_MAX_BYTES = 512 * 1024
# Unified social credit code (18 characters) or an older taxpayer id of 15, 17 or 20 characters.
TAX_ID_PATTERN = re.compile(r"[0-9A-Z]{15}|[0-9A-Z]{17,18}|[0-9A-Z]{20}")
MAX_VAT_PERCENT = Decimal("17")
TITLE_MAX = 100
NOTES_MAX = 200


def save_invoice_settings(company_id, user, *, method, title, notes, seller_tax_id, vat_percent, residential_exempt, seal_png=None, remove_seal=False):
    """Validate and store a company's invoice settings; raise InvoiceError naming the bad field. Commits."""
    if method not in INVOICE_METHODS:
        choices = join_items(translate_label(label) for label in INVOICE_METHODS.values())
        raise InvoiceError(_("开票方式「%(method)s」无效，请选择：%(choices)s。", method=method, choices=choices))
    title = (title or "").strip()
    notes = (notes or "").strip()
    if len(title) > TITLE_MAX:
        raise InvoiceError(_("票面标题最长 %(max)s 个字，当前 %(length)s 个字，请删减后保存。", max=TITLE_MAX, length=len(title)))
    if len(notes) > NOTES_MAX:
        raise InvoiceError(_("票面备注最长 %(max)s 个字，当前 %(length)s 个字，请删减后保存。", max=NOTES_MAX, length=len(notes)))
    seller_tax_id = (seller_tax_id or "").strip().upper()
    if seller_tax_id and not TAX_ID_PATTERN.fullmatch(seller_tax_id):
        raise InvoiceError(_(
            "纳税人识别号「%(tax_id)s」无效：须为 18 位统一社会信用代码（或 15、17、20 位旧税号），只含数字和大写字母。",
            tax_id=seller_tax_id,
        ))
    if method == "e_invoice" and not seller_tax_id:
        raise InvoiceError(_("开具电子发票须填写纳税人识别号。"))
    text = (vat_percent or "").strip().rstrip("%")
    try:
        percent = Decimal(text)
    except InvalidOperation:
        raise InvoiceError(_("非居民税率「%(value)s」不是数字，请填写如 9 的百分数。", value=vat_percent)) from None
    if not percent.is_finite() or percent < 0 or percent > MAX_VAT_PERCENT or percent != percent.quantize(Decimal("0.01")):
        raise InvoiceError(_(
            "非居民税率「%(value)s」无效：须在 0 到 %(max)s 之间、最多两位小数，如 9。", value=vat_percent, max=MAX_VAT_PERCENT,
        ))
    if seal_png is not None:
        if len(seal_png) > SEAL_MAX_BYTES:
            raise InvoiceError(_(
                "印章图片 %(size)s KB，超过 %(max)s KB 上限，请压缩后上传。", size=len(seal_png) // 1024, max=SEAL_MAX_BYTES // 1024,
            ))
        if not seal_png.startswith(PNG_SIGNATURE):
            raise InvoiceError(_("印章图片须为 PNG 文件（建议透明背景），请转换后上传。"))

    company = db.session.get(Company, company_id)
    profile = invoice_profile(company_id)
    if profile.id is None:
        db.session.add(profile)
    company.invoice_mode = method
    profile.title = title
    profile.notes = notes
    profile.seller_tax_id = seller_tax_id
    profile.vat_rate = (percent / 100).quantize(Decimal("0.000001"))
    profile.residential_exempt = bool(residential_exempt)
    if remove_seal:
        profile.seal_png = None
    elif seal_png is not None:
        profile.seal_png = seal_png
    profile.updated_by_id = user.id
    profile.updated_at = utcnow()
    db.session.commit()
    logger.info("Invoice settings of company %s saved by user %s: method %s, VAT %s%%", company_id, user.id, method, percent)
    return profile
