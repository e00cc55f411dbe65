"""What the relay and the workers need of a webhook: who wants an event, its keys, its pauses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from moncreneau import clock
from moncreneau.clock import iso_utc
from moncreneau.delivery import store as deliveries
from moncreneau.delivery.store import Subscriber
from moncreneau.domain.events import DISABLED_EVENT, TEST_EVENT
from moncreneau.models import EventRecord, WebhookSubscription
from moncreneau.outbox import store


def wants(subscription: Subscriber, event_type: str) -> bool:
    if event_type == TEST_EVENT:
        return False
    return "*" in subscription.events or event_type in subscription.events


def represent(subscription: WebhookSubscription) -> dict[str, Any]:
    """A webhook's public form: in API responses and in `webhook.disabled` events."""
    return {
        "id": subscription.id,
        "url": subscription.url,
        "events": list(subscription.events),
        "description": subscription.description,
        "enabled": subscription.enabled,
        "version": subscription.version,
        "payload": subscription.payload,
        "ordering": subscription.ordering,
        "disabledReason": subscription.disabled_reason,
        "pausedUntil": _pause_end(subscription),
        "previousSecretExpiresAt": (
            iso_utc(subscription.previous_secret_expires_at)
            if subscription.previous_secret_expires_at
            else None
        ),
        "createdAt": iso_utc(subscription.created_at),
        "updatedAt": iso_utc(subscription.updated_at),
    }


def _pause_end(subscription: WebhookSubscription) -> str | None:
    until = subscription.paused_until
    return iso_utc(until) if until is not None and until > clock.now() else None


class SigningKeys(Protocol):
    """What signing needs of a webhook: a subscription, or a row of its columns."""

    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None


def secrets_of(
    subscription: SigningKeys, open_secret: Callable[[str], str], now: datetime
) -> tuple[str, ...]:
    """The secrets deliveries are signed with: the current one, then one in its grace period."""
    current = open_secret(subscription.secret)
    expires = subscription.previous_secret_expires_at
    if subscription.previous_secret and expires and expires > now:
        return (current, open_secret(subscription.previous_secret))
    return (current,)


def end_pause(session: Session, subscription: WebhookSubscription) -> None:
    """What the pause put off is due now."""
    until = subscription.paused_until
    if until is None:
        return
    # The deliveries first, then the webhook: the order in which a worker's recorder
    # takes the same rows, so the two never wait on each other.
    deliveries.due_now(session, subscription.id, until, clock.now())
    subscription.paused_until = None


def pause_sending(
    session: Session,
    subscription_id: int,
    now: datetime,
    shortest: timedelta,
    longest: timedelta,
) -> datetime:
    """No worker claims the webhook's deliveries for as long as it has been failing.

    Each pause that ends in failure is followed by one about twice as long, within bounds.
    Returns when this pause ends (a longer one set meanwhile stays).
    """
    failing_since = session.scalar(
        select(WebhookSubscription.failing_since).where(WebhookSubscription.id == subscription_id)
    )
    failing = now - failing_since if failing_since else shortest
    until = now + min(max(failing, shortest), longest)
    # In one statement: another worker may be pausing it at the same moment.
    session.execute(
        update(WebhookSubscription)
        .where(
            WebhookSubscription.id == subscription_id,
            or_(
                WebhookSubscription.paused_until.is_(None),
                WebhookSubscription.paused_until < until,
            ),
        )
        .values(paused_until=until)
    )
    return until


def record_disabled(
    session: Session, subscription: WebhookSubscription, reason: str, now: datetime
) -> EventRecord:
    """Disable a subscription and append `webhook.disabled` for the organization's others."""
    subscription.enabled = False
    subscription.disabled_reason = reason
    subscription.updated_at = now
    session.flush()
    return store.append(
        session,
        organization_id=subscription.organization_id,
        type=DISABLED_EVENT,
        occurred_at=now,
        data={"webhookId": subscription.id, "reason": reason},
        object={**represent(subscription)},
    )
