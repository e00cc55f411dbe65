"""Tables: tenants and keys, departments, the appointment projection, the event store."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from moncreneau.db import Base, BigId, JsonDoc, UTCDateTime


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiKey(Base):
    """Only the SHA-256 of a key is kept; `prefix` is the visible part used to find it."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Department(Base):
    __tablename__ = "departments"
    __table_args__ = (Index("ix_departments_org_id", "organization_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    slot_minutes: Mapped[int] = mapped_column(Integer)
    capacity: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AppointmentRow(Base):
    """The projection of an appointment's events; rebuildable from the event store."""

    __tablename__ = "appointments"
    __table_args__ = (
        Index("ix_appointments_slot", "department_id", "starts_at"),
        Index("ix_appointments_org_id", "organization_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    duration_minutes: Mapped[int] = mapped_column(Integer)
    # null, like the other personal fields, once erased
    name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(40))
    notes: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    cancellation_reason: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # set by `appointment.erased`: the personal fields are null from then on
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PersonalKey(Base):
    """An appointment's data key, sealed with MONCRENEAU_SECRET_KEY; erasing deletes the row.

    Its events hold their personal values encrypted with this key only, so once the row is
    gone they read null. The blind indexes (keyed HMACs of the normalized email and phone)
    let an erasure find the appointments of a person without their values in clear.
    """

    __tablename__ = "personal_keys"
    __table_args__ = (
        Index("ix_personal_keys_email", "organization_id", "email_index"),
        Index("ix_personal_keys_phone", "organization_id", "phone_index"),
    )

    appointment_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    key: Mapped[str] = mapped_column(Text)
    email_index: Mapped[str | None] = mapped_column(String(64))
    phone_index: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Erasure(Base):
    """A request to erase appointments: who, when, which ones; never the selector's value."""

    __tablename__ = "erasures"
    __table_args__ = (
        Index("ix_erasures_org_seq", "organization_id", "seq"),
        Index("ix_erasures_status", "status"),
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    # "email", "phone", "appointmentIds", or "retention" (MONCRENEAU_ERASE_AFTER_DAYS)
    selector: Mapped[str] = mapped_column(String(16))
    # the prefix of the API key that asked; null for the automatic erasure
    requested_by: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    appointment_ids: Mapped[list[int]] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class EventRecord(Base):
    """One appended event. `position` orders the log; rows are never updated or deleted."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("appointment_id", "sequence", name="uq_events_appointment_sequence"),
        Index("ix_events_org_position", "organization_id", "position"),
        Index("ix_events_org_type_position", "organization_id", "type", "position"),
    )

    position: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    type: Mapped[str] = mapped_column(String(64))
    appointment_id: Mapped[int | None] = mapped_column(Integer)
    sequence: Mapped[int | None] = mapped_column(Integer)
    # the domain facts, from which projections are rebuilt
    data: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    # the resource as published: the appointment after this event, and what it changed
    object: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    previous_attributes: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    # the personal values taken out of the three above, encrypted with the appointment's
    # data key (`moncreneau.personal`); they read null once that key is deleted
    sealed: Mapped[str | None] = mapped_column(Text)
    # set on events meant for one webhook only (`moncreneau trigger --webhook`)
    webhook_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# How long an Idempotency-Key is remembered.
IDEMPOTENCY_RETENTION = timedelta(hours=24)


class IdempotencyRecord(Base):
    """The first response to a POST carrying an Idempotency-Key, replayed for repeats."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("organization_id", "key", name="uq_idempotency_org_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[str] = mapped_column(Text)
    response_headers: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # the appointment the response shows, whose personal fields an erasure nulls
    appointment_id: Mapped[int | None] = mapped_column(Integer, index=True)


class WebhookSubscription(Base):
    """An endpoint and the events it wants; its secrets are stored encrypted."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (Index("ix_webhook_subscriptions_org_id", "organization_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JsonDoc)
    description: Mapped[str | None] = mapped_column(String(500))
    version: Mapped[str] = mapped_column(String(16))
    # "full", or "thin": no personal data in the payloads
    payload: Mapped[str] = mapped_column(String(8), server_default="full")
    enabled: Mapped[bool] = mapped_column(Boolean)
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    # since when every attempt has failed; cleared by any success
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # set by a worker after failures in a row: its deliveries are not claimed until then
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Delivery(Base):
    """One event for one subscription; `body` is frozen so every retry sends the same bytes."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("event_position", "subscription_id", name="uq_deliveries_event_sub"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
        Index("ix_deliveries_sub_seq", "subscription_id", "seq"),
        # what payload retention still has to look at, and only that
        Index(
            "ix_deliveries_unpurged",
            "updated_at",
            postgresql_where=text("purged_at IS NULL"),
            sqlite_where=text("purged_at IS NULL"),
        ),
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhook_subscriptions.id"))
    event_position: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(64))
    payload_version: Mapped[str] = mapped_column(String(16))
    # null once purged (MONCRENEAU_PAYLOAD_RETENTION_DAYS)
    body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    # attempts allowed in all; a manual retry of a dead delivery grants one more
    attempt_budget: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # handed to the queue until then: the sweeper leaves it alone
    queued_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # a worker is sending it until then
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # when its body was purged or rewritten without personal data: it is never sent again
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_delivery_attempts_delivery", "delivery_seq", "number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_seq: Mapped[int] = mapped_column(BigInteger)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)


class RelayState(Base):
    """How far the relay has read the event log; its row lock admits one relay at a time."""

    __tablename__ = "relay_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
