"""Sample events through the real pipeline, for integrators testing every branch of a handler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from moncreneau.appointments import service as appointments
from moncreneau.clock import utcnow
from moncreneau.config import Settings
from moncreneau.delivery.endpoints import represent, wants
from moncreneau.departments import service as departments
from moncreneau.domain.errors import Invalid
from moncreneau.domain.events import DISABLED_EVENT, EVENT_TYPES, TEST_EVENT
from moncreneau.erasures import service as erasures
from moncreneau.models import Department, EventRecord, WebhookSubscription
from moncreneau.outbox import store
from moncreneau.personal import Vault
from moncreneau.secretbox import resolve_key
from moncreneau.webhooks import service as webhooks

SAMPLE_DEPARTMENT = "Sample department (moncreneau trigger)"
# the commands that lead a fresh appointment to each event
STEPS: dict[str, tuple[str, ...]] = {
    "appointment.created": (),
    "appointment.updated": ("change",),
    "appointment.validated": ("validate",),
    "appointment.completed": ("validate", "complete"),
    "appointment.cancelled": ("cancel",),
    "appointment.erased": ("erase",),
}


def _sample_department(session: Session, organization_id: int) -> int:
    found = session.scalar(
        select(Department.id).where(
            Department.organization_id == organization_id, Department.name == SAMPLE_DEPARTMENT
        )
    )
    if found is not None:
        return found
    new = departments.NewDepartment(SAMPLE_DEPARTMENT, "UTC", slot_minutes=30, capacity=10_000)
    created: int = departments.create(session, organization_id, new)["id"]
    return created


def _appointment_events(session: Session, organization_id: int, type_: str, vault: Vault) -> None:
    department_id = _sample_department(session, organization_id)
    # A slot a month ahead, on the half hour: real, and out of the way of real bookings.
    start = (datetime.now(UTC) + timedelta(days=30)).replace(second=0, microsecond=0)
    start = start.replace(minute=30 if start.minute >= 30 else 0)
    booked = appointments.book(
        session,
        organization_id,
        appointments.NewAppointment(
            department_id=department_id,
            date_time=start,
            name="Sample Patient",
            email="sample.patient@example.org",
            phone="+33 1 23 45 67 89",
            notes="A sample appointment sent by moncreneau trigger.",
        ),
        vault=vault,
    )
    for step in STEPS[type_]:
        if step == "change":
            later = {"date_time": start + timedelta(minutes=30), "phone": "+33 1 98 76 54 32"}
            appointments.change(session, organization_id, booked["id"], later, vault=vault)
        elif step == "erase":
            erasures.erase_now(session, vault, organization_id, [booked["id"]], utcnow())
        else:
            reason = "A sample cancellation." if step == "cancel" else None
            appointments.transition(
                session, organization_id, booked["id"], step, None, reason, vault=vault
            )


def trigger(
    session: Session,
    organization_id: int,
    type_: str,
    settings: Settings,
    webhook_id: int | None = None,
    vault: Vault | None = None,
) -> list[EventRecord]:
    """Append the events that `type_` takes (a booking before its cancellation, say).

    With `webhook_id`, they go to that webhook only; else to every webhook of the
    organization that subscribes to them, like any event.
    """
    if type_ not in EVENT_TYPES:
        raise Invalid.field(
            "type", f"Unknown event type {type_!r}; choose among {list(EVENT_TYPES)}."
        )
    target: WebhookSubscription | None = None
    if webhook_id is not None:
        target = webhooks.to_send_now(session, organization_id, webhook_id)
        if type_ != TEST_EVENT and not wants(target, type_):
            raise Invalid.field(
                "type", f"Webhook {webhook_id} does not subscribe to {type_}: {target.events}."
            )
    before = session.scalar(select(EventRecord.position).order_by(EventRecord.position.desc()))
    if type_ == TEST_EVENT:
        targets = [target] if target else _enabled(session, organization_id)
        for subscription in targets:
            webhooks.send_test(session, organization_id, subscription.id, settings)
    else:
        session.info[store.DIRECTED_TO] = webhook_id
        try:
            if type_ == DISABLED_EVENT:
                _sample_disabled(session, organization_id, target)
            else:
                _appointment_events(
                    session, organization_id, type_, vault or Vault(resolve_key(settings))
                )
        finally:
            session.info.pop(store.DIRECTED_TO, None)
    return list(
        session.scalars(
            select(EventRecord)
            .where(
                EventRecord.organization_id == organization_id,
                EventRecord.position > (before or 0),
            )
            .order_by(EventRecord.position)
        )
    )


def _enabled(session: Session, organization_id: int) -> list[WebhookSubscription]:
    return list(
        session.scalars(
            select(WebhookSubscription).where(
                WebhookSubscription.organization_id == organization_id,
                WebhookSubscription.enabled.is_(True),
                WebhookSubscription.deleted_at.is_(None),
            )
        )
    )


def _sample_disabled(
    session: Session, organization_id: int, target: WebhookSubscription | None
) -> None:
    """What `webhook.disabled` looks like, about a webhook that stays enabled."""
    subject: dict[str, Any] = (
        represent(target)
        if target
        else {"id": 0, "url": "https://example.org/webhooks/moncreneau", "events": ["*"]}
    )
    reason = "A sample event sent by moncreneau trigger; no webhook was disabled."
    store.append(
        session,
        organization_id=organization_id,
        type=DISABLED_EVENT,
        occurred_at=utcnow(),
        data={"webhookId": subject["id"], "reason": reason, "sample": True},
        object={**subject, "enabled": False, "disabledReason": reason},
    )
