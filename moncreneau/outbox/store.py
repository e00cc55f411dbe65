"""Appending events and reading the log in commit order."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from moncreneau.db import LockKind
from moncreneau.ids import new_id
from moncreneau.models import EventRecord

# Relays LISTEN on this channel to wake as soon as events commit.
CHANNEL = "moncreneau_events"
# `session.info` key: every event appended in this session is for that webhook only
# (`moncreneau trigger --webhook`, which drives the appointment services unchanged).
DIRECTED_TO = "moncreneau.directed_to_webhook"


# The advisory lock that serializes appends, in the event log's own key space.
_LOG_LOCK = f"pg_advisory_xact_lock({LockKind.EVENT_LOG:d}, 1)"


def lock_log(session: Session) -> None:
    """Serialize appends until commit, so that positions become visible in increasing order.

    Without it, a transaction holding position 10 could commit after one holding 11, and a
    reader that had moved past 11 would never see 10. Readers are not blocked. SQLite already
    admits a single writer at a time. The same round trip queues the NOTIFY that wakes the
    relays when the transaction commits (PostgreSQL folds repeats into one).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SELECT {_LOG_LOCK}, pg_notify('{CHANNEL}', '')"))


@event.listens_for(Session, "before_flush")
def _lock_before_inserting_events(session: Session, _context: Any, _instances: Any) -> None:
    # Positions are drawn when the rows are inserted: the lock must come first, and it is
    # held until commit. Events are inserted at the flush of the commit (see `append`), so
    # the lock is held for that flush and the commit only.
    if any(isinstance(obj, EventRecord) for obj in session.new):
        lock_log(session)


def append(
    session: Session,
    *,
    organization_id: int,
    type: str,
    occurred_at: datetime,
    data: dict[str, Any],
    object: dict[str, Any],
    previous_attributes: dict[str, Any] | None = None,
    appointment_id: int | None = None,
    sequence: int | None = None,
) -> EventRecord:
    """Add one event to the caller's transaction, inserted when the transaction commits.

    Its `position` is known only after a flush; the log's lock is taken at that flush.
    """
    record = EventRecord(
        id=new_id("evt"),
        organization_id=organization_id,
        type=type,
        appointment_id=appointment_id,
        sequence=sequence,
        data=data,
        object=object,
        previous_attributes=previous_attributes,
        webhook_id=session.info.get(DIRECTED_TO),
        created_at=occurred_at,
    )
    session.add(record)
    return record


def read_after(session: Session, after: int, limit: int) -> list[EventRecord]:
    """Events with a position greater than `after`, oldest first (the relay's read)."""
    query = (
        select(EventRecord)
        .where(EventRecord.position > after)
        .order_by(EventRecord.position)
        .limit(limit)
    )
    return list(session.scalars(query))


def appointment_history(session: Session, appointment_id: int) -> list[EventRecord]:
    query = (
        select(EventRecord)
        .where(EventRecord.appointment_id == appointment_id)
        .order_by(EventRecord.sequence)
    )
    return list(session.scalars(query))
