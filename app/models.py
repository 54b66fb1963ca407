"""Import every feature's models so that the metadata (and Alembic) sees all tables."""

from app.billing.models import BillingRun, LedgerEntry  # noqa: F401
from app.fieldwork.models import FieldPhoto, FieldSubmission, FieldVisit  # noqa: F401
from app.ledger.models import LedgerImport, LedgerValueMap  # noqa: F401
from app.network.models import Account, Building, Community, HeatSource, Station, Unit  # noqa: F401
from app.network.valves import ValveChange  # noqa: F401
from app.org.audit import AuthEvent, LoginThrottle  # noqa: F401
from app.org.models import Company, CompanyFunction, Group, Role, User, UserRole  # noqa: F401
from app.processes.models import DecisionVersion, EscalationRule, HumanTask, ProcessEvent, ProcessInstance, ProcessModel  # noqa: F401
from app.invoicing.models import Invoice, InvoiceLine, InvoiceProfile  # noqa: F401
from app.payments.models import (  # noqa: F401
    ChannelStatement, OnlineOrder, Payment, PaymentNotification, ReceiptCounter, ReconciliationItem, ReconciliationRun,
    WechatMerchant,
)
from app.messaging.models import FinanceVoucher, MeterReading, MeterReadingReview, OutboxEvent, ProcessedMessage  # noqa: F401
from app.tariffs.models import ChargeAreaRule, Season, Tariff, TariffPrice  # noqa: F401
from app.hq.models import CommunityDailyTotal, CompanyDailyTotal, StepDailyTotal  # noqa: F401
import app.hq.totals  # noqa: F401,E402  (keeps the daily totals in step with ledger inserts)
import app.tariffs.rates  # noqa: F401,E402  (renews company.tariff_stamp on tariff writes)
import app.org.services  # noqa: F401,E402  (renews company.rights_stamp on role and function writes)
