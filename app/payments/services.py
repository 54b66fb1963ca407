"""Amounts owed, counter collection and receipt numbers."""

import logging
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa
from flask_babel import gettext as _
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from app.billing.models import (
    ALLOCATION_ORDERS,
    LATE_FEE_OWED_KINDS,
    LATE_FEE_RECEIVED_KINDS,
    RECEIVABLE_KINDS,
    RECEIVED_KINDS,
    AllocationPolicy,
    LedgerEntry,
    memo_columns,
)
from app.clock import local_time
from app.extensions import db
from app.i18n import M_, join_items, translate_label
from app.locking import lock_row
from app.messaging.events import emit
from app.money import CENT, ZERO, format_money
from app.network.models import Account
from app.org.models import Company
from app.payments.models import PAYMENT_METHODS, Payment, ReceiptCounter, utcnow
from app.tariffs.models import Season
from app.texts import clean_text

logger = logging.getLogger(__name__)

LATE_FEE_PAYMENT = "late_fee_payment"

# Receipt dates and the year in receipt numbers follow the companies' local time.
# Largest amount the counter accepts in one payment, in yuan, as a guard against typing errors.
# Any amount above what the account owes is rejected as well.
MAX_COUNTER_AMOUNT = Decimal("10000000")
PAYER_NAME_MAX = 100
NOTE_MAX = 255


class PaymentError(ValueError):
    """A payment that cannot be taken as entered. The message is shown to the cashier."""


@dataclass(frozen=True)
class SeasonOwed:
    """Receivable, payments and posted late fees of one account for one season.

    `late_fee` is the posted late fee less late-fee waivers; `late_fee_received` is what
    payments paid of it, less refunds and reversals.
    """

    season: Season
    receivable: Decimal
    received: Decimal
    late_fee: Decimal = ZERO
    late_fee_received: Decimal = ZERO

    @property
    def outstanding(self):
        """The unpaid receivable, late fees aside."""
        # A season paid beyond a receivable that was reduced later is a credit, which does not
        # offset other debts.
        return max(self.receivable - self.received, ZERO)

    @property
    def late_fee_outstanding(self):
        return max(self.late_fee - self.late_fee_received, ZERO)


@dataclass(frozen=True)
class AmountOwed:
    """Amounts owed by one account: prior arrears, then each season with a receivable, oldest first."""

    arrears: Decimal
    arrears_received: Decimal
    seasons: tuple

    @property
    def arrears_outstanding(self):
        return max(self.arrears - self.arrears_received, ZERO)

    @property
    def current(self):
        """The latest season with a receivable, or None."""
        return self.seasons[-1] if self.seasons else None

    @property
    def received(self):
        return self.arrears_received + sum((s.received for s in self.seasons), ZERO)

    @property
    def late_fees_outstanding(self):
        return sum((s.late_fee_outstanding for s in self.seasons), ZERO)

    @property
    def total(self):
        """Everything the account owes: arrears, receivables and posted late fees."""
        return self.arrears_outstanding + sum((s.outstanding for s in self.seasons), ZERO) + self.late_fees_outstanding


@dataclass(frozen=True)
class ChargeFacts:
    """Charge area, unit price and ratio behind a season's fee, as the account's ledger lines recorded them."""

    charge_area: Decimal | None
    unit_price: Decimal | None
    ratio: Decimal | None


def amount_owed(account):
    """Sum an account's ledger lines into the amounts it owes, posted late fees included."""
    # One statement loads the sums and their seasons. Grouping by season.id lets both
    # databases return the season's other columns, which depend on that key.
    rows = db.session.execute(
        sa.select(LedgerEntry.season_id, LedgerEntry.kind, sa.func.sum(LedgerEntry.amount), Season)
        .select_from(LedgerEntry)
        .outerjoin(Season, Season.id == LedgerEntry.season_id)
        .where(LedgerEntry.account_id == account.id)
        .group_by(LedgerEntry.season_id, LedgerEntry.kind, Season.id)
    ).all()
    arrears = arrears_received = ZERO
    receivable, received, late_fee, late_fee_received = {}, {}, {}, {}
    loaded_seasons = {}
    for season_id, kind, amount, season in rows:
        if season is not None:
            loaded_seasons[season_id] = season
        if season_id is None:
            if kind in ("prior_arrears", "write_off"):
                arrears += amount
            elif kind in RECEIVED_KINDS:
                arrears_received -= amount
            continue
        if kind in RECEIVABLE_KINDS:
            receivable[season_id] = receivable.get(season_id, ZERO) + amount
        elif kind in RECEIVED_KINDS:
            received[season_id] = received.get(season_id, ZERO) - amount
        elif kind in LATE_FEE_OWED_KINDS:
            late_fee[season_id] = late_fee.get(season_id, ZERO) + amount
        elif kind in LATE_FEE_RECEIVED_KINDS:
            late_fee_received[season_id] = late_fee_received.get(season_id, ZERO) - amount
    season_ids = set(receivable) | set(received) | set(late_fee)
    # A season outside the tenant scope joins as None and is left out, as a separate query would.
    seasons = sorted(
        (loaded_seasons[season_id] for season_id in season_ids if season_id in loaded_seasons),
        key=lambda season: (season.start_on, season.id),
    )
    owed = tuple(
        SeasonOwed(s, receivable.get(s.id, ZERO), received.get(s.id, ZERO), late_fee.get(s.id, ZERO),
                   late_fee_received.get(s.id, ZERO))
        for s in seasons
    )
    return AmountOwed(arrears=arrears, arrears_received=arrears_received, seasons=owed)


@dataclass(frozen=True)
class AllocationRule:
    """How a company's payments are split: the season order and where late fees go."""

    order: str = "oldest_first"
    late_fees_last: bool = False


def allocation_rule(company_id):
    """Return the company's AllocationRule; without a stored policy, oldest first with late fees after their season."""
    row = db.session.execute(
        sa.select(AllocationPolicy.order, AllocationPolicy.late_fees_last).where(AllocationPolicy.company_id == company_id)
    ).first()
    return AllocationRule(row.order, bool(row.late_fees_last)) if row else AllocationRule()


def allocation_order(company_id):
    """Return the company's payment allocation order (ALLOCATION_ORDERS), `oldest_first` by default."""
    return allocation_rule(company_id).order


def allocation_slots(owed, rule=AllocationRule()):
    """Return [(season or None, ledger kind, outstanding)] in the order a payment pays them.

    Seasons: `oldest_first` pays arrears from before the platform, then seasons by start
    date; `current_first` pays the latest season, then the rest oldest first. A season's
    posted late fees (kind `late_fee_payment`) follow its receivable (kind `payment`), or
    with `late_fees_last` come after every receivable, in the same season order.
    """
    if rule.order not in ALLOCATION_ORDERS:
        raise PaymentError(_(
            "付款分配顺序「%(value)s」无效；请在分配规则中选择 %(choices)s。",
            value=rule.order, choices=join_items(translate_label(label) for label in ALLOCATION_ORDERS.values()),
        ))
    targets = [(None, owed.arrears_outstanding, ZERO)] + [
        (s.season, s.outstanding, s.late_fee_outstanding) for s in owed.seasons
    ]
    if rule.order == "current_first" and owed.seasons:
        targets = [targets[-1]] + targets[:-1]
    principal, late_fees = [], []
    for season, outstanding, late_fee in targets:
        principal.append((season, "payment", outstanding))
        if season is not None:
            (late_fees if rule.late_fees_last else principal).append((season, LATE_FEE_PAYMENT, late_fee))
    return principal + late_fees


def allocate_payment(owed, amount, rule=AllocationRule()):
    """Split `amount` over what is owed in the rule's order: [(season or None, ledger kind, part)].

    Counter and channel payments both call this with their company's allocation_rule(),
    so the same money pays the same seasons and late fees whichever way it arrives.
    """
    remaining = amount
    parts = []
    for season, kind, outstanding in allocation_slots(owed, rule):
        if remaining <= 0:
            break
        part = min(remaining, outstanding)
        if part > 0:
            parts.append((season, kind, part))
            remaining -= part
    return parts


def payment_line_key(prefix, season, kind):
    """The idempotency-key suffix of one allocated part: season id or `arrears`, late fees marked."""
    target = season.id if season else "arrears"
    return f"{prefix}:late_fee:{target}" if kind == LATE_FEE_PAYMENT else f"{prefix}:{target}"


AMOUNT_PATTERN = re.compile(r"-?([0-9]{1,3}(,[0-9]{3})+(\.[0-9]+)?|[0-9]+(\.[0-9]+)?)")


def parse_amount(value, label=None):
    """Convert an entered amount to Decimal yuan, or raise PaymentError naming the input and its `label`."""
    label = label or _("收款金额")
    if isinstance(value, float):
        raise PaymentError(_("%(field)s %(value)s 是浮点数；请以字符串或 Decimal 传入。", field=label, value=repr(value)))
    text = str(value).strip() if value is not None else ""
    if not text:
        raise PaymentError(_("请填写%(field)s。", field=label))
    # Thousands separators only in groups of three, ASCII digits only: "1,50" is a typo, not 150.
    if not AMOUNT_PATTERN.fullmatch(text):
        raise PaymentError(_("%(field)s「%(value)s」不是有效数字，请填写如 1234.50 或 1,234.50 的金额。", field=label, value=text))
    text = text.replace(",", "")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise PaymentError(_("%(field)s「%(value)s」不是有效数字，请填写如 1234.50 的金额。", field=label, value=text)) from None
    if not amount.is_finite():
        raise PaymentError(_("%(field)s「%(value)s」不是有效数字，请填写如 1234.50 的金额。", field=label, value=text))
    if amount <= 0:
        raise PaymentError(_("%(field)s「%(value)s」须大于 0，请填写实际金额。", field=label, value=text))
    if amount > MAX_COUNTER_AMOUNT:
        raise PaymentError(_(
            "%(field)s「%(value)s」超过单笔上限 %(max)s 元，请核对金额。", field=label, value=text, max=MAX_COUNTER_AMOUNT
        ))
    if amount != amount.quantize(CENT):
        raise PaymentError(_("%(field)s「%(value)s」超过两位小数，金额只能精确到分，请改正后重试。", field=label, value=text))
    return amount.quantize(CENT)


def _clean_text(value, limit, label):
    text = clean_text(value)
    if len(text) > limit:
        raise PaymentError(_(
            "%(field)s最长 %(max)s 个字，当前 %(count)s 个字，请删减后重试。", field=label, max=limit, count=len(text)
        ))
    return text


def collect_payment(account, amount, method, cashier, payer_name=None, note="", request_token=None):
    """Take a counter payment and post its ledger lines in one transaction.

    A payment already stored under `request_token` (a resubmitted form) is returned as it
    is, and nothing is posted again.
    """
    amount = parse_amount(amount)
    if method not in PAYMENT_METHODS:
        raise PaymentError(_(
            "收款方式「%(value)s」无效，请选择：%(choices)s。",
            value=method, choices=join_items(translate_label(label) for label in PAYMENT_METHODS.values()),
        ))
    payer_name = _clean_text(payer_name, PAYER_NAME_MAX, _("交款人")) or account.customer_name.strip()
    note = _clean_text(note, NOTE_MAX, _("备注"))
    request_token = (request_token or "").strip()[:64] or None
    try:
        payment, created = _post_payment(account, amount, method, cashier, payer_name, note, request_token)
        db.session.commit()
    except IntegrityError:
        # Without a row lock (SQLite), two submits of one form can both pass the token check.
        # The unique token then keeps the first payment, and the second submit returns it.
        db.session.rollback()
        payment = _payment_for_token(account.company_id, request_token) if request_token else None
        if payment is None or payment.account_id != account.id:
            raise
        created = False
    except Exception:
        db.session.rollback()
        raise
    if created:
        logger.info("Payment %s of %s on account %s by user %s, receipt %s", payment.id, amount, account.id, cashier.id, payment.receipt_no)
        # Imported here because app.invoicing imports this module.
        from app.invoicing.issuing import payment_posted

        payment_posted(payment.id, payment.company_id)
    else:
        logger.info("Payment form %s for account %s was submitted again; kept payment %s", request_token, account.id, payment.id)
    return payment


def _post_payment(account, amount, method, cashier, payer_name, note, request_token):
    # The account row lock makes concurrent payments of one account wait for each other,
    # so each one checks what is owed after the previous one has been posted. On SQLite the
    # lock is the database write lock, so receipt numbers are taken one payment at a time too.
    lock_row(Account, account.id)
    if request_token:
        existing = _payment_for_token(account.company_id, request_token)
        if existing is not None:
            if existing.account_id != account.id:
                raise PaymentError(_("该收费表单已用于另一户，请刷新页面后重新收费。"))
            return existing, False

    owed = amount_owed(account)
    if owed.total <= 0:
        raise PaymentError(_("用户 %(number)s 当前没有欠费，无需收款。", number=account.account_no))
    if amount > owed.total:
        raise PaymentError(_(
            "收款金额 %(amount)s 元超过该户应缴合计 %(total)s 元。柜台暂不收预存款，请收取不超过 %(total)s 元。",
            amount=amount, total=owed.total,
        ))

    company = db.session.get(Company, account.company_id)
    rule = allocation_rule(account.company_id)
    paid_at = utcnow()
    payment = Payment(
        company_id=account.company_id, account_id=account.id, amount=amount, method=method, channel="counter",
        season_id=owed.current.season.id if owed.current else None, cashier_id=cashier.id, paid_at=paid_at,
        receipt_no=next_receipt_no(company, paid_at), payer_name=payer_name, note=note, request_token=request_token,
    )
    db.session.add(payment)
    db.session.flush()

    parts = allocate_payment(owed, amount, rule)
    for season, kind, part in parts:
        db.session.add(
            LedgerEntry(
                company_id=account.company_id, account_id=account.id, season_id=season.id if season else None,
                kind=kind, amount=-part, cause_type="payment", cause_id=payment.id,
                idempotency_key=payment_line_key(f"payment:{payment.id}", season, kind),
                **memo_columns(M_("收据 %(receipt_no)s", receipt_no=payment.receipt_no)), created_by_id=cashier.id,
            )
        )
    emit_payment_posted(payment, account, parts)
    db.session.flush()
    return payment, True


def emit_payment_posted(payment, account, parts, credit=ZERO):
    """Record the `payment.posted` event of a payment and how it was allocated (see docs/integrations.md).

    `parts` are allocate_payment() output; late-fee parts are listed under `late_fees`.
    """
    emit(payment.company_id, "payment.posted", str(payment.id), {
        "payment_id": payment.id, "receipt_no": payment.receipt_no, "account_id": account.id,
        "account_no": account.account_no, "amount": format_money(payment.amount), "method": payment.method,
        "channel": payment.channel, "channel_transaction_id": payment.channel_transaction_id, "paid_at": payment.paid_at,
        "allocations": [
            {"season": season.name if season else None, "amount": format_money(part)}
            for season, kind, part in parts if kind != LATE_FEE_PAYMENT
        ],
        "late_fees": [
            {"season": season.name, "amount": format_money(part)} for season, kind, part in parts if kind == LATE_FEE_PAYMENT
        ],
        "credit": format_money(credit),
    }, occurred_at=payment.paid_at)


def _payment_for_token(company_id, request_token):
    return db.session.scalar(sa.select(Payment).filter_by(company_id=company_id, request_token=request_token))


def next_receipt_no(company, paid_at, block=None):
    """Take the company's next receipt number, e.g. TJ-2025-000001, under a row lock.

    The number is taken inside the caller's transaction, so a rolled-back payment also
    gives its number back and the sequence stays gapless. The counter row stays locked
    until that transaction ends, so callers take the number as late as they can. The
    sequence runs on across years, and the year part is the year of collection in local time.
    With `block` (a ReceiptNumberBlock of the company) the number comes from the block.
    """
    number = block.take() if block is not None else _take_counter_number(company.id)
    year = local_time(paid_at).year
    return f"{company.code}-{year}-{number:06d}"


class ReceiptNumberBlock:
    """Receipt numbers of one company reserved by a single counter update, for a batch of payments.

    The first `take` moves the counter on by `size` and locks its row until the transaction
    ends. Later takes hand out the reserved numbers in order, and reserve another `size` when
    they run out. A payment that fails inside a savepoint gives its number back with
    `restore(mark())` taken before it, so the next payment gets that number. `release`
    returns the numbers not handed out, and must run before the commit, so the sequence
    stays gapless.
    """

    def __init__(self, company_id, size):
        self.company_id = company_id
        self.size = max(1, size)
        self._next = None
        self._end = None

    def take(self):
        if self._next is None or self._next >= self._end:
            end = _take_counter_number(self.company_id, self.size) + self.size
            if self._next is None:
                self._next = end - self.size
            self._end = end
        number = self._next
        self._next += 1
        return number

    def mark(self):
        """Return the block's state, for `restore` after a rolled-back savepoint."""
        return self._next, self._end

    def restore(self, mark):
        """Go back to a state from `mark`; the savepoint rollback undid any reservation made since."""
        self._next, self._end = mark

    def release(self):
        """Set the counter back to the first number not handed out; returns how many were given back."""
        if self._next is None or self._next >= self._end:
            return 0
        unused = self._end - self._next
        db.session.execute(
            sa.update(ReceiptCounter)
            .where(ReceiptCounter.company_id == self.company_id)
            .values(next_number=self._next)
            .execution_options(synchronize_session=False)
        )
        self._end = self._next
        return unused


def _take_counter_number(company_id, count=1):
    # One UPDATE ... RETURNING locks the row and moves the counter on by `count`. The
    # statement returns the new value, so the first number taken is that value less `count`.
    update = (
        sa.update(ReceiptCounter)
        .where(ReceiptCounter.company_id == company_id)
        .values(next_number=ReceiptCounter.next_number + count)
        .returning(ReceiptCounter.next_number)
        .execution_options(synchronize_session=False)
    )
    next_number = db.session.execute(update).scalar()
    if next_number is not None:
        return next_number - count
    # The company's first receipt creates the row. A concurrent first payment may insert it
    # first, so a conflict is ignored and the row is updated as above.
    dialect = db.session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    db.session.execute(
        insert(ReceiptCounter).values(company_id=company_id, next_number=1).on_conflict_do_nothing(index_elements=["company_id"])
    )
    return db.session.execute(update).scalar() - count


def charge_facts(account, season):
    """Charge area, unit price and ratio behind an account's fee for a season."""
    if season is None:
        return ChargeFacts(None, None, None)
    lines = db.session.scalars(
        sa.select(LedgerEntry)
        .where(LedgerEntry.account_id == account.id, LedgerEntry.season_id == season.id, LedgerEntry.kind.in_(("charge", "rerate")))
        .order_by(LedgerEntry.id)
    ).all()
    area = next((line.charge_area for line in lines if line.kind == "charge"), None)
    priced = [line for line in lines if line.unit_price is not None]
    latest = priced[-1] if priced else None
    return ChargeFacts(area, latest.unit_price if latest else None, latest.ratio if latest else None)



