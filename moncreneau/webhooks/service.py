"""Webhook subscriptions: create, read, change, delete, rotate the secret, send a test event."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from moncreneau import clock
from moncreneau.clock import iso_utc, utcnow
from moncreneau.config import Settings
from moncreneau.delivery import store as deliveries
from moncreneau.domain.errors import Conflict, Invalid, NotFound
from moncreneau.domain.events import APPOINTMENT_EVENT_TYPES
from moncreneau.models import EventRecord, WebhookSubscription
from moncreneau.outbox import store
from moncreneau.pagination import Page, keyset_page
from moncreneau.secretbox import SecretBox
from moncreneau.webhooks import payloads, signing
from moncreneau.webhooks.urls import check_url

TEST_EVENT = "webhook.test"
DISABLED_EVENT = "webhook.disabled"
SUBSCRIBABLE = (*APPOINTMENT_EVENT_TYPES, DISABLED_EVENT)


@dataclass(frozen=True)
class NewSubscription:
    url: str
    events: list[str]
    description: str | None = None
    version: str = payloads.LATEST
    enabled: bool = True
    payload: str = payloads.FULL


def _check_events(events: list[str]) -> list[str]:
    unknown = sorted({e for e in events if e != "*" and e not in SUBSCRIBABLE})
    if unknown:
        raise Invalid.field(
            "events", f"Unknown event type(s) {unknown}; choose among {list(SUBSCRIBABLE)} or *."
        )
    return list(dict.fromkeys(events))


def _check_version(version: str) -> str:
    if version not in payloads.VERSIONS:
        raise Invalid.field("version", f"Unknown payload version {version!r}.")
    return version


class Subscriber(Protocol):
    """What fan-out needs of a webhook: a subscription, or a row of its columns."""

    id: int
    events: list[str]
    version: str
    payload: str


def wants(subscription: Subscriber, event_type: str) -> bool:
    if event_type == TEST_EVENT:
        return False
    return "*" in subscription.events or event_type in subscription.events


def represent(subscription: WebhookSubscription) -> dict[str, Any]:
    return {
        "id": subscription.id,
        "url": subscription.url,
        "events": list(subscription.events),
        "description": subscription.description,
        "enabled": subscription.enabled,
        "version": subscription.version,
        "payload": subscription.payload,
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


def find_enabled(session: Session, organization_id: int, webhook_id: int) -> WebhookSubscription:
    """A webhook that deliveries can be sent to now; a disabled one is a Conflict."""
    subscription = find(session, organization_id, webhook_id)
    if not subscription.enabled:
        raise Conflict(
            f"Webhook {webhook_id} is disabled ({subscription.disabled_reason or 'by request'}); "
            'enable it with PATCH {"enabled": true} first.'
        )
    return subscription


def to_send_now(session: Session, organization_id: int, webhook_id: int) -> WebhookSubscription:
    """An enabled webhook for a send its owner asks for now, which ends a pause."""
    subscription = find_enabled(session, organization_id, webhook_id)
    end_pause(session, subscription)
    return subscription


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


def find(session: Session, organization_id: int, webhook_id: int) -> WebhookSubscription:
    subscription = session.get(WebhookSubscription, webhook_id)
    if (
        subscription is None
        or subscription.organization_id != organization_id
        or subscription.deleted_at is not None
    ):
        raise NotFound(f"No webhook with id {webhook_id}.")
    return subscription


def create(
    session: Session, organization_id: int, new: NewSubscription, box: SecretBox, settings: Settings
) -> dict[str, Any]:
    url = check_url(
        new.url, allow_private=settings.allow_private_urls, allowed=settings.allowed_networks
    )
    now = utcnow()
    secret = signing.generate_secret()
    subscription = WebhookSubscription(
        organization_id=organization_id,
        url=url,
        events=_check_events(new.events),
        description=new.description,
        version=_check_version(new.version),
        payload=new.payload,
        enabled=new.enabled,
        secret=box.seal(secret),
        created_at=now,
        updated_at=now,
    )
    session.add(subscription)
    session.flush()
    return {**represent(subscription), "secret": secret}


def get(session: Session, organization_id: int, webhook_id: int) -> dict[str, Any]:
    return represent(find(session, organization_id, webhook_id))


def list_page(
    session: Session, organization_id: int, limit: int, cursor: str | None
) -> Page[dict[str, Any]]:
    query = select(WebhookSubscription).where(
        WebhookSubscription.organization_id == organization_id,
        WebhookSubscription.deleted_at.is_(None),
    )
    return keyset_page(
        session,
        query,
        WebhookSubscription.id,
        "webhooks",
        limit,
        cursor,
        lambda rows: [represent(s) for s in rows],
    )


def change(
    session: Session,
    organization_id: int,
    webhook_id: int,
    values: dict[str, Any],
    settings: Settings,
) -> dict[str, Any]:
    subscription = find(session, organization_id, webhook_id)
    # A change (a fixed URL, say) is worth trying at once.
    end_pause(session, subscription)
    if "url" in values:
        url = check_url(
            values["url"],
            allow_private=settings.allow_private_urls,
            allowed=settings.allowed_networks,
        )
        if url != subscription.url:
            # How long the old address has been failing says nothing of the new one: it
            # would lengthen the next pause and bring the disabling closer.
            subscription.failing_since = None
        subscription.url = url
    if "events" in values:
        subscription.events = _check_events(values["events"])
    if "version" in values:
        subscription.version = _check_version(values["version"])
    if "description" in values:
        subscription.description = values["description"]
    if "payload" in values:
        subscription.payload = values["payload"]
    if "enabled" in values:
        subscription.enabled = values["enabled"]
        if subscription.enabled:
            subscription.disabled_reason = None
            subscription.failing_since = None
    subscription.updated_at = utcnow()
    session.flush()
    return represent(subscription)


def delete(session: Session, organization_id: int, webhook_id: int) -> None:
    """Deliveries stay readable in no list; pending ones are never sent."""
    subscription = find(session, organization_id, webhook_id)
    subscription.deleted_at = subscription.updated_at = utcnow()
    subscription.enabled = False
    session.flush()


def rotate_secret(
    session: Session, organization_id: int, webhook_id: int, box: SecretBox, grace: timedelta
) -> dict[str, Any]:
    subscription = find(session, organization_id, webhook_id)
    now = utcnow()
    secret = signing.generate_secret()
    subscription.previous_secret = subscription.secret if grace.total_seconds() > 0 else None
    subscription.previous_secret_expires_at = now + grace if grace.total_seconds() > 0 else None
    subscription.secret = box.seal(secret)
    subscription.updated_at = now
    session.flush()
    return {**represent(subscription), "secret": secret}


def test_object(subscription: WebhookSubscription) -> dict[str, Any]:
    """What a `webhook.test` event says: which endpoint it is for."""
    return {
        "webhookId": subscription.id,
        "url": subscription.url,
        "message": "This is a test delivery from MonCréneau.",
    }


def send_test(
    session: Session, organization_id: int, webhook_id: int, settings: Settings
) -> dict[str, Any]:
    """Append a `webhook.test` event and one delivery of it, to this endpoint only."""
    subscription = to_send_now(session, organization_id, webhook_id)
    now = utcnow()
    event = store.append(
        session,
        organization_id=organization_id,
        type=TEST_EVENT,
        occurred_at=now,
        data={"webhookId": subscription.id},
        object=test_object(subscription),
    )
    session.flush()  # the delivery names the event's position
    budget = settings.attempt_budget
    row = deliveries.new_delivery_row(event, subscription, clock.now(), budget, queued=False)
    ids = deliveries.insert_ignoring_duplicates(session, [row])
    return {"deliveryId": ids[0], "eventId": event.id, "webhookId": subscription.id}


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
