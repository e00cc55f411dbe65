"""Appending events without a lock between writers, and reading the log in its one order."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, event, func, select, true, tuple_
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction

from moncreneau.db import snapshot_horizon
from moncreneau.ids import new_id
from moncreneau.models import EventRecord

log = logging.getLogger(__name__)

# Relays LISTEN on this channel to wake as soon as events commit.
CHANNEL = "moncreneau_events"
# `session.info` key: every event appended in this session is for that webhook only
# (`moncreneau trigger --webhook`, which drives the appointment services unchanged).
DIRECTED_TO = "moncreneau.directed_to_webhook"
# `session.info` key: this transaction has appended events (the relays are woken after it).
_APPENDED = "moncreneau.appended_events"
# appended and committed: the relays are woken once the connection is back in the pool
_COMMITTED = "moncreneau.committed_events"
# How long a reader waits for transactions still open that hold committed events back
# (usually ones committing at that moment), before it reads what it can.
READ_WAIT_SECONDS = 2.0

# Readers take only events of transactions older than every transaction still open.
# Cleared by a test only, to show the events a reader would skip without it.
_HORIZON = True


class Positioned(Protocol):
    @property
    def txid(self) -> int: ...

    @property
    def position(self) -> int: ...


@dataclass(frozen=True, order=True)
class LogPosition:
    """A place in the log, which is read in (transaction, position) order."""

    txid: int
    position: int

    @classmethod
    def of(cls, row: Positioned) -> LogPosition:
        return cls(row.txid, row.position)


START = LogPosition(0, 0)
# The log's order, for `order_by` and keyset pages.
ORDER = (EventRecord.txid, EventRecord.position)


def notify_relays(engine: Engine) -> None:
    """Wake the relays: new events have committed.

    Sent in a transaction of its own, after the events' commit, and without waiting for
    the disk: PostgreSQL holds one server-wide lock from a notifying transaction's commit
    until its end, disk flush and synchronous standby included, which would serialize
    every commit that appends again. Lost (the server gone meanwhile), the relay's
    polling finds the events a moment later.
    """
    if engine.dialect.name != "postgresql":
        return
    try:
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                f"BEGIN; SET LOCAL synchronous_commit = off; NOTIFY {CHANNEL}; COMMIT"
            )
    except SQLAlchemyError as error:
        log.warning("could not wake the relays: %s", error.__class__.__name__)


@event.listens_for(Session, "before_flush")
def _note_events(session: Session, _context: Any, _instances: Any) -> None:
    # Events are inserted at the flush of the commit (see `append`).
    if any(isinstance(obj, EventRecord) for obj in session.new):
        session.info[_APPENDED] = True


@event.listens_for(Session, "after_commit")
def _notify_after_commit(session: Session) -> None:
    if session.info.pop(_APPENDED, False):
        session.info[_COMMITTED] = True


@event.listens_for(Session, "after_transaction_end")
def _notify_once_released(session: Session, transaction: SessionTransaction) -> None:
    # Not at the commit itself: the session still holds its connection then, and a second
    # one for the NOTIFY would need twice the pool (with every thread of a process
    # committing at once, each waited for a connection none would give back).
    if transaction.parent is None and session.info.pop(_COMMITTED, False):
        bind = session.get_bind()
        notify_relays(bind if isinstance(bind, Engine) else bind.engine)


@event.listens_for(Session, "after_rollback")
def _forget_events(session: Session) -> None:
    session.info.pop(_APPENDED, None)


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

    Its `position` and `txid` are known only after a flush.
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


def readable() -> ColumnElement[bool]:
    """The events no reader can ever see an earlier one appear before: the guard of every read.

    Positions are drawn when events are inserted, not when they commit, so a transaction
    holding position 10 may commit after one holding 11. Ordered by transaction first, an
    event is taken only once every transaction with a lower id has ended (PostgreSQL's
    snapshot `xmin`): whatever commits later sorts after it. The condition must sit in the
    statement that reads the events, whose snapshot it names.
    """
    return EventRecord.txid < snapshot_horizon() if _HORIZON else true()


def after(mark: LogPosition) -> ColumnElement[bool]:
    return tuple_(*ORDER) > (mark.txid, mark.position)


def read_after(session: Session, mark: LogPosition, limit: int) -> list[EventRecord]:
    """Readable events after `mark`, oldest first (the relay's read)."""
    query = select(EventRecord).where(after(mark), readable()).order_by(*ORDER).limit(limit)
    return list(session.scalars(query))


def legacy_position(position: int) -> tuple[ColumnElement[int], int]:
    """The place in the log of a position given out when it was ordered by position alone.

    Those positions are of events that committed before any that records its transaction
    (transaction 0); one that names no event stands after the nearest event before it.
    """
    nearest = (
        select(EventRecord.txid)
        .where(EventRecord.position <= position)
        .order_by(EventRecord.position.desc())
        .limit(1)
        .scalar_subquery()
    )
    return func.coalesce(nearest, 0), position


def wait_until_readable(
    session: Session, *where: ColumnElement[bool], timeout: float = READ_WAIT_SECONDS
) -> bool:
    """Until the committed events (matching `where`) that an older open transaction holds
    back are readable, `timeout` seconds at most; whether they are.

    A reader that waits sees every event committed before it started, its client's own
    included. Behind a transaction open longer, it reads up to where that one began; the
    rest follows once it ends. The session must not have written yet: its own transaction
    would hold the events back.
    """
    if not _HORIZON or session.get_bind().dialect.name != "postgresql":
        return True
    held = session.execute(
        select(
            select(func.max(EventRecord.txid))
            .where(EventRecord.txid >= snapshot_horizon(), *where)
            .scalar_subquery(),
            func.pg_current_xact_id_if_assigned().is_not(None),
        )
    ).one()
    newest, writing = held
    if newest is None:
        return True
    if writing:
        return False
    deadline = time.monotonic() + timeout
    pause = 0.001
    while time.monotonic() + pause < deadline:
        time.sleep(pause)
        if session.scalar(select(snapshot_horizon())) > newest:
            return True
        pause = min(2 * pause, 0.05)
    return False


def appointment_history(session: Session, appointment_id: int) -> list[EventRecord]:
    query = (
        select(EventRecord)
        .where(EventRecord.appointment_id == appointment_id)
        .order_by(EventRecord.sequence)
    )
    return list(session.scalars(query))
