"""Counter payments (filled in by the payments feature)."""

from flask import Blueprint

bp = Blueprint("payments", __name__, url_prefix="/payments")
