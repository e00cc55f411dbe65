"""Time helpers: one notion of "now" and the timestamp format every response uses."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The precise current time, for scheduling and bookkeeping."""
    return datetime.now(UTC)


def utcnow() -> datetime:
    # Microseconds are dropped so that what is stored equals what is rendered and read back.
    return datetime.now(UTC).replace(microsecond=0)


def iso_utc(value: datetime) -> str:
    """`2026-02-01T09:00:03Z`."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
