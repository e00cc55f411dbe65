"""The delivery log as integrators read it, and manual and bulk replay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select, text, update
from sqlalchemy.orm import Session

from moncreneau import clock
from moncreneau.api.fields import is_public_id
from moncreneau.clock import iso_utc, utcnow
from moncreneau.delivery.endpoints import represent as represent_subscription
from moncreneau.delivery.store import DEAD, ERASED, FAILED, OPEN, PENDING
from moncreneau.domain.errors import Conflict, Gone, NotFound
from moncreneau.models import OPEN_DELIVERY, Delivery, DeliveryAttempt, WebhookSubscription
from moncreneau.pagination import Page, keyset_page
from moncreneau.webhooks.service import find as find_subscription
from moncreneau.webhooks.service import to_send_now


def _when(value: datetime | None) -> str | None:
    return iso_utc(value) if value else None


def represent(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "webhookId": delivery.subscription_id,
        "eventId": delivery.event_id,
        "eventType": delivery.event_type,
        "version": delivery.payload_version,
        "status": delivery.status,
        "attemptCount": delivery.attempts,
        "nextAttemptAt": _when(delivery.next_attempt_at) if delivery.status in OPEN else None,
        "lastStatusCode": delivery.last_status_code,
        "lastError": delivery.last_error,
        "createdAt": iso_utc(delivery.created_at),
        "updatedAt": iso_utc(delivery.updated_at),
    }


def represent_attempt(attempt: DeliveryAttempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "at": attempt.started_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "statusCode": attempt.status_code,
        "durationMs": attempt.duration_ms,
        "error": attempt.error,
        "responseBody": attempt.response_excerpt,
    }


def _find(
    session: Session, organization_id: int, webhook_id: int, delivery_id: str, *, sending: bool
) -> Delivery:
    (to_send_now if sending else find_subscription)(session, organization_id, webhook_id)
    delivery = is_public_id(delivery_id, "msg") and session.scalar(
        select(Delivery).where(Delivery.id == delivery_id, Delivery.subscription_id == webhook_id)
    )
    if not delivery:
        raise NotFound(f"No delivery {delivery_id!r} for webhook {webhook_id}.")
    return delivery


def get(
    session: Session, organization_id: int, webhook_id: int, delivery_id: str
) -> dict[str, Any]:
    delivery = _find(session, organization_id, webhook_id, delivery_id, sending=False)
    attempts = session.scalars(
        select(DeliveryAttempt)
        .where(DeliveryAttempt.delivery_seq == delivery.seq)
        .order_by(DeliveryAttempt.number, DeliveryAttempt.id)
    )
    return {
        **represent(delivery),
        "attempts": [represent_attempt(a) for a in attempts],
        # null once purged (payload retention)
        "payload": json.loads(delivery.body) if delivery.body is not None else None,
    }


HEALTH_WINDOW = timedelta(hours=24)


def health(session: Session, subscription: WebhookSubscription, now: datetime) -> dict[str, Any]:
    """How a webhook's deliveries fare: the last day's attempts, the latest success and
    failure, and what waits to be sent.

    One round trip of index range reads (see the partial indexes on attempts and open
    deliveries), so it costs the same with a million deliveries behind it.
    """
    since = now - HEALTH_WINDOW
    sub = subscription.id
    attempts = DeliveryAttempt.__table__
    ok = attempts.c.error.is_(None)
    failed = attempts.c.error.is_not(None)

    def in_day(condition: Any) -> Any:
        return (
            select(func.count())
            .where(attempts.c.subscription_id == sub, condition, attempts.c.started_at >= since)
            .scalar_subquery()
        )

    def latest(condition: Any) -> Any:
        return (
            select(func.max(attempts.c.started_at))
            .where(attempts.c.subscription_id == sub, condition)
            .scalar_subquery()
        )

    def open_deliveries(column: Any) -> Any:
        return (
            select(column)
            .where(Delivery.subscription_id == sub, text(OPEN_DELIVERY))
            .scalar_subquery()
        )

    row = session.execute(
        select(
            in_day(ok).label("succeeded"),
            in_day(failed).label("failed"),
            latest(ok).label("last_success"),
            latest(failed).label("last_failure"),
            open_deliveries(func.count()).label("waiting"),
            open_deliveries(func.min(Delivery.next_attempt_at)).label("next_at"),
        )
    ).one()
    last_error = None
    last_failure = _aware(row.last_failure)
    if last_failure is not None:
        last_error = session.scalar(
            select(attempts.c.error)
            .where(
                attempts.c.subscription_id == sub,
                failed,
                attempts.c.started_at == last_failure,
            )
            .limit(1)
        )
    total = row.succeeded + row.failed
    next_at = _aware(row.next_at)
    if next_at is not None and subscription.paused_until and subscription.paused_until > now:
        next_at = max(next_at, subscription.paused_until)
    if not subscription.enabled:
        next_at = None
    return {
        "attempts24h": total,
        "successRate24h": round(row.succeeded / total, 4) if total else None,
        "lastSuccessAt": _when(_aware(row.last_success)),
        "lastFailureAt": _when(last_failure),
        "lastError": last_error,
        "waiting": row.waiting,
        "nextAttemptAt": _when(next_at),
    }


def webhook_with_health(
    session: Session, organization_id: int, webhook_id: int, now: datetime
) -> dict[str, Any]:
    subscription = find_subscription(session, organization_id, webhook_id)
    return {**represent_subscription(subscription), "health": health(session, subscription, now)}


def _aware(value: datetime | None) -> datetime | None:
    # Aggregates bypass the column type: SQLite hands back text, PostgreSQL an aware time.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def list_page(
    session: Session,
    organization_id: int,
    webhook_id: int,
    limit: int,
    cursor: str | None,
    status: str | None = None,
    event_type: str | None = None,
) -> Page[dict[str, Any]]:
    """Newest first."""
    find_subscription(session, organization_id, webhook_id)
    query = select(Delivery).where(Delivery.subscription_id == webhook_id)
    if status:
        query = query.where(Delivery.status == status)
    if event_type:
        query = query.where(Delivery.event_type == event_type)
    return keyset_page(
        session,
        query,
        Delivery.seq,
        "deliveries",
        limit,
        cursor,
        lambda rows: [represent(d) for d in rows],
        newest_first=True,
        maximum=2**63 - 1,
    )


def retry(
    session: Session, organization_id: int, webhook_id: int, delivery_id: str
) -> dict[str, Any]:
    """Send it again now; a dead or succeeded delivery gets one more attempt."""
    delivery = _find(session, organization_id, webhook_id, delivery_id, sending=True)
    if delivery.status == ERASED or delivery.purged_at is not None:
        raise Gone(
            f"Delivery {delivery_id} cannot be sent again: its payload was "
            + ("erased with its appointment." if delivery.status == ERASED else "purged.")
        )
    now = utcnow()
    if delivery.locked_until is not None and delivery.locked_until > now:
        raise Conflict(f"Delivery {delivery_id} is being sent right now; retry once it settles.")
    if delivery.status not in OPEN or delivery.attempts >= delivery.attempt_budget:
        delivery.attempt_budget = delivery.attempts + 1
    delivery.status = FAILED if delivery.attempts else PENDING
    delivery.next_attempt_at = now
    delivery.queued_until = None
    delivery.updated_at = now
    session.flush()
    return represent(delivery)


# Deliveries one replay call schedules at most; call again while `hasMore`.
MAX_REPLAY = 1000


def replay(
    session: Session,
    organization_id: int,
    webhook_id: int,
    since: datetime,
    until: datetime,
    statuses: tuple[str, ...] = (FAILED, DEAD),
) -> tuple[list[str], bool]:
    """Schedule deliveries in `statuses` created in [since, until), oldest first, one more
    attempt now; at most MAX_REPLAY a call. Returns their ids and whether more are left."""
    to_send_now(session, organization_id, webhook_id)
    now = clock.now()
    chosen = list(
        session.scalars(
            select(Delivery.seq)
            .where(
                Delivery.subscription_id == webhook_id,
                Delivery.status.in_(statuses),
                # erased or purged payloads are gone for good
                Delivery.purged_at.is_(None),
                Delivery.created_at >= since,
                Delivery.created_at < until,
                # a failed delivery already due (one replayed a moment ago, say) needs none
                or_(Delivery.status == DEAD, Delivery.next_attempt_at > now),
            )
            .order_by(Delivery.seq)
            .limit(MAX_REPLAY + 1)
        )
    )
    more = len(chosen) > MAX_REPLAY
    ids = list(
        session.scalars(
            update(Delivery)
            .where(Delivery.seq.in_(chosen[:MAX_REPLAY]))
            .values(
                status=FAILED,
                attempt_budget=case(
                    (Delivery.attempt_budget > Delivery.attempts, Delivery.attempt_budget),
                    else_=Delivery.attempts + 1,
                ),
                next_attempt_at=now,
                queued_until=None,
                updated_at=now,
            )
            .returning(Delivery.id),
            execution_options={"synchronize_session": False},
        )
    )
    return ids, more
