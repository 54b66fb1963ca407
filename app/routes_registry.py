"""Blueprints of the processes, payments, field-work and billing-desk features and of the JSON API, imported here in one place."""

from app.api.routes import bp as api_bp
from app.billing.pages import bp as billing_desk_bp
from app.payments.routes import bp as payments_bp
from app.processes.routes import bp as processes_bp

BLUEPRINTS = [processes_bp, payments_bp, api_bp, billing_desk_bp]
