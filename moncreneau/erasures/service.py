"""Erasure requests and their processing: appointments, deliveries and stored responses."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from moncreneau.api.fields import is_public_id
from moncreneau.appointments import service as appointments
from moncreneau.clock import iso_utc
from moncreneau.db import write_session
from moncreneau.delivery import store as deliveries
from moncreneau.domain.errors import Invalid, NotFound
from moncreneau.ids import new_id
from moncreneau.models import AppointmentRow, Erasure, IdempotencyRecord, PersonalKey
from moncreneau.outbox.payloads import PERSONAL_FIELDS
from moncreneau.pagination import Page, keyset_page
from moncreneau.personal import EMAIL, PHONE, Vault

PENDING, COMPLETED = "pending", "completed"
APPOINTMENT_IDS = "appointmentIds"
# the automatic erasure of appointments unchanged for MONCRENEAU_ERASE_AFTER_DAYS
RETENTION = "retention"
SELECTORS = (EMAIL, PHONE, APPOINTMENT_IDS, RETENTION)
MAX_APPOINTMENT_IDS = 1000
# Appointments erased per transaction: a thousand take four short ones.
BATCH = 250


@dataclass(frozen=True)
class Selector:
    """Exactly one of the three: whose appointments to erase."""

    email: str | None = None
    phone: str | None = None
    appointment_ids: list[int] | None = None

    @property
    def kind(self) -> str:
        given = [
            name
            for name, value in (
                (EMAIL, self.email),
                (PHONE, self.phone),
                (APPOINTMENT_IDS, self.appointment_ids),
            )
            if value is not None
        ]
        if len(given) != 1:
            message = "Give exactly one of email, phone or appointmentIds."
            raise Invalid(message, {"_schema": [message]})
        return given[0]


def represent(erasure: Erasure) -> dict[str, Any]:
    return {
        "id": erasure.id,
        "status": erasure.status,
        "selector": erasure.selector,
        "requestedBy": erasure.requested_by,
        "appointmentIds": erasure.appointment_ids,
        "createdAt": iso_utc(erasure.created_at),
        "completedAt": iso_utc(erasure.completed_at) if erasure.completed_at else None,
    }


def _matching(
    session: Session, vault: Vault, organization_id: int, selector: Selector, kind: str
) -> list[int]:
    if kind == APPOINTMENT_IDS:
        assert selector.appointment_ids is not None
        wanted = set(selector.appointment_ids)
        found = select(AppointmentRow.id).where(
            AppointmentRow.organization_id == organization_id, AppointmentRow.id.in_(wanted)
        )
        return sorted(session.scalars(found))
    column = PersonalKey.email_index if kind == EMAIL else PersonalKey.phone_index
    value = selector.email if kind == EMAIL else selector.phone
    assert value is not None
    found = select(PersonalKey.appointment_id).where(
        PersonalKey.organization_id == organization_id,
        column.in_(vault.indexes(kind, value)),
    )
    return sorted(session.scalars(found))


def request(
    session: Session,
    vault: Vault,
    organization_id: int,
    selector: Selector,
    requested_by: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Record an erasure of the organization's matching appointments, done asynchronously.

    Only the selector's kind is kept; a selector that matches nothing gives a completed
    erasure with no ids, exactly as a person who is not a patient would.
    """
    kind = selector.kind
    ids = _matching(session, vault, organization_id, selector, kind)
    erasure = _record(session, organization_id, kind, requested_by, ids, now)
    session.flush()
    return represent(erasure)


def _record(
    session: Session,
    organization_id: int,
    kind: str,
    requested_by: str | None,
    ids: list[int],
    now: datetime,
) -> Erasure:
    erasure = Erasure(
        id=new_id("ers"),
        organization_id=organization_id,
        selector=kind,
        requested_by=requested_by,
        status=PENDING if ids else COMPLETED,
        appointment_ids=ids,
        created_at=now,
        completed_at=None if ids else now,
    )
    session.add(erasure)
    return erasure


def get(session: Session, organization_id: int, erasure_id: str) -> dict[str, Any]:
    erasure = is_public_id(erasure_id, "ers") and session.scalar(
        select(Erasure).where(Erasure.id == erasure_id, Erasure.organization_id == organization_id)
    )
    if not erasure:
        raise NotFound(f"No erasure with id {erasure_id!r}.")
    return represent(erasure)


def list_page(
    session: Session, organization_id: int, limit: int, cursor: str | None
) -> Page[dict[str, Any]]:
    """Newest first."""
    query = select(Erasure).where(Erasure.organization_id == organization_id)
    return keyset_page(
        session,
        query,
        Erasure.seq,
        "erasures",
        limit,
        cursor,
        lambda rows: [represent(e) for e in rows],
        newest_first=True,
        maximum=2**63 - 1,
    )


def _forget_responses(session: Session, vault: Vault, appointment_ids: list[int]) -> None:
    """Stored idempotent responses keep answering, with the personal fields null."""
    records = session.scalars(
        select(IdempotencyRecord).where(IdempotencyRecord.appointment_id.in_(appointment_ids))
    )
    for record in records:
        body = json.loads(vault.box.open(record.response_body))
        if isinstance(body, dict):
            body.update({k: None for k in PERSONAL_FIELDS if k in body})
        record.response_body = vault.box.seal(json.dumps(body, separators=(",", ":")))


def erase_now(
    session: Session,
    vault: Vault,
    organization_id: int,
    appointment_ids: Collection[int],
    now: datetime,
) -> list[int]:
    """Erase these appointments in the caller's transaction, and every copy of their data.

    Returns the ids really erased (not erased before).
    """
    events = appointments.erase(session, organization_id, appointment_ids, now)
    erased = sorted({e.appointment_id for e in events if e.appointment_id is not None})
    if erased:
        deliveries.erase(session, events, now)
        _forget_responses(session, vault, erased)
    return erased


def process(sessions: sessionmaker[Session], vault: Vault, now: datetime) -> int:
    """One batch of the oldest pending erasure; returns how many appointments were erased.

    Safe to run in several processes at once: an erasure is taken under a row lock.
    """
    with write_session(sessions) as db:
        query = select(Erasure).where(Erasure.status == PENDING).order_by(Erasure.seq).limit(1)
        if db.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        erasure = db.scalar(query)
        if erasure is None:
            db.rollback()
            return 0
        left = list(
            db.scalars(
                select(AppointmentRow.id)
                .where(
                    AppointmentRow.id.in_(erasure.appointment_ids),
                    AppointmentRow.organization_id == erasure.organization_id,
                    AppointmentRow.erased_at.is_(None),
                )
                .order_by(AppointmentRow.id)
                .limit(BATCH + 1)
            )
        )
        erased = erase_now(db, vault, erasure.organization_id, left[:BATCH], now)
        if len(left) <= BATCH:
            erasure.status = COMPLETED
            erasure.completed_at = now
        db.commit()
    return max(len(erased), 1)


def request_stale(session: Session, unchanged_since: datetime, now: datetime, limit: int) -> int:
    """Erasures of appointments whose last change is older than `unchanged_since`, a batch
    at a time (MONCRENEAU_ERASE_AFTER_DAYS); returns how many appointments they name."""
    pending = select(Erasure.appointment_ids).where(
        Erasure.status == PENDING, Erasure.selector == RETENTION
    )
    if session.scalars(pending.limit(1)).first() is not None:
        return 0  # the last batch is still being erased
    rows = session.execute(
        select(AppointmentRow.id, AppointmentRow.organization_id)
        .where(AppointmentRow.erased_at.is_(None), AppointmentRow.updated_at < unchanged_since)
        .order_by(AppointmentRow.id)
        .limit(limit)
    ).all()
    by_organization: dict[int, list[int]] = defaultdict(list)
    for appointment_id, organization_id in rows:
        by_organization[organization_id].append(appointment_id)
    for organization_id, ids in by_organization.items():
        _record(session, organization_id, RETENTION, None, ids, now)
    return len(rows)
