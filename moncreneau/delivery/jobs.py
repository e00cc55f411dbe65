"""The queued job: `deliver(delivery_ids)`, run by RQ workers or in-process in embedded mode."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from moncreneau import clock
from moncreneau.config import Settings
from moncreneau.db import make_engine, make_session_factory, write_session
from moncreneau.delivery.dispatcher import Dispatcher
from moncreneau.delivery.store import QUEUE_LEASE, Claimed, claim, release
from moncreneau.models import WebhookSubscription
from moncreneau.secretbox import SecretBox, resolve_key
from moncreneau.webhooks.service import secrets_of

log = logging.getLogger(__name__)

# A job waits this long for an unavailable database before failing. Once failed, its
# deliveries stay queued in the database's view until their queue lease runs out, so
# waiting out a restart here delivers them seconds sooner.
OUTAGE_PATIENCE = QUEUE_LEASE / 2


@dataclass
class DeliveryContext:
    """What a delivering process shares between jobs: one dispatcher, its pools and threads."""

    settings: Settings
    sessions: sessionmaker[Session]
    box: SecretBox
    dispatcher: Dispatcher

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
            holder: list[DeliveryContext] = []

            def on_release(items: list[Claimed], delay: timedelta) -> None:
                with write_session(holder[0].sessions) as db:
                    release(db, items, clock.now() + delay)
                    db.commit()

            _context = DeliveryContext(
                settings=settings,
                sessions=sessions,
                box=SecretBox(resolve_key(settings)),
                dispatcher=Dispatcher(sessions, settings, on_release),
            )
            holder.append(_context)
        return _context


def context() -> DeliveryContext:
    return _context or install(Settings.from_env())


def _address(db: Session, ctx: DeliveryContext, claimed: list[Claimed]) -> list[Claimed]:
    """Attach each claimed delivery's URL and signing secrets (decrypted only in memory)."""
    ids = {c.subscription_id for c in claimed}
    subscriptions = {
        s.id: s
        for s in db.scalars(select(WebhookSubscription).where(WebhookSubscription.id.in_(ids)))
    }
    now = clock.now()
    keys = {i: secrets_of(s, ctx.box, now) for i, s in subscriptions.items()}
    return [
        replace(c, url=subscriptions[c.subscription_id].url, secrets=keys[c.subscription_id])
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
