"""Webhook subscriptions: create, read, change, delete, rotate the secret, send a test event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from moncreneau import clock
from moncreneau.clock import utcnow
from moncreneau.config import Settings
from moncreneau.delivery import signing
from moncreneau.delivery import store as deliveries
from moncreneau.delivery.endpoints import end_pause, represent
from moncreneau.delivery.urls import check_url
from moncreneau.domain.errors import Conflict, Invalid, NotFound
from moncreneau.domain.events import SUBSCRIBABLE, TEST_EVENT
from moncreneau.models import Organization, WebhookSubscription
from moncreneau.outbox import payloads, store
from moncreneau.pagination import Page, keyset_page
from moncreneau.secretbox import SecretBox


@dataclass(frozen=True)
class NewSubscription:
    url: str
    events: list[str]
    description: str | None = None
    version: str = payloads.LATEST
    enabled: bool = True
    payload: str = payloads.FULL
    ordering: str = deliveries.UNORDERED


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


def _check_ordering(ordering: str) -> str:
    if ordering not in deliveries.ORDERINGS:
        raise Invalid.field(
            "ordering", f"Unknown ordering {ordering!r}; choose among {list(deliveries.ORDERINGS)}."
        )
    return ordering


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


def find(session: Session, organization_id: int, webhook_id: int) -> WebhookSubscription:
    subscription = session.get(WebhookSubscription, webhook_id)
    if (
        subscription is None
        or subscription.organization_id != organization_id
        or subscription.deleted_at is not None
    ):
        raise NotFound(f"No webhook with id {webhook_id}.")
    return subscription


def _check_room(session: Session, organization_id: int, limit: int) -> None:
    """Refuse a webhook beyond the organization's limit.

    The organization's row is locked until commit, so parallel creates count one at a time.
    """
    session.execute(
        select(Organization.id).where(Organization.id == organization_id).with_for_update()
    )
    count = session.scalar(
        select(func.count())
        .select_from(WebhookSubscription)
        .where(
            WebhookSubscription.organization_id == organization_id,
            WebhookSubscription.deleted_at.is_(None),
        )
    )
    if (count or 0) >= limit:
        raise Conflict(
            f"This organization has {count} webhooks, the most it may have ({limit}); "
            "delete one before adding another."
        )


def create(
    session: Session, organization_id: int, new: NewSubscription, box: SecretBox, settings: Settings
) -> dict[str, Any]:
    url = check_url(
        new.url, allow_private=settings.allow_private_urls, allowed=settings.allowed_networks
    )
    _check_room(session, organization_id, settings.max_webhooks_per_organization)
    now = utcnow()
    secret = signing.generate_secret()
    subscription = WebhookSubscription(
        organization_id=organization_id,
        url=url,
        events=_check_events(new.events),
        description=new.description,
        version=_check_version(new.version),
        payload=new.payload,
        ordering=_check_ordering(new.ordering),
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
    if "ordering" in values:
        # Read by every claim: the deliveries still open follow the new rule at once.
        subscription.ordering = _check_ordering(values["ordering"])
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
