"""The queued job: `deliver(delivery_ids)`, run by RQ workers or in-process in embedded mode."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from moncreneau import clock
from moncreneau.config import Settings
from moncreneau.db import make_engine, make_session_factory, write_session
from moncreneau.delivery.dispatcher import Dispatcher
from moncreneau.delivery.endpoints import secrets_of
from moncreneau.delivery.queueing import make_queue
from moncreneau.delivery.store import BY_APPOINTMENT, QUEUE_LEASE, Claimed, claim
from moncreneau.models import WebhookSubscription
from moncreneau.secretbox import SecretBox, resolve_key

log = logging.getLogger(__name__)

# A job waits this long for an unavailable database before failing. Once failed, its
# deliveries stay queued in the database's view until their queue lease runs out, so
# waiting out a restart here delivers them seconds sooner.
OUTAGE_PATIENCE = QUEUE_LEASE / 2
# Opened webhook secrets kept in memory per process.
SECRETS_KEPT = 10_000


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
            claim(db, ["msg_none"], clock.now(), ctx.lease)
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
    return [
        replace(
            c,
            url=found[c.subscription_id][0],
            secrets=found[c.subscription_id][1],
            ordered=found[c.subscription_id][2],
        )
        for c in claimed
    ]


def deliver(delivery_ids: list[str]) -> int:
    """Claim the due ones among these deliveries and start sending them; safe to run twice.

    Returns how many were claimed. Attempts are recorded as they finish; a worker that dies
    meanwhile leaves leases that expire, and the sweeper queues those deliveries again.
    """
    return deliver_with(context(), delivery_ids)


def deliver_with(ctx: DeliveryContext, delivery_ids: list[str]) -> int:
    deadline = time.monotonic() + OUTAGE_PATIENCE.total_seconds()
    pause = 0.5
    while True:
        try:
            return _claim_and_send(ctx, delivery_ids)
        except (OperationalError, InterfaceError):
            if time.monotonic() + pause > deadline:
                raise
            log.warning("database unavailable; %d deliveries wait for it", len(delivery_ids))
            time.sleep(pause)
            pause = min(pause * 2, 4.0)


def _claim_and_send(ctx: DeliveryContext, delivery_ids: list[str]) -> int:
    with write_session(ctx.sessions) as db:
        claimed = claim(db, delivery_ids, clock.now(), ctx.lease)
        claimed = _address(db, ctx, claimed) if claimed else []
        db.commit()
    if claimed:
        ctx.dispatcher.submit(claimed)
    return len(claimed)
