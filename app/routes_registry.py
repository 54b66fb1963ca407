"""Blueprints of the processes, payments and field-work features, imported here in one place."""

from app.payments.routes import bp as payments_bp
from app.processes.routes import bp as processes_bp

BLUEPRINTS = [processes_bp, payments_bp]
