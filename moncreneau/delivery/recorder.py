"""The worker's bookkeeping: settlements, hand-backs and pauses written in batches."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from moncreneau import clock
from moncreneau.config import Settings
from moncreneau.db import write_session
from moncreneau.delivery.endpoints import pause_sending, record_disabled
from moncreneau.delivery.store import SUCCEEDED, Claimed, HandBack, Settlement, release, settle
from moncreneau.models import WebhookSubscription

log = logging.getLogger(__name__)

# An endpoint whose last answers in a worker all failed, this many in a row, is paused:
# what is handed to that worker for it meanwhile goes back to the database unsent (no
# attempt counted) for PAUSE, instead of failing one more time each.
PAUSE_AFTER_FAILURES = 20
PAUSE = timedelta(seconds=5)
# Every worker leaves the webhook alone for as long as it has been failing, within these.
MAX_PAUSE = timedelta(minutes=5)
# Settlements are written together: at most this many, at most this often.
FLUSH_SIZE = 500
FLUSH_SECONDS = 0.02


@dataclass(frozen=True)
class _Pause:
    """A webhook to pause for every worker: it failed PAUSE_AFTER_FAILURES times in a row."""

    subscription_id: int


_Record = Settlement | HandBack | _Pause


class Recorder:
    """Writes settlements and hand-backs in batches from one thread; retries while the
    database is away."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        enqueue: Callable[[list[str]], None] | None = None,
    ) -> None:
        """`enqueue`: where deliveries whose turn came (ordered webhooks) are queued once
        the settlement that let them go is committed; without it, the sweeper's next round
        queues them."""
        self._sessions = sessions
        self._settings = settings
        self._enqueue = enqueue
        self._queue: queue.Queue[_Record] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def add(self, settlement: Settlement) -> None:
        self._queue.put(settlement)

    def hand_back(self, items: list[Claimed], delay: timedelta) -> None:
        # Written with the next batch rather than in a transaction of the job's own: until
        # then the claim holds them, and if this process dies its lease runs out.
        at = clock.now() + delay
        for item in items:
            self._queue.put(HandBack(item, at))

    def pause(self, subscription_id: int) -> None:
        self._queue.put(_Pause(subscription_id))

    def wait_idle(self, timeout: float) -> bool:
        """Whether everything added so far was written within `timeout` seconds."""
        done = threading.Thread(target=self._queue.join, daemon=True)
        done.start()
        done.join(timeout)
        return not done.is_alive()

    def _run(self) -> None:
        while True:
            batch: list[_Record] = [self._queue.get()]
            deadline = time.monotonic() + FLUSH_SECONDS
            while len(batch) < FLUSH_SIZE:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            try:
                self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _write(self, batch: list[_Record]) -> None:
        """Write a batch; wait out a database outage, but never let one bad row block all."""
        pause = 0.5
        while True:
            try:
                self._commit(batch)
                return
            except (OperationalError, InterfaceError):
                log.warning("database unavailable; %d attempts wait to be recorded", len(batch))
                time.sleep(pause)
                pause = min(pause * 2, 10.0)
            except Exception:
                if len(batch) == 1:
                    # The lease runs out and the delivery is tried again: late, never lost.
                    (item,) = batch
                    if isinstance(item, _Pause):
                        log.exception("could not pause webhook %s", item.subscription_id)
                    else:
                        log.exception("dropping the record of delivery %s", item.claimed.id)
                    return
                for single in batch:
                    self._write([single])
                return

    def _commit(self, batch: list[_Record]) -> None:
        settlements = [s for s in batch if isinstance(s, Settlement)]
        handed_back = [h for h in batch if isinstance(h, HandBack)]
        paused = {p.subscription_id for p in batch if isinstance(p, _Pause)}
        with write_session(self._sessions) as db:
            now = clock.now()
            turns = settle(db, settlements, now)
            release(db, handed_back)
            self._update_health(db, settlements)
            ends = {s: pause_sending(db, s, now, PAUSE, MAX_PAUSE) for s in sorted(paused)}
            db.commit()
        if turns and self._enqueue is not None:
            try:
                self._enqueue(turns)
            except Exception:
                # They are due and held by nobody: the sweeper queues them at its next round.
                log.warning("could not queue %d deliveries whose turn came", len(turns))
        for subscription_id, until in ends.items():
            log.warning(
                "webhook %s failed %d times in a row: no worker sends to it until %s",
                subscription_id,
                PAUSE_AFTER_FAILURES,
                until.isoformat(),
                extra={"webhook_id": subscription_id},
            )

    def _update_health(self, db: Session, batch: list[Settlement]) -> None:
        now = clock.now()
        succeeded = {s.claimed.subscription_id for s in batch if s.status == SUCCEEDED}
        failed = {s.claimed.subscription_id for s in batch if s.status != SUCCEEDED} - succeeded
        gone = {s.claimed.subscription_id for s in batch if s.status_code == 410}
        if succeeded:
            db.execute(
                update(WebhookSubscription)
                .where(
                    WebhookSubscription.id.in_(succeeded),
                    # a row rewritten for nothing on every batch is bloat and WAL
                    WebhookSubscription.failing_since.is_not(None),
                )
                .values(failing_since=None)
            )
        if failed:
            db.execute(
                update(WebhookSubscription)
                .where(
                    WebhookSubscription.id.in_(failed),
                    WebhookSubscription.failing_since.is_(None),
                )
                .values(failing_since=now)
            )
            limit = now - timedelta(hours=self._settings.disable_after_hours)
            # Only those to disable: a batch with a failure is the rule while one fails.
            to_disable = db.scalars(
                select(WebhookSubscription).where(
                    WebhookSubscription.id.in_(failed),
                    WebhookSubscription.enabled.is_(True),
                    or_(
                        WebhookSubscription.id.in_(gone),
                        WebhookSubscription.failing_since <= limit,
                    ),
                )
            )
            for subscription in to_disable:
                if subscription.id in gone:
                    reason = "The endpoint answered 410 Gone."
                else:
                    reason = (
                        f"Every delivery failed for {self._settings.disable_after_hours:g} hours."
                    )
                log.warning("disabling webhook %s: %s", subscription.id, reason)
                record_disabled(db, subscription, reason, now)
