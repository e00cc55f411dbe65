"""The queued jobs, run by RQ workers or in-process in embedded mode.

`wake()` claims due deliveries from the database in batches until none is left;
`deliver(delivery_ids)` claims the given ones (jobs a previous version queued).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from moncreneau import clock
from moncreneau.config import Settings
from moncreneau.db import make_engine, make_session_factory, write_session
from moncreneau.delivery.dispatcher import RELEASE_DELAY, Dispatcher
from moncreneau.delivery.endpoints import secrets_of
from moncreneau.delivery.queueing import RedisQueue, make_queue
from moncreneau.delivery.store import (
    BY_APPOINTMENT,
    QUEUE_LEASE,
    Claimed,
    claim,
    due_in_turn,
    free_of_locks,
)
from moncreneau.models import WebhookSubscription
from moncreneau.secretbox import SecretBox, resolve_key

log = logging.getLogger(__name__)

# A job waits this long for an unavailable database before failing. Once failed, its
# deliveries stay queued in the database's view until their queue lease runs out, so
# waiting out a restart here delivers them seconds sooner.
OUTAGE_PATIENCE = QUEUE_LEASE / 2
# Opened webhook secrets kept in memory per process.
SECRETS_KEPT = 10_000
# A wake-up returns after this long (seconds), asking for another if it was still finding
# work: RQ's job timeout and a worker's warm shutdown only ever wait for short jobs.
WAKE_SLICE = 2.0
# Candidates are selected this many batches at a time, and again once used up or this old
# (seconds), so that an organization with new work waits at most that long for its turn.
CANDIDATE_BATCHES = 10
CANDIDATES_FRESH = 0.5
# and at most this many batches of any one webhook's deliveries in a selection
PER_WEBHOOK = 2

T = TypeVar("T")


@dataclass
class DeliveryContext:
    """What a delivering process shares between jobs: one dispatcher, its pools and threads."""

    settings: Settings
    sessions: sessionmaker[Session]
    box: SecretBox
    dispatcher: Dispatcher

    @functools.cached_property
    def open_secret(self) -> Callable[[str], str]:
        # A sealed secret never changes meaning (a new secret is a new token), so what was
        # opened once is kept: a fan-out to a thousand webhooks decrypts nothing twice.
        return functools.lru_cache(maxsize=SECRETS_KEPT)(self.box.open)

    @property
    def lease(self) -> timedelta:
        # Long enough for a full timeout of every request lined up behind one endpoint.
        return timedelta(seconds=2 * self.settings.delivery_timeout + 5)


_context: DeliveryContext | None = None
_context_lock = threading.Lock()


def install(settings: Settings, sessions: sessionmaker[Session] | None = None) -> DeliveryContext:
    """Create this process's delivery context (the worker and the embedded mode call it)."""
    global _context
    with _context_lock:
        if _context is None:
            sessions = sessions or make_session_factory(make_engine(settings.database_url))
            _context = DeliveryContext(
                settings=settings,
                sessions=sessions,
                box=SecretBox(resolve_key(settings)),
                # deliveries whose turn came (ordered webhooks) go to the queue at once
                dispatcher=Dispatcher(sessions, settings, enqueue=make_queue(settings).enqueue),
            )
        return _context


def warm(ctx: DeliveryContext) -> None:
    """Connect to the database and run a job's statements once, on no delivery.

    A worker's first job otherwise pays for the connection and for compiling its
    statements: four times a later job's claim, for the first deliveries of a burst.
    """
    try:
        with write_session(ctx.sessions) as db:
            due_in_turn(db, clock.now(), 0)
            claim(db, free_of_locks(db, ["msg_none"]), clock.now(), ctx.lease)
            db.connection().execute(_ADDRESSES, {"ids": [0]}).all()
            db.rollback()
    except (OperationalError, InterfaceError):
        # Jobs wait for the database themselves: a worker starts all the same.
        log.warning("database unavailable at start; the first job will wait for it")


def context() -> DeliveryContext:
    return _context or install(Settings.from_env())


# A subscription's signing columns, read for each job: the URL or a secret may change.
_ADDRESSES = select(
    WebhookSubscription.id,
    WebhookSubscription.url,
    WebhookSubscription.secret,
    WebhookSubscription.previous_secret,
    WebhookSubscription.previous_secret_expires_at,
    WebhookSubscription.ordering,
).where(WebhookSubscription.id.in_(bindparam("ids", expanding=True)))


def _address(db: Session, ctx: DeliveryContext, claimed: list[Claimed]) -> list[Claimed]:
    """Attach each claimed delivery's URL and signing secrets (decrypted only in memory),
    and whether its webhook orders by appointment."""
    ids = sorted({c.subscription_id for c in claimed})
    now = clock.now()
    found = {
        row.id: (row.url, secrets_of(row, ctx.open_secret, now), row.ordering == BY_APPOINTMENT)
        for row in db.connection().execute(_ADDRESSES, {"ids": ids})
    }
    addressed = []
    for c in claimed:
        url, secrets, ordered = found[c.subscription_id]
        addressed.append(replace(c, url=url, secrets=secrets, ordered=ordered))
    return addressed


def deliver(delivery_ids: list[str]) -> int:
    """Claim the due ones among these deliveries and start sending them; safe to run twice.

    Returns how many were claimed. Attempts are recorded as they finish; a worker that dies
    meanwhile leaves leases that expire, and the sweeper queues those deliveries again.
    """
    return deliver_with(context(), delivery_ids)


def deliver_with(ctx: DeliveryContext, delivery_ids: list[str]) -> int:
    return _patiently(lambda: _claim_and_send(ctx, delivery_ids), len(delivery_ids))


def _patiently(step: Callable[[], T], waiting: int) -> T:
    """`step`, tried again while the database is unavailable, for OUTAGE_PATIENCE at most."""
    deadline = time.monotonic() + OUTAGE_PATIENCE.total_seconds()
    pause = 0.5
    while True:
        try:
            return step()
        except (OperationalError, InterfaceError):
            if time.monotonic() + pause > deadline:
                raise
            log.warning("database unavailable; %d deliveries wait for it", waiting)
            time.sleep(pause)
            pause = min(pause * 2, 4.0)


_queues: dict[str, RedisQueue] = {}


def _wakeups(settings: Settings, queue_name: str) -> RedisQueue:
    queue = _queues.get(queue_name)
    if queue is None:
        queue = _queues[queue_name] = RedisQueue(settings.replace(queue_name=queue_name))
    return queue


def wake(queue_name: str | None = None) -> int:
    """A wake-up: claim due deliveries from the database and start sending them, a batch at
    a time, while there are any (for WAKE_SLICE at most). Returns how many were claimed.

    At most one wake-up waits per queue; one that claims a full batch asks for another, so
    that every idle worker joins in a backlog.
    """
    ctx = context()
    wakeups = _wakeups(ctx.settings, queue_name or ctx.settings.queue_name)
    wakeups.woken()
    return wake_with(ctx, wakeups.wake)


def wake_with(ctx: DeliveryContext, again: Callable[[], None]) -> int:
    """Claim and send what is due until none is left; `again` asks for another wake-up."""
    batch = ctx.settings.job_batch
    deadline = time.monotonic() + WAKE_SLICE
    claimed = 0
    asked = False
    candidates: list[str] = []
    selected_at = 0.0
    progress, complete = True, False

    def ask() -> None:
        try:
            again()
        except Exception:
            log.warning("could not ask for another wake-up; the sweeper will")

    limit, per_webhook = batch * CANDIDATE_BATCHES, batch * PER_WEBHOOK
    while True:
        if not candidates or time.monotonic() - selected_at > CANDIDATES_FRESH:
            if not progress or (not candidates and complete):
                # A whole selection claimed nothing (other workers took it, or the claim
                # refused it): what is left is not this wake-up's to spin on. Or it held
                # all that was due: what the relay or an ordered delivery's turn made due
                # since has queued a wake-up (the mark was cleared before the selection),
                # and a retry's backoff or a hand-back ending is the sweeper's.
                return claimed
            candidates, avoided = _patiently(lambda: _select(ctx, limit, per_webhook), 0)
            if avoided:
                _wake_later(ask)
            if not candidates:
                return claimed
            # Less than a batch: no limit left anything due out, and no fan-out is being
            # written (the relay commits one in chunks of a batch and more, each waking a
            # worker only once this wake-up is done).
            complete = len(candidates) < batch
            selected_at = time.monotonic()
            progress = False
        ids, candidates = candidates[:batch], candidates[batch:]
        taken = _patiently(functools.partial(_claim_and_send, ctx, ids, skip_locked=True), len(ids))
        claimed += taken
        progress = progress or taken > 0
        if taken < len(ids) / 2:
            # Another worker is claiming from the same selection, from here on: leave it
            # the nearer half of what is left and go on from the farther one.
            candidates = candidates[len(candidates) // batch // 2 * batch :]
        if taken == batch and not asked:
            asked = True
            ask()
        if time.monotonic() > deadline:
            if progress:
                ask()
            return claimed


def _select(ctx: DeliveryContext, limit: int, per_webhook: int) -> tuple[list[str], bool]:
    """Candidates, and whether some webhook or organization was left out."""
    avoid = ctx.dispatcher.refusing()
    # A read: on SQLite it takes no write lock, which bookings and the claims wait for.
    with ctx.sessions() as db:
        ids = due_in_turn(db, clock.now(), limit, per_webhook, avoid=avoid)
        db.rollback()
    return ids, bool(avoid[0] or avoid[1])


_later: threading.Timer | None = None
_later_lock = threading.Lock()


def _wake_later(ask: Callable[[], None]) -> None:
    """What a wake-up left out stays under its queue lease, which keeps the sweeper away for
    up to 30 s: ask for another wake-up once the worker may take it (one pending per
    process), so a webhook that answers again is sent to within a second or so."""
    global _later
    with _later_lock:
        if _later is not None and _later.is_alive():
            return
        _later = threading.Timer(RELEASE_DELAY.total_seconds(), ask)
        _later.daemon = True
        _later.start()


def _claim_and_send(
    ctx: DeliveryContext, delivery_ids: list[str], skip_locked: bool = False
) -> int:
    with write_session(ctx.sessions) as db:
        if skip_locked:
            delivery_ids = free_of_locks(db, delivery_ids)
        claimed = claim(db, delivery_ids, clock.now(), ctx.lease)
        claimed = _address(db, ctx, claimed) if claimed else []
        db.commit()
    if claimed:
        ctx.dispatcher.submit(claimed)
    return len(claimed)
