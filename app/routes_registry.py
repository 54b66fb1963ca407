"""Blueprints of the processes, designer, payments, invoicing, reconciliation, field-work, onboarding, finance and
billing-desk features and of the JSON API, imported here in one place."""

from app.api.routes import bp as api_bp
from app.billing.pages import bp as billing_desk_bp
from app.fieldwork.routes import bp as fieldwork_bp
from app.invoicing.routes import bp as invoicing_bp
from app.messaging.routes import bp as finance_bp
from app.onboarding.routes import bp as onboarding_bp
from app.payments.reconciliation_routes import bp as reconciliation_bp
from app.payments.routes import bp as payments_bp
from app.processes.design_routes import bp as designer_bp
from app.processes.routes import bp as processes_bp

BLUEPRINTS = [
    processes_bp, designer_bp, payments_bp, invoicing_bp, reconciliation_bp, api_bp, onboarding_bp, fieldwork_bp, finance_bp,
    billing_desk_bp,
]
