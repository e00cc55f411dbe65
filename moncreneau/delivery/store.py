"""Delivery rows: created in bulk by the relay, claimed by workers under a lease, then settled."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Integer,
    and_,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.orm import Session, aliased

from moncreneau import bulk
from moncreneau.db import UTCDateTime
from moncreneau.ids import new_id
from moncreneau.models import (
    OPEN_DELIVERY,
    Delivery,
    DeliveryAttempt,
    EventRecord,
    WebhookSubscription,
)
from moncreneau.outbox import payloads
from moncreneau.personal import Revealed, open_event

PENDING, SUCCEEDED, FAILED, DEAD = "pending", "succeeded", "failed", "dead"
# waiting when its appointment was erased: never sent
ERASED = "erased"
OPEN = (PENDING, FAILED)
# what payload retention may purge: nothing is left to send
FINISHED = (SUCCEEDED, DEAD, ERASED)
# How long a delivery handed to the queue is left alone by the sweeper.
QUEUE_LEASE = timedelta(seconds=30)
# A webhook's `ordering`: by default none; "appointment" sends an appointment's deliveries
# one at a time, each once the one before has succeeded, is dead or was erased.
UNORDERED, BY_APPOINTMENT = "none", "appointment"
ORDERINGS = (UNORDERED, BY_APPOINTMENT)


class Subscriber(Protocol):
    """What fan-out needs of a webhook: a subscription, or a row of its columns."""

    id: int
    events: list[str]
    version: str
    payload: str


def new_delivery_row(
    event: EventRecord | Revealed,
    subscription: Subscriber,
    now: datetime,
    budget: int,
    body: str | None = None,
    queued: bool = True,
) -> dict[str, Any]:
    """`queued`: the caller enqueues it right after commit, so the sweeper waits a while."""
    return {
        "id": new_id("msg"),
        "organization_id": event.organization_id,
        "subscription_id": subscription.id,
        "event_position": event.position,
        "event_id": event.id,
        "event_type": event.type,
        "appointment_id": event.appointment_id,
        "payload_version": subscription.version,
        "body": body
        if body is not None
        else payloads.render(event, subscription.version, subscription.payload),
        "status": PENDING,
        "attempts": 0,
        "attempt_budget": budget,
        "next_attempt_at": now,
        "queued_until": now + QUEUE_LEASE if queued else None,
        "locked_until": None,
        "created_at": now,
        "updated_at": now,
    }


def insert_ignoring_duplicates(session: Session, rows: list[dict[str, Any]]) -> list[str]:
    """Insert deliveries; one that exists for the same (event, subscription) is left as is.

    Returns the ids of the rows really inserted: only those are the caller's to enqueue.
    """
    if not rows:
        return []
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # The event, its body and the timestamps are sent once for all its subscribers.
        result = bulk.insert_rows(
            connection,
            Delivery,
            rows,
            "ON CONFLICT (event_position, subscription_id) DO NOTHING RETURNING id",
        )
        return list(result.scalars())
    result = connection.execute(
        insert(Delivery).prefix_with("OR IGNORE").returning(Delivery.id), rows
    )
    return list(result.scalars())


# A webhook whose deliveries may go out (what it has paused aside).
_LIVE = (WebhookSubscription.enabled.is_(True), WebhookSubscription.deleted_at.is_(None))


def _open_and_unheld(now: Any) -> ColumnElement[bool]:
    """Open, and held by no worker: a lease that ran out holds nothing."""
    return and_(
        Delivery.status.in_(OPEN),
        or_(Delivery.locked_until.is_(None), Delivery.locked_until < now),
    )


def due_for_queue(
    session: Session, now: datetime, limit: int, *, queued_too: bool = False
) -> list[str]:
    """Open deliveries whose attempt is due and which no queue or worker holds.

    `queued_too`: also those a queue is said to hold. A queue lease is written before the
    ids reach the queue, so a process killed in between leaves a lease that nothing honours;
    a relay taking over queues them again (a job that finds its delivery taken does nothing).
    """
    query = (
        select(Delivery.id)
        .join(WebhookSubscription, WebhookSubscription.id == Delivery.subscription_id)
        .where(_open_and_unheld(now), Delivery.next_attempt_at <= now, *_LIVE)
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
    )
    if not queued_too:
        query = query.where(or_(Delivery.queued_until.is_(None), Delivery.queued_until < now))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Delivery)
    ids = list(session.scalars(query))
    if ids:
        session.execute(
            update(Delivery).where(Delivery.id.in_(ids)).values(queued_until=now + QUEUE_LEASE)
        )
    return ids


def due_in_turn(
    session: Session,
    now: datetime,
    limit: int,
    per_webhook: int | None = None,
    *,
    avoid: tuple[Sequence[int], Sequence[int]] = ((), ()),
) -> list[str]:
    """Up to `limit` deliveries a worker may claim now (`per_webhook` at most of any one
    webhook's), organizations taking turns.

    Open, due, held by no worker, to a live webhook, not waiting for its turn behind an
    earlier delivery of its appointment, whatever a queue is said to hold. Each
    organization's first comes before any organization's second, and within one
    organization each webhook's first before any webhook's second: B's one delivery is in
    the next batch even behind A's 20,000. The claim decides (pause, lease, attempts).
    `avoid`: webhooks and organizations whose deliveries to leave out.
    """
    statement = _due_in_turn_statement(session.get_bind().dialect.name == "postgresql")
    params = {
        "now": now,
        "limit": limit,
        "per_webhook": per_webhook or limit,
        "avoid_webhooks": list(avoid[0]),
        "avoid_organizations": list(avoid[1]),
    }
    return list(session.connection().execute(statement, params).scalars())


@functools.cache
def _due_in_turn_statement(postgresql: bool) -> Any:
    # Built once: building it took several times what PostgreSQL takes to run it.
    now = bindparam("now", type_=UTCDateTime())
    per_webhook = bindparam("per_webhook", type_=Integer())
    wanted = (
        *_LIVE,
        WebhookSubscription.id.not_in(bindparam("avoid_webhooks", expanding=True)),
        WebhookSubscription.organization_id.not_in(
            bindparam("avoid_organizations", expanding=True)
        ),
    )
    if postgresql:
        # Each live webhook's first few, read from its index of open deliveries: the cost
        # follows the webhooks and the limits, not the whole backlog.
        first = (
            select(Delivery.id, Delivery.organization_id, Delivery.next_attempt_at)
            .where(
                Delivery.subscription_id == WebhookSubscription.id,
                # the index's own predicate, spelled as it is, for the planner to match
                text(f"deliveries.{OPEN_DELIVERY}"),
                or_(Delivery.locked_until.is_(None), Delivery.locked_until < now),
                Delivery.next_attempt_at <= now,
                _in_turn(),
            )
            .order_by(Delivery.next_attempt_at)
            .limit(per_webhook)
            .lateral()
        )
        in_webhook = func.row_number().over(
            partition_by=WebhookSubscription.id, order_by=first.c.next_attempt_at
        )
        due = (
            select(
                first.c.id,
                first.c.organization_id,
                first.c.next_attempt_at,
                in_webhook.label("in_webhook"),
            )
            .select_from(WebhookSubscription)
            .join(first, true())
            .where(*wanted)
            .subquery()
        )
    else:
        in_webhook = func.row_number().over(
            partition_by=Delivery.subscription_id,
            order_by=(Delivery.next_attempt_at, Delivery.seq),
        )
        due = (
            select(
                Delivery.id,
                Delivery.organization_id,
                Delivery.next_attempt_at,
                in_webhook.label("in_webhook"),
            )
            .join(WebhookSubscription, WebhookSubscription.id == Delivery.subscription_id)
            .where(_open_and_unheld(now), Delivery.next_attempt_at <= now, *wanted, _in_turn())
            .subquery()
        )
    turn = (
        func.row_number()
        .over(
            partition_by=due.c.organization_id, order_by=(due.c.in_webhook, due.c.next_attempt_at)
        )
        .label("turn")
    )
    ranked = (
        select(due.c.id, due.c.next_attempt_at, turn)
        .where(due.c.in_webhook <= per_webhook)
        .subquery()
    )
    return (
        select(ranked.c.id)
        .order_by(ranked.c.turn, ranked.c.next_attempt_at)
        .limit(bindparam("limit", type_=Integer()))
    )


def free_of_locks(session: Session, ids: Sequence[str]) -> list[str]:
    """Those of `ids` no other transaction is claiming right now, locked for this one.

    PostgreSQL only (SQLite has one writer): two workers that picked the same candidates
    split them instead of queuing on each other's row locks.
    """
    if not ids or session.get_bind().dialect.name != "postgresql":
        return list(ids)
    return list(session.connection().execute(_FREE_OF_LOCKS, {"ids": list(ids)}).scalars())


_FREE_OF_LOCKS = (
    select(Delivery.id)
    .where(Delivery.id.in_(bindparam("ids", expanding=True)))
    .order_by(Delivery.id)
    .with_for_update(skip_locked=True)
)


@dataclass(frozen=True)
class Claimed:
    """A delivery a worker holds until `locked_until`, with what it needs to send it."""

    seq: int
    id: str
    subscription_id: int
    event_id: str
    event_type: str
    payload_version: str
    body: bytes
    attempt: int
    attempt_budget: int
    locked_until: datetime
    url: str = ""
    secrets: tuple[str, ...] = field(default=(), repr=False)
    organization_id: int = 0
    appointment_id: int | None = None
    # its webhook orders by appointment: settling it lets the next one go
    ordered: bool = False


def _earlier_open() -> ColumnElement[bool]:
    """An open delivery of the same appointment to the same webhook, created before this one
    (in flight or waiting to be retried): one probe of ix_deliveries_open_appointment."""
    earlier = aliased(Delivery)
    return (
        select(earlier.seq)
        .where(
            earlier.subscription_id == Delivery.subscription_id,
            earlier.appointment_id == Delivery.appointment_id,
            earlier.appointment_id.is_not(None),
            earlier.status.in_(OPEN),
            earlier.seq < Delivery.seq,
        )
        .exists()
    )


def _in_turn() -> ColumnElement[bool]:
    """Not waiting behind an earlier delivery of its appointment (ordered webhooks only)."""
    return or_(WebhookSubscription.ordering == UNORDERED, ~_earlier_open())


def _claim_statement() -> Any:
    now = bindparam("now", type_=UTCDateTime())
    until = bindparam("until", type_=UTCDateTime())
    paused = WebhookSubscription.paused_until > now
    not_paused = or_(WebhookSubscription.paused_until.is_(None), ~paused)
    due = and_(_open_and_unheld(now), Delivery.next_attempt_at <= now)

    def sending(*condition: Any) -> Any:
        return Delivery.subscription_id.in_(
            select(WebhookSubscription.id).where(*_LIVE, not_paused, *condition)
        )

    earlier_open = _earlier_open()
    # The ordering rule, with the webhook's liveness: an unordered webhook's delivery is
    # decided by the first probe alone, as before ordering existed; only an ordered one's
    # looks for an earlier delivery of its appointment. Read at claim time, so a webhook
    # switched either way orders (or stops ordering) its open deliveries at once.
    may_send = or_(
        sending(WebhookSubscription.ordering == UNORDERED),
        and_(sending(WebhookSubscription.ordering == BY_APPOINTMENT), ~earlier_open),
    )
    claimable = and_(due, may_send)
    # A paused webhook's deliveries wait out its pause in the database, unsent and with no
    # attempt counted, where the sweeper finds them when it ends.
    deferred = and_(
        due, Delivery.subscription_id.in_(select(WebhookSubscription.id).where(*_LIVE, paused))
    )
    pause_end = (
        select(WebhookSubscription.paused_until)
        .where(WebhookSubscription.id == Delivery.subscription_id)
        .scalar_subquery()
    )
    # The rows are found by id alone and the conditions decided row by row: with them in
    # the WHERE clause, statistics taken while few deliveries were open made PostgreSQL scan
    # every open delivery through the due index, for each job, just when a backlog builds.
    # A row another worker changed meanwhile is decided on its new values (read committed
    # re-reads the row it waited for), so no two claims take one delivery.
    return (
        update(Delivery)
        .where(Delivery.id.in_(bindparam("ids", expanding=True)))
        .values(
            locked_until=case((claimable, until), else_=Delivery.locked_until),
            queued_until=case((claimable, None), (deferred, None), else_=Delivery.queued_until),
            attempts=case((claimable, Delivery.attempts + 1), else_=Delivery.attempts),
            next_attempt_at=case((deferred, pause_end), else_=Delivery.next_attempt_at),
        )
        .returning(
            Delivery.seq,
            Delivery.id,
            Delivery.subscription_id,
            Delivery.event_id,
            Delivery.event_type,
            Delivery.payload_version,
            Delivery.body,
            Delivery.attempts,
            Delivery.attempt_budget,
            Delivery.locked_until,
            Delivery.organization_id,
            Delivery.appointment_id,
        )
    )


_CLAIM = _claim_statement()


def claim(session: Session, ids: Sequence[str], now: datetime, lease: timedelta) -> list[Claimed]:
    """Take the due, unheld ones among `ids`; counts the attempt that is about to happen."""
    if not ids:
        return []
    until = now + lease
    # On the connection: the ORM's bulk-update bookkeeping has no objects to synchronize.
    rows = session.connection().execute(_CLAIM, {"ids": list(ids), "now": now, "until": until})
    return [
        Claimed(
            seq=r.seq,
            id=r.id,
            subscription_id=r.subscription_id,
            event_id=r.event_id,
            event_type=r.event_type,
            payload_version=r.payload_version,
            body=r.body.encode(),
            attempt=r.attempts,
            attempt_budget=r.attempt_budget,
            locked_until=until,
            organization_id=r.organization_id,
            appointment_id=r.appointment_id,
        )
        for r in rows
        if r.locked_until == until
    ]


def due_now(session: Session, subscription_id: int, paused_until: datetime, now: datetime) -> None:
    """A webhook's pause ended early: the open deliveries it put off are due now."""
    session.execute(
        update(Delivery)
        .where(
            Delivery.subscription_id == subscription_id,
            _open_and_unheld(now),
            Delivery.next_attempt_at > now,
            Delivery.next_attempt_at <= paused_until,
        )
        .values(next_attempt_at=now, queued_until=None),
        execution_options={"synchronize_session": False},
    )


@dataclass(frozen=True)
class HandBack:
    """A claim given back unsent, to be tried again from `at` (no attempt counted)."""

    claimed: Claimed
    at: datetime


_RELEASE = (
    update(Delivery)
    .where(
        Delivery.seq == bindparam("r_seq"),
        # spelled out: an IN list is expanded per statement, not per executemany row
        or_(Delivery.status == PENDING, Delivery.status == FAILED),
        Delivery.locked_until == bindparam("r_lease", type_=UTCDateTime()),
    )
    .values(
        locked_until=None,
        queued_until=None,
        next_attempt_at=bindparam("r_at", type_=UTCDateTime()),
        attempts=Delivery.attempts - 1,
    )
)


def release(session: Session, handed_back: Iterable[HandBack]) -> None:
    """Give back claims that were not attempted (an endpoint at its cap): no attempt counted.

    Only claims still held: one whose lease ran out may belong to another worker by now.
    """
    rows = [
        {"r_seq": h.claimed.seq, "r_lease": h.claimed.locked_until, "r_at": h.at}
        for h in handed_back
    ]
    if rows:
        session.connection().execute(_RELEASE, rows)


@dataclass(frozen=True)
class Settlement:
    """The outcome of one attempt, as it is written back."""

    claimed: Claimed
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    excerpt: str | None
    status: str
    next_attempt_at: datetime | None


def _attempt_row(s: Settlement) -> dict[str, Any]:
    return {
        "delivery_seq": s.claimed.seq,
        "subscription_id": s.claimed.subscription_id,
        "number": s.claimed.attempt,
        "started_at": s.started_at,
        "duration_ms": s.duration_ms,
        "status_code": s.status_code,
        "error": s.error,
        "response_excerpt": s.excerpt,
    }


def _status_row(s: Settlement) -> dict[str, Any]:
    return {
        "b_seq": s.claimed.seq,
        "b_won": s.status == SUCCEEDED,
        "b_lease": s.claimed.locked_until,
        "b_status": s.status,
        "b_next": s.next_attempt_at,
        "b_code": s.status_code,
        "b_error": s.error,
    }


# PostgreSQL settles a batch in two statements whatever its size: one array per column.
_SETTLE = text(
    """UPDATE deliveries AS d
    SET status = v.status, next_attempt_at = v.next_at, locked_until = NULL,
        queued_until = NULL, last_status_code = v.code, last_error = v.error, updated_at = :now
    FROM unnest(
        CAST(:b_seq AS bigint[]), CAST(:b_won AS boolean[]), CAST(:b_lease AS timestamptz[]),
        CAST(:b_status AS text[]), CAST(:b_next AS timestamptz[]), CAST(:b_code AS integer[]),
        CAST(:b_error AS text[])
    ) AS v(seq, won, lease, status, next_at, code, error)
    WHERE d.seq = v.seq AND d.status NOT IN ('succeeded', 'erased')
        AND (v.won OR d.locked_until = v.lease)
    """
)


def settle(session: Session, settlements: Sequence[Settlement], now: datetime) -> list[str]:
    """Record attempts and new statuses in bulk; returns the ids of deliveries of ordered
    webhooks that may go now, their turn come (for the caller to queue after commit).

    Every attempt is recorded. A success always settles the delivery (and is never
    overwritten); a failure only while this worker still holds the claim, so that a late
    result cannot undo the lease of a worker that took the delivery over. A delivery whose
    appointment was erased meanwhile stays `erased`.
    """
    if not settlements:
        return []
    connection = session.connection()
    attempts = [_attempt_row(s) for s in settlements]
    if connection.dialect.name == "postgresql":
        bulk.insert_rows(connection, DeliveryAttempt, attempts)
        # One row per delivery: an update joined to two would apply either. A success wins
        # (it is never overwritten), otherwise the latest attempt, as applying them in turn
        # would.
        latest: dict[int, Settlement] = {}
        for s in settlements:
            kept = latest.get(s.claimed.seq)
            if kept is None or s.status == SUCCEEDED or kept.status != SUCCEEDED:
                latest[s.claimed.seq] = s
        statuses = [_status_row(s) for s in latest.values()]
        connection.execute(_SETTLE, {**bulk.columns(statuses), "now": now})
        return _let_next_go(connection, settlements)
    connection.execute(insert(DeliveryAttempt), attempts)
    statement = (
        update(Delivery)
        .where(
            and_(
                Delivery.seq == bindparam("b_seq"),
                # spelled out: an IN list is expanded per statement, not per executemany row
                Delivery.status != SUCCEEDED,
                Delivery.status != ERASED,
                or_(
                    bindparam("b_won", type_=Boolean), Delivery.locked_until == bindparam("b_lease")
                ),
            ),
        )
        .values(
            status=bindparam("b_status"),
            next_attempt_at=bindparam("b_next"),
            locked_until=None,
            queued_until=None,
            last_status_code=bindparam("b_code"),
            last_error=bindparam("b_error"),
            updated_at=now,
        )
    )
    connection.execute(statement, [_status_row(s) for s in settlements])
    return _let_next_go(connection, settlements)


_next = aliased(Delivery)
# The next open delivery of an appointment to an ordered webhook: the earliest, now that
# the one before it is settled. A job that found it waiting left it under its queue lease;
# without it the sweeper queues it at its next round (if the caller's own enqueue after
# commit is lost) instead of up to QUEUE_LEASE on.
_LET_NEXT_GO = (
    update(Delivery)
    .where(
        Delivery.seq
        == select(func.min(_next.seq))
        .where(
            _next.subscription_id == bindparam("n_sub"),
            _next.appointment_id == bindparam("n_appointment"),
            _next.appointment_id.is_not(None),
            # spelled out: an IN list is expanded per statement, not per executemany row
            or_(_next.status == PENDING, _next.status == FAILED),
        )
        .scalar_subquery(),
    )
    .values(queued_until=None)
    .returning(Delivery.id)
)


def _let_next_go(connection: Any, settlements: Sequence[Settlement]) -> list[str]:
    """In the settling transaction: an ordered delivery that succeeded or died lets the
    next of its appointment go. Nothing for unordered webhooks."""
    keys = sorted(
        {
            (s.claimed.subscription_id, s.claimed.appointment_id)
            for s in settlements
            if s.claimed.ordered
            and s.claimed.appointment_id is not None
            and s.status in (SUCCEEDED, DEAD)
        }
    )
    # one statement each: few, and only for ordered webhooks
    return [
        delivery_id
        for sub, appointment in keys
        for delivery_id in connection.execute(
            _LET_NEXT_GO, {"n_sub": sub, "n_appointment": appointment}
        ).scalars()
    ]


_WAITING = or_(Delivery.status == PENDING, Delivery.status == FAILED)
_ERASE = (
    update(Delivery)
    .where(Delivery.seq == bindparam("e_seq"))
    .values(
        body=bindparam("e_body"),
        status=case((_WAITING, ERASED), else_=Delivery.status),
        next_attempt_at=case((_WAITING, None), else_=Delivery.next_attempt_at),
        queued_until=None,
        purged_at=bindparam("e_now", type_=UTCDateTime()),
        updated_at=bindparam("e_now", type_=UTCDateTime()),
    )
)


def erase(session: Session, events: Sequence[EventRecord], now: datetime) -> int:
    """The deliveries of erased events: bodies rendered again without personal data, response
    excerpts dropped, and those still waiting marked `erased`, never to be sent.

    The events must be those of erased appointments (no key): they render null.
    """
    by_position = {e.position: e for e in events}
    if not by_position:
        return 0
    found = session.execute(
        select(
            Delivery.seq,
            Delivery.event_position,
            Delivery.payload_version,
            WebhookSubscription.payload,
        )
        .join(WebhookSubscription, WebhookSubscription.id == Delivery.subscription_id)
        .where(Delivery.event_position.in_(sorted(by_position)))
        # in one order, as every writer of several deliveries should, to avoid deadlocks
        .order_by(Delivery.seq)
    ).all()
    if not found:
        return 0
    bodies: dict[tuple[int, str, str], str] = {}
    rows = []
    for seq, position, version, style in found:
        form = (position, version, style)
        if form not in bodies:
            bodies[form] = payloads.render(open_event(by_position[position], None), version, style)
        rows.append({"e_seq": seq, "e_body": bodies[form], "e_now": now})
    connection = session.connection()
    connection.execute(_ERASE, rows)
    seqs = [row["e_seq"] for row in rows]
    connection.execute(
        update(DeliveryAttempt)
        .where(
            DeliveryAttempt.delivery_seq.in_(seqs), DeliveryAttempt.response_excerpt.is_not(None)
        )
        .values(response_excerpt=None)
    )
    return len(rows)


def purge_payloads(session: Session, finished_before: datetime, now: datetime, limit: int) -> int:
    """Drop the bodies and response excerpts of deliveries finished before then, a batch at a
    time; status, attempts and timings stay. A delivery still to be sent is never purged."""
    seqs = list(
        session.scalars(
            select(Delivery.seq)
            .where(
                Delivery.purged_at.is_(None),
                Delivery.updated_at < finished_before,
                Delivery.status.in_(FINISHED),
            )
            .limit(limit)
        )
    )
    if not seqs:
        return 0
    connection = session.connection()
    connection.execute(
        update(Delivery).where(Delivery.seq.in_(seqs)).values(body=None, purged_at=now)
    )
    connection.execute(
        update(DeliveryAttempt)
        .where(
            DeliveryAttempt.delivery_seq.in_(seqs), DeliveryAttempt.response_excerpt.is_not(None)
        )
        .values(response_excerpt=None)
    )
    return len(seqs)
