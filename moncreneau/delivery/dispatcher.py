"""Many deliveries in flight per process, a cap per endpoint, and bulk bookkeeping.

A job hands claimed deliveries to `Dispatcher.submit`, which returns as soon as they are
running or waiting behind their endpoint: a slow endpoint fills only its own cap, and
what does not fit behind it goes back to the database to be tried again shortly.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from moncreneau import clock
from moncreneau.config import Settings
from moncreneau.db import write_session
from moncreneau.delivery import schedule, sender, signing
from moncreneau.delivery.endpoints import pause_sending, record_disabled
from moncreneau.delivery.store import (
    DEAD,
    FAILED,
    SUCCEEDED,
    Claimed,
    HandBack,
    Settlement,
    release,
    settle,
)
from moncreneau.models import WebhookSubscription
from moncreneau.ops import metrics

log = logging.getLogger(__name__)

# A failing endpoint keeps at least this many requests in flight, to notice its recovery.
MIN_ENDPOINT_LIMIT = 2
# Rounds of requests that may wait behind an endpoint that has not timed out lately.
HEALTHY_ROUNDS = 4
# A delivery handed back because its endpoint is at capacity is tried again after this; one
# whose endpoint is timing out, or has not answered for this long, after a whole timeout,
# when its requests free a slot at best.
RELEASE_DELAY = timedelta(seconds=1)
# An endpoint whose last answers in this process all failed, this many in a row, is paused:
# what is handed to the worker for it meanwhile goes back to the database unsent (no
# attempt counted) for this long, instead of failing one more time each.
PAUSE_AFTER_FAILURES = 20
PAUSE = timedelta(seconds=5)
# Every worker leaves the webhook alone for as long as it has been failing, within these.
MAX_PAUSE = timedelta(minutes=5)
# Where `Dispatcher._line_up` puts a delivery, when it does not hand it back.
_START, _QUEUED = "start", "queued"
# Settlements are written together: at most this many, at most this often.
FLUSH_SIZE = 500
FLUSH_SECONDS = 0.02


@dataclass
class _Endpoint:
    """One webhook's share of the process: how many may be in flight, and who waits."""

    limit: int
    in_flight: int = 0
    backlog: deque[Claimed] = field(default_factory=deque)
    # when a request to it last finished, None while it has not answered yet (monotonic)
    answered_at: float | None = None
    # when it was first handed a delivery
    since: float = field(default_factory=time.monotonic)

    @property
    def silent_from(self) -> float:
        """When (monotonic) it counts as silent if no answer comes before."""
        last = self.since if self.answered_at is None else self.answered_at
        return last + RELEASE_DELAY.total_seconds()

    def stalled(self, ceiling: int) -> bool:
        """Timing out lately, or holding its slots without a single answer for a while."""
        return self.limit < ceiling or time.monotonic() > self.silent_from

    def learn(self, response: sender.Response, ceiling: int) -> None:
        # An endpoint that times out or refuses connections holds its slots for nothing:
        # halve its share, and win it back one success at a time.
        if response.status_code is None:
            self.limit = max(MIN_ENDPOINT_LIMIT, self.limit // 2)
        elif self.limit < ceiling:
            self.limit += 1


def request_headers(claimed: Claimed, timestamp: int) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": sender.USER_AGENT,
        "X-Moncreneau-Event": claimed.event_type,
        "X-Moncreneau-Delivery": claimed.id,
        "X-Moncreneau-Attempt": str(claimed.attempt),
        "X-Moncreneau-Timestamp": str(timestamp),
        "X-Webhook-Version": claimed.payload_version,
        **signing.signature_headers(claimed.secrets, claimed.id, timestamp, claimed.body),
    }


def outcome(
    claimed: Claimed, response: sender.Response, started: datetime, settings: Settings
) -> Settlement:
    now = clock.now()
    next_at = None
    if response.ok:
        status = SUCCEEDED
    elif response.status_code == 410 or claimed.attempt >= claimed.attempt_budget:
        status = DEAD
    else:
        status = FAILED
        next_at = _next_attempt(claimed, response, now, settings)
    return Settlement(
        claimed=claimed,
        started_at=started,
        duration_ms=response.duration_ms,
        status_code=response.status_code,
        error=response.error,
        excerpt=response.excerpt,
        status=status,
        next_attempt_at=next_at,
    )


def _next_attempt(
    claimed: Claimed, response: sender.Response, now: datetime, settings: Settings
) -> datetime:
    try:
        retry_after = None
        if response.status_code in (429, 503):
            retry_after = schedule.parse_retry_after(response.retry_after, now)
        return schedule.next_attempt(now, claimed.attempt, settings.retry_schedule, retry_after)
    except Exception:
        # Whatever the answer held, the attempt is recorded: tried again late, not at once.
        log.exception("delivery %s: no next attempt could be scheduled", claimed.id)
        return now + timedelta(seconds=schedule.MAX_RETRY_AFTER)


def _observe(settlement: Settlement) -> None:
    status = settlement.status
    metrics.DELIVERY_ATTEMPTS.labels(status).inc()
    metrics.ATTEMPT_SECONDS.labels(status).observe(settlement.duration_ms / 1000)
    claimed = settlement.claimed
    log.log(
        logging.DEBUG if status == SUCCEEDED else logging.INFO,
        "delivery %s attempt %d %s: %s",
        claimed.id,
        claimed.attempt,
        status,
        settlement.status_code or settlement.error,
        extra={
            "delivery_id": claimed.id,
            "event_id": claimed.event_id,
            "webhook_id": claimed.subscription_id,
            "attempt": claimed.attempt,
            "status": settlement.status_code,
        },
    )


@dataclass(frozen=True)
class _Pause:
    """A webhook to pause for every worker: it failed PAUSE_AFTER_FAILURES times in a row."""

    subscription_id: int


_Record = Settlement | HandBack | _Pause


class Recorder:
    """Writes settlements and hand-backs in batches from one thread; retries while the
    database is away."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings
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
            settle(db, settlements, now)
            release(db, handed_back)
            self._update_health(db, settlements)
            ends = {s: pause_sending(db, s, now, PAUSE, MAX_PAUSE) for s in sorted(paused)}
            db.commit()
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


class Dispatcher:
    """Sends from one event loop thread; jobs hand it deliveries from their own threads."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        on_release: Callable[[list[Claimed], timedelta], None] | None = None,
    ) -> None:
        """`on_release`: where claims given back unsent go; by default, the recorder."""
        self._settings = settings
        self._slots = threading.BoundedSemaphore(settings.worker_concurrency)
        self._endpoints: dict[int, _Endpoint] = {}
        # limits learnt from past requests outlive the endpoint's idle moments
        self._limits: dict[int, int] = {}
        # failed answers in a row, and until when (monotonic) a failing endpoint is paused
        self._failures: dict[int, int] = {}
        self._paused_until: dict[int, float] = {}
        self._lock = threading.Lock()
        # notified whenever a place in flight or in an endpoint's line frees up
        self._room = threading.Condition(self._lock)
        # Many webhooks may share a host (a platform's tenants): keep a connection for each
        # request that can be in flight to it, not just one webhook's share.
        self._client = sender.Client(
            settings.worker_concurrency, settings.allow_private_urls, settings.allowed_networks
        )
        self.recorder = Recorder(sessions, settings)
        self._on_release = self.recorder.hand_back if on_release is None else on_release
        self._ceiling = settings.endpoint_concurrency
        # what a request needs left on its lease to finish and be recorded in time
        self._needed = timedelta(seconds=settings.delivery_timeout + 2)
        self._stalled_delay = timedelta(seconds=settings.delivery_timeout)
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        threading.Thread(target=self._loop.run_forever, name="sender", daemon=True).start()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return sum(e.in_flight for e in self._endpoints.values())

    def submit(self, items: list[Claimed]) -> None:
        """Start or line up each delivery; blocks only while the process is at capacity,
        or for a moment while the line of an endpoint that answers is full."""
        handed_back: dict[timedelta, list[Claimed]] = {}
        starting: list[Claimed] = []
        # Back in the database, an item would wait for the sweeper: a second at least.
        deadline = time.monotonic() + RELEASE_DELAY.total_seconds()
        for item in items:
            with self._room:
                place = self._line_up(item, deadline, starting)
            if place is _QUEUED:
                continue
            if isinstance(place, timedelta):
                handed_back.setdefault(place, []).append(item)
                continue
            if not self._slots.acquire(blocking=False):
                # At capacity: what is ready starts now, then this job waits for a slot.
                self._start_soon(starting)
                self._slots.acquire()
            starting.append(item)
        self._start_soon(starting)
        for delay, given_back in handed_back.items():
            self._on_release(given_back, delay)

    def _line_up(self, item: Claimed, deadline: float, starting: list[Claimed]) -> str | timedelta:
        """_START (a place in flight is taken), _QUEUED, or how long to hand it back for."""
        key = item.subscription_id
        while True:
            if self._paused(key):
                return PAUSE
            endpoint = self._endpoints.get(key)
            if endpoint is None:
                # One this process has sent to before is presumed to answer.
                known = key in self._limits
                limit = self._limits.get(key, self._ceiling)
                answered_at = time.monotonic() if known else None
                endpoint = self._endpoints[key] = _Endpoint(limit, answered_at=answered_at)
            if endpoint.in_flight < endpoint.limit:
                endpoint.in_flight += 1
                return _START
            # A struggling endpoint keeps one round waiting at most, so a queued delivery
            # never outlives its lease (two timeouts); a healthy one, a few rounds (one
            # that waits too long is still given back unsent).
            rounds = HEALTHY_ROUNDS if endpoint.limit >= self._ceiling else 1
            if len(endpoint.backlog) < endpoint.limit * rounds:
                endpoint.backlog.append(item)
                return _QUEUED
            if endpoint.stalled(self._ceiling):
                return self._stalled_delay
            # An endpoint that answers frees a place in its line soon: wait for it rather
            # than send the rest of the job back to the database; one that stays quiet
            # that long is stalled, and what does not fit behind it goes back. One that
            # has not answered yet may never: waiting on it would hold up the whole job.
            remaining = min(deadline, endpoint.silent_from) - time.monotonic()
            if remaining <= 0 or endpoint.answered_at is None:
                return RELEASE_DELAY
            # What this job started already must run, or nothing makes room.
            self._start_soon(starting)
            self._room.wait(remaining)

    def _paused(self, key: int) -> bool:
        until = self._paused_until.get(key)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._paused_until[key]
        return False

    def _count(self, key: int, response: sender.Response) -> None:
        if response.ok:
            self._failures.pop(key, None)
            return
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        if failures >= PAUSE_AFTER_FAILURES and not self._paused(key):
            # How long every worker leaves it alone is the recorder's to decide and log.
            self._paused_until[key] = time.monotonic() + PAUSE.total_seconds()
            self.recorder.pause(key)

    def _start_soon(self, items: list[Claimed]) -> None:
        """Hand what a job has lined up to the event loop, and empty its list."""
        if items:
            self._loop.call_soon_threadsafe(self._start, list(items))
            items.clear()

    def _start(self, items: list[Claimed]) -> None:
        for item in items:
            task = self._loop.create_task(self._run(item))
            # the loop keeps only weak references to its tasks
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, item: Claimed | None) -> None:
        try:
            while item is not None:
                response = None
                try:
                    if item.locked_until - clock.now() < self._needed:
                        # It waited too long behind its endpoint: another worker may take it
                        # over any moment, so give it back rather than risk two sends.
                        self._on_release([item], RELEASE_DELAY)
                    else:
                        response = await self._send(item)
                except BaseException:
                    # Its place in flight is freed whatever happened, or the endpoint would
                    # stay full for good.
                    self._done(item, None, take_next=False)
                    raise
                item = self._done(item, response, take_next=True)
        finally:
            self._slots.release()

    def _done(
        self, item: Claimed, response: sender.Response | None, take_next: bool
    ) -> Claimed | None:
        """Learn from the answer; the next delivery waiting behind the endpoint takes the
        place in flight, or the place is freed."""
        with self._lock:
            key = item.subscription_id
            endpoint = self._endpoints[key]
            if response is not None:
                endpoint.learn(response, self._ceiling)
                endpoint.answered_at = time.monotonic()
                self._count(key, response)
                self._limits[key] = endpoint.limit
            following = None
            if take_next and endpoint.backlog and endpoint.in_flight <= endpoint.limit:
                following = endpoint.backlog.popleft()
            else:
                endpoint.in_flight -= 1
                if not endpoint.in_flight:
                    del self._endpoints[key]
                    if endpoint.backlog:
                        self._on_release(list(endpoint.backlog), RELEASE_DELAY)
            self._room.notify_all()
            return following

    async def _send(self, item: Claimed) -> sender.Response:
        started = clock.now()
        try:
            headers = request_headers(item, int(time.time()))
            response = await self._client.post(
                item.url, item.body, headers, self._settings.delivery_timeout
            )
        except Exception as error:  # a bug here must not lose the attempt's bookkeeping
            log.exception("delivery %s could not be sent", item.id)
            response = sender.Response(
                None, f"internal error: {error.__class__.__name__}", None, None, 0
            )
        settlement = outcome(item, response, started, self._settings)
        self.recorder.add(settlement)
        _observe(settlement)
        return response

    def drain(self, timeout: float) -> bool:
        """Wait for what is in flight to finish and be recorded."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        idle = self.recorder.wait_idle(max(0.0, deadline - time.monotonic()))
        return idle and not self.in_flight
