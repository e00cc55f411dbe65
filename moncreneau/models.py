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

from moncreneau.db import Base, BigId, JsonDoc, UTCDateTime, current_transaction


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
    """One appended event. `(txid, position)` orders the log; rows are never updated or deleted."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("appointment_id", "sequence", name="uq_events_appointment_sequence"),
        Index("ix_events_txid_position", "txid", "position"),
        Index("ix_events_org_txid_position", "organization_id", "txid", "position"),
        Index("ix_events_org_type_txid_position", "organization_id", "type", "txid", "position"),
    )

    position: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The transaction that appended it (0 on SQLite, and for events appended before this
    # column existed, which all committed before any other).
    txid: Mapped[int] = mapped_column(BigInteger, server_default=current_transaction())
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
    # "none", or "appointment": an appointment's deliveries go out one at a time, in order
    ordering: Mapped[str] = mapped_column(String(16), server_default="none")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


# Spelled out with literals: a partial index serves a query whose condition is these words.
OPEN_DELIVERY = "status IN ('pending', 'failed')"
OPEN_APPOINTMENT_DELIVERY = f"{OPEN_DELIVERY} AND appointment_id IS NOT NULL"


class Delivery(Base):
    """One event for one subscription; `body` is frozen so every retry sends the same bytes."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("event_position", "subscription_id", name="uq_deliveries_event_sub"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
        Index("ix_deliveries_sub_seq", "subscription_id", "seq"),
        # a webhook's waiting deliveries and the next of them, for its health
        Index(
            "ix_deliveries_open_sub_next",
            "subscription_id",
            "next_attempt_at",
            sqlite_where=text(OPEN_DELIVERY),
            postgresql_where=text(OPEN_DELIVERY),
        ),
        # the open deliveries of one appointment to one webhook, oldest first: what an
        # ordered webhook's next delivery waits for
        Index(
            "ix_deliveries_open_appointment",
            "subscription_id",
            "appointment_id",
            "seq",
            sqlite_where=text(OPEN_APPOINTMENT_DELIVERY),
            postgresql_where=text(OPEN_APPOINTMENT_DELIVERY),
        ),
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
    # its event's appointment, if any
    appointment_id: Mapped[int | None] = mapped_column(Integer)
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
    """One try; `error` is null exactly when the endpoint answered 2xx in time."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (
        Index("ix_delivery_attempts_delivery", "delivery_seq", "number"),
        # A webhook's health reads its latest successes and failures, and counts a day's:
        # each a range of one of these, however many attempts the table holds.
        Index(
            "ix_delivery_attempts_sub_succeeded",
            "subscription_id",
            "started_at",
            sqlite_where=text("error IS NULL"),
            postgresql_where=text("error IS NULL"),
        ),
        Index(
            "ix_delivery_attempts_sub_failed",
            "subscription_id",
            "started_at",
            sqlite_where=text("error IS NOT NULL"),
            postgresql_where=text("error IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_seq: Mapped[int] = mapped_column(BigInteger)
    # the delivery's webhook, copied so that health needs no join; null only in rows
    # written by hand (every attempt a worker records carries it)
    subscription_id: Mapped[int | None] = mapped_column(Integer)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)


class PortalLink(Base):
    """A one-time link to the integrator portal, then the browser session it opened.

    Only SHA-256 digests of the link's token and of the session's are kept.
    """

    __tablename__ = "portal_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    session_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    read_only: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RelayState(Base):
    """How far the relay has read the event log; its row lock admits one relay at a time."""

    __tablename__ = "relay_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    # the last event read: its transaction and position (see outbox.store.LogPosition)
    txid: Mapped[int] = mapped_column(BigInteger, server_default="0")
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
