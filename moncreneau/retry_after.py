"""Reading a Retry-After header, whoever wrote it: the worker's receivers and the API alike."""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After in seconds or as an HTTP date; None when absent or unreadable, whatever
    the receiver wrote."""
    if not value:
        return None
    value = value.strip()
    # Seconds are ASCII digits: `isdigit()` alone also takes "²", which `float()` refuses.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):  # a year of 20 digits overflows
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())
