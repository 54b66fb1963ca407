"""Process inbox and requests (filled in by the processes feature)."""

from flask import Blueprint

bp = Blueprint("processes", __name__, url_prefix="/processes")
