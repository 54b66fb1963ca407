"""Local time of the companies: timestamps are stored in UTC and shown in China Standard Time."""

from datetime import timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

LOCAL_TIME = ZoneInfo("Asia/Shanghai")


def local_time(moment):
    """Convert a stored UTC time to local time; SQLite returns naive UTC timestamps."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(LOCAL_TIME)


def format_local(moment, pattern="%Y-%m-%d %H:%M"):
    """Format a stored time in local time, or '' for None."""
    return local_time(moment).strftime(pattern) if moment is not None else ""


def plain_decimal(value):
    """A Decimal without exponent or trailing zeros, e.g. 40.00 → '40', 0.20 → '0.2'."""
    if value is None:
        return ""
    text = format(Decimal(value).normalize(), "f")
    return text


def format_area(value):
    """An area with at least two decimals and no trailing zeros beyond, e.g. 1141.6900 → '1141.69'."""
    if value is None:
        return ""
    text = plain_decimal(value)
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"
