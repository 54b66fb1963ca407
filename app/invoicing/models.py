"""Invoice settings of a company, issued invoices (paper and electronic, blue and red) and their lines."""

from datetime import datetime, timezone
from decimal import Decimal

import sqlalchemy as sa

from app.extensions import db
from app.i18n import N_, stored_message, translate_label
from app.money import Money, Rate
from app.tenancy import CompanyOwned

# Invoice method of a company (Company.invoice_mode) -> Chinese label (translated where shown).
INVOICE_METHODS = {
    "receipt": N_("自印收据"),
    "paper_tax_invoice": N_("税控纸质发票"),
    "e_invoice": N_("税控电子发票（经开票服务商）"),
}
# Invoice medium -> Chinese label (translated where shown).
INVOICE_MEDIA = {"paper": N_("纸质发票"), "electronic": N_("电子发票")}
# Blue is the original invoice, red the reversal (红冲) of all or part of a blue one.
INVOICE_DIRECTIONS = {"blue": N_("蓝字"), "red": N_("红字")}
# pending: waits for the vendor call (electronic) or for the cashier to record the printed
# numbers (paper); a red e-invoice also waits in pending until its blue one is issued.
# issuing: the vendor accepted it and its result is awaited. not_needed: a red invoice whose
# blue one failed or was voided, so there is nothing to reverse. last_error stores the reason.
INVOICE_STATUSES = {
    "pending": N_("待开票"),
    "issuing": N_("开票中"),
    "issued": N_("已开票"),
    "failed": N_("开票失败"),
    "voided": N_("已作废"),
    "not_needed": N_("无需红冲"),
}
# Statuses of an invoice that stands or may still stand; a payment has at most one such blue invoice.
LIVE_STATUSES = ("pending", "issuing", "issued")
DEFAULT_VAT_RATE = Decimal("0.09")


def utcnow():
    return datetime.now(timezone.utc)


class InvoiceProfile(CompanyOwned, db.Model):
    """The face of a company's invoices and receipts and its VAT rule; the method itself is Company.invoice_mode."""

    __table_args__ = (sa.UniqueConstraint("company_id"),)

    id = sa.Column(sa.Integer, primary_key=True)
    # Heading printed on the self-printed receipt, e.g. 津南热力有限公司收款收据; empty uses the default.
    title = sa.Column(sa.String(100), nullable=False, default="")
    # Printed on the receipt and sent as the e-invoice remark.
    notes = sa.Column(sa.String(200), nullable=False, default="")
    # PNG of the company's receipt seal (财务专用章), drawn on the self-printed receipt.
    seal_png = sa.Column(sa.LargeBinary)
    # Seller's unified social credit code (纳税人识别号), sent to the e-invoice vendor as userTax.
    seller_tax_id = sa.Column(sa.String(20), nullable=False, default="")
    # VAT rate of taxable (non-residential) heat, e.g. 0.09.
    vat_rate = sa.Column(Rate(), nullable=False, default=DEFAULT_VAT_RATE)
    # Residential heat (居民, 低保) is VAT-exempt in the northern heating region.
    residential_exempt = sa.Column(sa.Boolean, nullable=False, default=True)
    updated_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    updated_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)


class Invoice(CompanyOwned, db.Model):
    """One tax invoice of a payment: a blue invoice, or a red one reversing part or all of a blue one."""

    __table_args__ = (
        sa.UniqueConstraint("company_id", "order_no"),
        # A printed paper invoice is identified by code and number; NULL codes (e-invoices) never clash.
        sa.UniqueConstraint("company_id", "invoice_code", "invoice_number"),
        sa.Index("ix_invoice_company_payment", "company_id", "payment_id"),
        sa.Index("ix_invoice_company_status", "company_id", "status"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    payment_id = sa.Column(sa.Integer, sa.ForeignKey("payment.id"), nullable=False)
    medium = sa.Column(sa.String(12), nullable=False)
    direction = sa.Column(sa.String(8), nullable=False, default="blue")
    # The blue invoice a red one reverses.
    original_id = sa.Column(sa.Integer, sa.ForeignKey("invoice.id"))
    status = sa.Column(sa.String(12), nullable=False, default="pending")
    # Tax-inclusive total and its VAT, the sums of the lines; negative on a red invoice.
    amount = sa.Column(Money(), nullable=False)
    tax_amount = sa.Column(Money(), nullable=False)
    # Our order number sent to the e-invoice vendor, unique per company, which makes a resubmit harmless.
    order_no = sa.Column(sa.String(40))
    # The vendor's serial of the request (Nuonuo invoiceSerialNum).
    vendor_serial = sa.Column(sa.String(64))
    # Paper: the 10- or 12-digit invoice code and the 8-digit number. Electronic: the 20-digit number only.
    invoice_code = sa.Column(sa.String(12))
    invoice_number = sa.Column(sa.String(20))
    pdf = sa.Column(sa.LargeBinary)
    pdf_url = sa.Column(sa.String(500), nullable=False, default="")
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    # Why the vendor step failed, or why a red invoice is not needed (status not_needed).
    last_error = sa.Column(sa.String(500), nullable=False, default="")
    # last_error as Message.as_data() (app.i18n) when it was stored with its msgid; pages translate it.
    last_error_message = sa.Column(sa.JSON)
    # Why a red invoice was issued, or why a paper invoice was voided, in Chinese as the vendor receives it.
    reason = sa.Column(sa.String(255), nullable=False, default="")
    # The reason of a red invoice as a msgid and values (Message.as_data()), so pages show it in the reader's language.
    reason_message = sa.Column(sa.JSON)
    # What caused a red invoice: process_instance (a waiver) or refund, and its id.
    cause_type = sa.Column(sa.String(32))
    cause_id = sa.Column(sa.Integer)
    recorded_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=utcnow)
    issued_at = sa.Column(sa.DateTime(timezone=True))
    voided_at = sa.Column(sa.DateTime(timezone=True))
    voided_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))

    payment = db.relationship("Payment")
    original = db.relationship("Invoice", remote_side=[id])
    recorded_by = db.relationship("User", foreign_keys=[recorded_by_id])
    voided_by = db.relationship("User", foreign_keys=[voided_by_id])
    lines = db.relationship("InvoiceLine", order_by="InvoiceLine.position", back_populates="invoice")

    @property
    def status_label(self):
        return translate_label(INVOICE_STATUSES.get(self.status, self.status))

    @property
    def medium_label(self):
        return translate_label(INVOICE_MEDIA.get(self.medium, self.medium))

    @property
    def direction_label(self):
        return translate_label(INVOICE_DIRECTIONS.get(self.direction, self.direction))

    @property
    def shown_reason(self):
        """The reason in the reader's language when it was stored with its msgid, else as typed (a void reason)."""
        return stored_message(self.reason_message, self.reason)

    @property
    def shown_last_error(self):
        """The last vendor error in the reader's language when it was stored with its msgid, else as stored."""
        return stored_message(self.last_error_message, self.last_error)


class InvoiceLine(CompanyOwned, db.Model):
    """One line of an invoice: what was paid for, the user type that decides its VAT, and the VAT."""

    __table_args__ = (sa.UniqueConstraint("company_id", "invoice_id", "position"),)

    id = sa.Column(sa.Integer, primary_key=True)
    invoice_id = sa.Column(sa.Integer, sa.ForeignKey("invoice.id"), nullable=False)
    position = sa.Column(sa.Integer, nullable=False)
    label = sa.Column(sa.String(100), nullable=False)
    # The season the paid receivable belongs to; NULL for prior arrears.
    season_id = sa.Column(sa.Integer, sa.ForeignKey("season.id"))
    # What the line invoices: charge (a season's heating charge or prior arrears) or late_fee
    # (a season's late fees), so that a waiver reverses only lines of what it lowered.
    item = sa.Column(sa.String(16), nullable=False, default="charge", server_default="charge")
    user_type = sa.Column(sa.String(16), nullable=False)
    # Tax-inclusive amount, the rate applied (0 when exempt) and the VAT in it.
    amount = sa.Column(Money(), nullable=False)
    tax_rate = sa.Column(Rate(), nullable=False)
    tax_amount = sa.Column(Money(), nullable=False)
    vat_exempt = sa.Column(sa.Boolean, nullable=False, default=False)

    invoice = db.relationship("Invoice", back_populates="lines")
