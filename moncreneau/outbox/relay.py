"""The relay: reads the event log after its position and creates one delivery per subscriber.

The database is the source of truth. A delivery exists as a row before any worker is woken
for it, and the sweeper wakes the workers again for whatever is due and held by nobody, so
a lost wake-up or a dead worker only delays a delivery. Relays may run side by side: the
position's row lock admits one at a time (between the chunks of a large fan-out another may
take over), and (event, subscription) is unique among deliveries, so no delivery is created
twice.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from moncreneau import clock
from moncreneau.clock import utcnow
from moncreneau.config import Settings
from moncreneau.db import WRITE, write_session
from moncreneau.delivery import store as deliveries
from moncreneau.delivery.endpoints import wants
from moncreneau.delivery.queueing import DeliveryQueue
from moncreneau.delivery.store import Subscriber
from moncreneau.models import (
    RelayState,
    WebhookSubscription,
)
from moncreneau.ops import metrics
from moncreneau.outbox import payloads, store
from moncreneau.personal import Revealed, Vault, reveal
from moncreneau.secretbox import resolve_key

log = logging.getLogger(__name__)

RELAY = "relay"
# Deliveries created per transaction, whatever the fan-out: keeps transactions short.
MAX_DELIVERIES_PER_BATCH = 10_000
# The sweeper wakes no one while this many jobs wait (workers down or far behind).
MAX_QUEUED_JOBS = 1000
# Payload retention and automatic erasure look for work this often, a batch at a time.
RETENTION_SECONDS = 60.0
RETENTION_BATCH = 1000
# Erasure batches one housekeeping round does at most before the relay gets a turn.
ERASURE_BATCHES = 8


# What fan-out reads of each live webhook, as plain rows: a thousand subscribers of one
# organization are read for every batch that holds one of its events.
_SUBSCRIBERS = select(
    WebhookSubscription.id,
    WebhookSubscription.organization_id,
    WebhookSubscription.events,
    WebhookSubscription.version,
    WebhookSubscription.payload,
).where(
    WebhookSubscription.organization_id.in_(bindparam("orgs", expanding=True)),
    WebhookSubscription.enabled.is_(True),
    WebhookSubscription.deleted_at.is_(None),
)


def _locked_state(db: Session) -> RelayState:
    query = (
        select(RelayState)
        .where(RelayState.name == RELAY)
        .with_for_update()
        # read again when locked again in the same session, after a commit
        .execution_options(populate_existing=True)
    )
    state = db.scalar(query)
    if state is None:
        try:
            with db.begin_nested():
                db.add(RelayState(name=RELAY, txid=0, position=0, updated_at=utcnow()))
        except IntegrityError:
            pass  # another relay created it first
        state = db.scalar(query)
    assert state is not None
    return state


def relay_once(
    sessions: sessionmaker[Session],
    settings: Settings,
    enqueue: Callable[[list[str]], None] | None = None,
    vault: Vault | None = None,
) -> tuple[bool, list[str]]:
    """One batch of events: returns (whether more may be waiting, ids of deliveries created).

    With `enqueue`, a large fan-out is committed and handed to it in growing chunks, the
    first one job's worth, so that workers start on it while the rest is written; the ids
    returned are then only those of the last chunk. The position moves once all are in.
    """
    vault = vault or Vault(resolve_key(settings))
    with write_session(sessions) as db:
        # Before the row lock, which gives this transaction an id that holds events back.
        store.wait_until_readable(db)
        state = _locked_state(db)
        records = store.read_after(db, store.LogPosition.of(state), settings.relay_batch)
        if not records:
            db.rollback()
            return False, []
        # Their keys are held until commit: an erasure waits, then finds these deliveries.
        events = reveal(db, vault, records, lock=True)
        subscribers: dict[int, list[Subscriber]] = defaultdict(list)
        organizations = sorted({e.organization_id for e in events})
        for row in db.connection().execute(_SUBSCRIBERS, {"orgs": organizations}):
            subscribers[row.organization_id].append(row)
        # Full precision: replay windows select deliveries by creation time.
        now = clock.now()
        budget = settings.attempt_budget
        rows: list[dict[str, Any]] = []
        built = created = 0
        chunk = settings.job_batch
        last = events[-1]
        more = len(events) == settings.relay_batch
        done: set[str] = set()
        reopened: dict[str, Revealed] = {}

        def hand_over(batch: list[dict[str, Any]], through: Revealed, unfinished: set[str]) -> bool:
            """Commit `batch` without moving the position and hand it to `enqueue`; False
            if another relay has relayed `through` meanwhile.

            After a crash, or if another relay takes over from here, the same rows are
            inserted again and ignored. The commit let the keys of the events still to
            write go: they are opened and held again, so that an erasure that came in
            between is seen, not undone by a body rendered before it.
            """
            nonlocal created, state, reopened
            assert enqueue is not None
            ids = deliveries.insert_ignoring_duplicates(db, batch)
            db.commit()
            created += len(ids)
            enqueue(ids)
            db.connection(execution_options=WRITE)
            state = _locked_state(db)
            if store.LogPosition.of(state) >= store.LogPosition.of(through):
                db.rollback()  # another relay finished these events meanwhile
                metrics.RELAYED_EVENTS.labels("deliveries").inc(created)
                return False
            left = [r for r in records if r.id in unfinished]
            reopened = {e.id: e for e in reveal(db, vault, left, lock=True)}
            return True

        if enqueue is not None:
            light = _light(events, subscribers, chunk)
            if light:
                # The events of organizations with little to fan out in this batch go first,
                # committed and handed over before the others: another tenant's burst of
                # large fan-outs does not hold them back by tens of thousands of
                # deliveries. One organization's events keep their order (an appointment's
                # are all its own); the position moves only once all are in.
                done = {event.id for event in light}
                light_rows = [
                    delivery
                    for event in light
                    for delivery in _rows(event, subscribers[event.organization_id], now, budget)
                ]
                if not hand_over(light_rows, events[-1], {e.id for e in events} - done):
                    return True, []
        for index, event in enumerate(events):
            if built >= MAX_DELIVERIES_PER_BATCH:
                # A huge fan-out finishes in the next transaction, from this event on.
                more = True
                break
            last = event
            if event.id in done:
                continue
            # its webhooks whose delivery a hand-over committed already
            written: set[int] = set()
            handed = True
            while handed:
                handed = False
                opened = reopened.get(event.id, event)
                for delivery in _rows(opened, subscribers[event.organization_id], now, budget):
                    if delivery["subscription_id"] in written:
                        continue
                    rows.append(delivery)
                    built += 1
                    if enqueue is None or len(rows) < chunk:
                        continue
                    written.update(r["subscription_id"] for r in rows if r["event_id"] == event.id)
                    unfinished = {e.id for e in events[index:]} - done
                    if not hand_over(rows, event, unfinished):
                        return True, []
                    rows, chunk = [], 2 * chunk
                    # the rest of this event from its keys as they are now
                    handed = True
                    break
        ids = deliveries.insert_ignoring_duplicates(db, rows)
        created += len(ids)
        state.txid, state.position = last.txid, last.position
        state.updated_at = now
        db.commit()
    relayed = events.index(last) + 1
    metrics.RELAYED_EVENTS.labels("events").inc(relayed)
    metrics.RELAYED_EVENTS.labels("deliveries").inc(created)
    log.debug(
        "relayed events up to %s: %d deliveries",
        store.LogPosition.of(last),
        created,
        extra={"count": relayed},
    )
    return more, ids


def _rows(
    event: Revealed, subscribers: list[Subscriber], now: datetime, budget: int
) -> Iterator[dict[str, Any]]:
    """The deliveries of one event: one per subscriber that wants it, a body per form."""
    bodies: dict[tuple[str, str], str] = {}
    for subscription in subscribers:
        if not wants(subscription, event.type):
            continue
        if event.webhook_id is not None and event.webhook_id != subscription.id:
            continue
        form = (subscription.version, subscription.payload)
        if form not in bodies:
            bodies[form] = payloads.render(event, *form)
        yield deliveries.new_delivery_row(event, subscription, now, budget, bodies[form])


def _light(
    events: list[Revealed], subscribers: dict[int, list[Subscriber]], chunk: int
) -> list[Revealed]:
    """The events of organizations whose fan-out in this batch is at most `chunk`
    deliveries, when others' is larger than that (else nothing: no one waits long)."""
    fanout: dict[int, int] = defaultdict(int)
    for event in events:
        fanout[event.organization_id] += len(subscribers[event.organization_id])
    if all(n <= chunk for n in fanout.values()) or all(n > chunk for n in fanout.values()):
        return []
    return [event for event in events if fanout[event.organization_id] <= chunk]


def sweep(
    sessions: sessionmaker[Session], limit: int = 5000, *, taking_over: bool = False
) -> list[str]:
    """Deliveries that are due and held by no queue or worker (retries, lost jobs).

    `taking_over`, a relay's first sweep: also those whose queue lease may be a dead
    relay's, committed by a relay (or its sweep) killed before it queued them.
    """
    with write_session(sessions) as db:
        # Not `utcnow()`: a retry due in half a second must not wait for the next whole one.
        ids = deliveries.due_for_queue(db, clock.now(), limit, queued_too=taking_over)
        db.commit()
    return ids


class Waker:
    """Waits for new events: woken by PostgreSQL NOTIFY on commit, else by polling."""

    def __init__(self, sessions: sessionmaker[Session], poll: float) -> None:
        bind = sessions.kw["bind"]
        self._url = (
            bind.url.set(drivername="postgresql").render_as_string(hide_password=False)
            if bind.dialect.name == "postgresql"
            else None
        )
        self._poll = poll
        self._connection: psycopg.Connection[Any] | None = None

    def wait(self, stop: threading.Event, limit: float) -> None:
        """Until new events may be there, or `limit` seconds at most."""
        if self._url is None:
            stop.wait(min(self._poll, limit))
            return
        try:
            if self._connection is None:
                self._connection = psycopg.connect(self._url, autocommit=True)
                self._connection.execute(f"LISTEN {store.CHANNEL}")
            # A notification that arrived while the relay was busy is waiting here already.
            for _ in self._connection.notifies(timeout=limit, stop_after=1):
                pass
        except psycopg.Error:
            log.warning("relay lost its LISTEN connection; polling until it is back")
            self.close()
            stop.wait(min(self._poll, limit))

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(psycopg.Error):
                self._connection.close()
            self._connection = None


def run(
    sessions: sessionmaker[Session],
    settings: Settings,
    queue: DeliveryQueue,
    stop: threading.Event,
    housekeeping: Callable[[], None] | None = None,
) -> None:
    """Relay and sweep until `stop` is set; survives a database or Redis outage.

    `housekeeping` runs at the sweep's cadence, apart from it: the process that starts the
    relay brings it (ops/housekeeping.py), so that the log's machinery imports no API service.
    """
    waker = Waker(sessions, settings.relay_poll_seconds)
    try:
        _loop(sessions, settings, queue, stop, waker, housekeeping)
    finally:
        waker.close()


def _loop(
    sessions: sessionmaker[Session],
    settings: Settings,
    queue: DeliveryQueue,
    stop: threading.Event,
    waker: Waker,
    housekeeping: Callable[[], None] | None,
) -> None:
    last_sweep = 0.0
    taking_over = True
    vault = Vault(resolve_key(settings))
    pause = 0.5
    while not stop.is_set():
        more = False
        failed = False
        try:
            more, ids = relay_once(sessions, settings, queue.enqueue, vault)
            queue.enqueue(ids)
        except Exception:
            log.exception("relaying events failed")
            failed = True
        if time.monotonic() - last_sweep >= settings.sweep_seconds:
            # On its own: retries and lost jobs keep flowing even if relaying is stuck.
            try:
                # With no worker taking jobs, queuing the same deliveries again every lease
                # would only fill Redis: wait until the queue drains.
                if queue.backlog() < MAX_QUEUED_JOBS:
                    queue.enqueue(sweep(sessions, taking_over=taking_over))
                taking_over = False
                last_sweep = time.monotonic()
            except Exception:
                log.exception("sweeping due deliveries failed")
                failed = True
            if housekeeping is not None:
                try:
                    housekeeping()
                except Exception:
                    log.exception("housekeeping (erasures, retention, idempotency keys) failed")
                    failed = True
        if failed:
            stop.wait(pause)
            pause = min(pause * 2, 10.0)
            continue
        pause = 0.5
        if not more:
            # Polling stays the safety net: the sweep's cadence bounds every wait.
            until_sweep = last_sweep + settings.sweep_seconds - time.monotonic()
            if until_sweep > 0:
                waker.wait(stop, until_sweep)
