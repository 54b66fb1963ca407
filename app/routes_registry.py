"""Blueprints of the processes, payments and field-work features and of the JSON API, imported here in one place."""

from app.api.routes import bp as api_bp
from app.payments.routes import bp as payments_bp
from app.processes.design_routes import bp as designer_bp
from app.processes.routes import bp as processes_bp

BLUEPRINTS = [processes_bp, designer_bp, payments_bp, api_bp]
