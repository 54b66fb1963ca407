"""Local time of the companies: timestamps are stored in UTC and shown in China Standard Time."""

from datetime import timezone
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
