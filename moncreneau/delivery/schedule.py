"""When the next attempt happens: the configured schedule with jitter, or Retry-After."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

# Each delay is moved by up to this fraction either way, so that retries of a burst of
# failures do not all land on the receiver at the same instant.
JITTER = 0.2
# A Retry-After longer than this is capped: a receiver should not park a delivery for weeks.
MAX_RETRY_AFTER = 86400.0


def delay_after(attempt: int, schedule: tuple[float, ...], retry_after: float | None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    base = schedule[min(attempt, len(schedule)) - 1]
    delay = base * random.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def next_attempt(
    now: datetime, attempt: int, schedule: tuple[float, ...], retry_after: float | None = None
) -> datetime:
    return now + timedelta(seconds=delay_after(attempt, schedule, retry_after))
