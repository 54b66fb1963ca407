"""A company's invoice method, the face of its receipts and invoices, and its VAT rule, as the company admin edits them."""

import logging
import re
from decimal import Decimal, InvalidOperation

from app.extensions import db
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
        raise InvoiceError(f"开票方式「{method}」无效，请选择：{'、'.join(INVOICE_METHODS.values())}。")
    title = (title or "").strip()
    notes = (notes or "").strip()
    if len(title) > TITLE_MAX:
        raise InvoiceError(f"票面标题最长 {TITLE_MAX} 个字，当前 {len(title)} 个字，请删减后保存。")
    if len(notes) > NOTES_MAX:
        raise InvoiceError(f"票面备注最长 {NOTES_MAX} 个字，当前 {len(notes)} 个字，请删减后保存。")
    seller_tax_id = (seller_tax_id or "").strip().upper()
    if seller_tax_id and not TAX_ID_PATTERN.fullmatch(seller_tax_id):
        raise InvoiceError(f"纳税人识别号「{seller_tax_id}」无效：须为 18 位统一社会信用代码（或 15、17、20 位旧税号），只含数字和大写字母。")
    if method == "e_invoice" and not seller_tax_id:
        raise InvoiceError("开具电子发票须填写纳税人识别号。")
    text = (vat_percent or "").strip().rstrip("%")
    try:
        percent = Decimal(text)
    except InvalidOperation:
        raise InvoiceError(f"非居民税率「{vat_percent}」不是数字，请填写如 9 的百分数。") from None
    if not percent.is_finite() or percent < 0 or percent > MAX_VAT_PERCENT or percent != percent.quantize(Decimal("0.01")):
        raise InvoiceError(f"非居民税率「{vat_percent}」无效：须在 0 到 {MAX_VAT_PERCENT} 之间、最多两位小数，如 9。")
    if seal_png is not None:
        if len(seal_png) > SEAL_MAX_BYTES:
            raise InvoiceError(f"印章图片 {len(seal_png) // 1024} KB，超过 {SEAL_MAX_BYTES // 1024} KB 上限，请压缩后上传。")
        if not seal_png.startswith(PNG_SIGNATURE):
            raise InvoiceError("印章图片须为 PNG 文件（建议透明背景），请转换后上传。")

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
