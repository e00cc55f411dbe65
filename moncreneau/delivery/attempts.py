"""One attempt at a delivery: the request's headers, and what its answer settles."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from moncreneau import clock
from moncreneau.config import Settings
from moncreneau.delivery import schedule, sender, signing
from moncreneau.delivery.store import DEAD, FAILED, SUCCEEDED, Claimed, Settlement
from moncreneau.ops import metrics
from moncreneau.retry_after import parse_retry_after

log = logging.getLogger(__name__)


def request_headers(claimed: Claimed, timestamp: int) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": sender.USER_AGENT,
        "X-Moncreneau-Event": claimed.event_type,
        "X-Moncreneau-Delivery": claimed.id,
        "X-Moncreneau-Attempt": str(claimed.attempt),
        "X-Moncreneau-Timestamp": str(timestamp),
        "X-Webhook-Version": claimed.payload_version,
        **signing.signature_headers(claimed.secrets, claimed.id, timestamp, claimed.body),
    }


def outcome(
    claimed: Claimed, response: sender.Response, started: datetime, settings: Settings
) -> Settlement:
    now = clock.now()
    next_at = None
    if response.ok:
        status = SUCCEEDED
    elif response.status_code == 410 or claimed.attempt >= claimed.attempt_budget:
        status = DEAD
    else:
        status = FAILED
        next_at = _next_attempt(claimed, response, now, settings)
    return Settlement(
        claimed=claimed,
        started_at=started,
        duration_ms=response.duration_ms,
        status_code=response.status_code,
        error=response.error,
        excerpt=response.excerpt,
        status=status,
        next_attempt_at=next_at,
    )


def _next_attempt(
    claimed: Claimed, response: sender.Response, now: datetime, settings: Settings
) -> datetime:
    try:
        retry_after = None
        if response.status_code in (429, 503):
            retry_after = parse_retry_after(response.retry_after, now)
        return schedule.next_attempt(now, claimed.attempt, settings.retry_schedule, retry_after)
    except Exception:
        # Whatever the answer held, the attempt is recorded: tried again late, not at once.
        log.exception("delivery %s: no next attempt could be scheduled", claimed.id)
        return now + timedelta(seconds=schedule.MAX_RETRY_AFTER)


def observe(settlement: Settlement) -> None:
    status = settlement.status
    metrics.DELIVERY_ATTEMPTS.labels(status).inc()
    metrics.ATTEMPT_SECONDS.labels(status).observe(settlement.duration_ms / 1000)
    claimed = settlement.claimed
    log.log(
        logging.DEBUG if status == SUCCEEDED else logging.INFO,
        "delivery %s attempt %d %s: %s",
        claimed.id,
        claimed.attempt,
        status,
        settlement.status_code or settlement.error,
        extra={
            "delivery_id": claimed.id,
            "event_id": claimed.event_id,
            "webhook_id": claimed.subscription_id,
            "attempt": claimed.attempt,
            "status": settlement.status_code,
        },
    )
