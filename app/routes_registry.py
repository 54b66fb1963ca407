"""Blueprints of the processes, payments, invoicing and reconciliation features and of the JSON API, imported here in one place."""

from app.api.routes import bp as api_bp
from app.invoicing.routes import bp as invoicing_bp
from app.payments.reconciliation_routes import bp as reconciliation_bp
from app.payments.routes import bp as payments_bp
from app.processes.routes import bp as processes_bp

BLUEPRINTS = [processes_bp, payments_bp, invoicing_bp, reconciliation_bp, api_bp]
