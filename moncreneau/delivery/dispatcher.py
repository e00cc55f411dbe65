"""Many deliveries in flight per process, a cap per endpoint that it learns, and fair shares.

A job hands claimed deliveries to `Dispatcher.submit`, which returns as soon as they are
running or waiting behind their endpoint: a slow endpoint fills only its own cap, and
what does not fit behind it goes back to the database to be tried again shortly. A
destination host and an organization each hold at most their share of the process, so a
host that hangs or a tenant with many webhooks leaves room for everyone else.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session, sessionmaker

from moncreneau import clock
from moncreneau.config import Settings
from moncreneau.delivery import attempts, sender
from moncreneau.delivery.recorder import PAUSE, PAUSE_AFTER_FAILURES, Recorder
from moncreneau.delivery.store import Claimed

log = logging.getLogger(__name__)

# A failing endpoint keeps at least this many requests in flight, to notice its recovery.
MIN_ENDPOINT_LIMIT = 2
# Rounds of requests that may wait behind an endpoint that has not timed out lately.
HEALTHY_ROUNDS = 4
# A delivery handed back because its endpoint is at capacity is tried again after this; one
# whose endpoint is timing out, or has not answered for this long, after a whole timeout,
# when its requests free a slot at best.
RELEASE_DELAY = timedelta(seconds=1)
# How long a job waits for a place behind a host, organization or endpoint that has not
# answered yet (seconds, from its first request), before it hands the delivery back.
FIRST_ANSWER_WAIT = 0.2
# Where `Dispatcher._line_up` puts a delivery, when it does not hand it back.
_START, _QUEUED = "start", "queued"


@dataclass
class _Share:
    """Requests in flight to one destination host, or for one organization."""

    in_flight: int = 0
    # when it was first handed a delivery (monotonic)
    since: float = 0.0
    # when a request to it last finished, None while it has not answered yet (monotonic)
    answered_at: float | None = None

    @property
    def silent_from(self) -> float:
        """When (monotonic) it counts as silent if no answer comes before."""
        last = self.since if self.answered_at is None else self.answered_at
        return last + RELEASE_DELAY.total_seconds()


@dataclass
class _Endpoint(_Share):
    """One webhook's share of the process: how many may be in flight, and who waits."""

    limit: int = 0
    backlog: deque[Claimed] = field(default_factory=deque)

    def stalled(self, ceiling: int, now: float) -> bool:
        """Timing out lately, or holding its slots without a single answer for a while."""
        return self.limit < ceiling or now > self.silent_from

    def line_full(self, ceiling: int) -> bool:
        """No room left to wait behind it. A struggling endpoint keeps one round waiting at
        most, so a queued delivery never outlives its lease (two timeouts); a healthy one, a
        few rounds (one that waits too long is still given back unsent)."""
        rounds = HEALTHY_ROUNDS if self.limit >= ceiling else 1
        return len(self.backlog) >= self.limit * rounds

    def learn(self, response: sender.Response, ceiling: int) -> None:
        # An endpoint that times out or refuses connections holds its slots for nothing:
        # halve its share, and win it back one success at a time.
        if response.status_code is None:
            self.limit = max(MIN_ENDPOINT_LIMIT, self.limit // 2)
        elif self.limit < ceiling:
            self.limit += 1


class Dispatcher:
    """Sends from one event loop thread; jobs hand it deliveries from their own threads."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        on_release: Callable[[list[Claimed], timedelta], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        enqueue: Callable[[list[str]], None] | None = None,
    ) -> None:
        """`on_release`: where claims given back unsent go; by default, the recorder.
        `enqueue`: the recorder's, for deliveries of ordered webhooks whose turn came.

        `monotonic` tells how long endpoints have been silent and paused (it never runs
        behind real time: waits for room are real).
        """
        self._settings = settings
        self._monotonic = monotonic
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
        self.recorder = Recorder(sessions, settings, enqueue)
        self._on_release = self.recorder.hand_back if on_release is None else on_release
        self._ceiling = settings.endpoint_concurrency
        # By default an organization alone never fills a host's share: its hanging
        # endpoints leave room for the other tenants of the host, and the host for others.
        # Neither is smaller than what one endpoint may hold, whose cap would mean nothing.
        slots = settings.worker_concurrency
        floor = min(slots, settings.endpoint_concurrency)
        self._host_limit = settings.host_concurrency or max(floor, slots * 3 // 4)
        self._organization_limit = settings.organization_concurrency or max(floor, slots // 2)
        self._hosts: dict[str, _Share] = {}
        self._organizations: dict[int, _Share] = {}
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

    def refusing(self) -> tuple[list[int], list[int]]:
        """Webhooks and organizations whose deliveries this process would hand back unsent
        for a while if given them now (paused, or stalled with every place taken): a
        wake-up leaves those to other workers, or to later, instead of claiming them only
        to write them back."""
        with self._lock:
            now = self._monotonic()
            webhooks = [key for key in list(self._paused_until) if self._paused(key)]
            for key, endpoint in self._endpoints.items():
                if (
                    endpoint.in_flight >= endpoint.limit
                    and endpoint.line_full(self._ceiling)
                    and endpoint.stalled(self._ceiling, now)
                ):
                    webhooks.append(key)
            organizations = [
                key
                for key, share in self._organizations.items()
                if share.in_flight >= self._organization_limit and now > share.silent_from
            ]
        return webhooks, organizations

    def submit(self, items: list[Claimed]) -> None:
        """Start or line up each delivery; blocks only while the process is at capacity,
        or for a moment while the line of an endpoint that answers is full."""
        handed_back: dict[timedelta, list[Claimed]] = {}
        starting: list[Claimed] = []
        # Back in the database, an item would wait for the sweeper: a second at least.
        deadline = self._monotonic() + RELEASE_DELAY.total_seconds()
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
                now = self._monotonic()
                endpoint = self._endpoints[key] = _Endpoint(
                    limit=limit, since=now, answered_at=now if known else None
                )
            full: _Share = endpoint
            if endpoint.in_flight < endpoint.limit:
                share = self._full_share(item)
                if share is None:
                    endpoint.in_flight += 1
                    self._take_shares(item)
                    return _START
                # Its host or organization holds its whole share: waiting for that, the
                # endpoint holds nothing yet.
                if not endpoint.in_flight and not endpoint.backlog:
                    del self._endpoints[key]
                if self._monotonic() > share.silent_from:
                    return self._stalled_delay
                full = share
            else:
                if not endpoint.line_full(self._ceiling):
                    endpoint.backlog.append(item)
                    return _QUEUED
                if endpoint.stalled(self._ceiling, self._monotonic()):
                    return self._stalled_delay
            # An endpoint (or host, or organization) that answers frees a place soon: wait
            # for it rather than send the rest of the job back to the database; one that
            # stays quiet that long is stalled, and what does not fit goes back.
            until = min(deadline, full.silent_from)
            if full.answered_at is None:
                # It may never answer, and waiting on it would hold up the whole job; but its
                # first requests may just be out: a fast host answers them in a moment, and
                # what is handed back now would wait a whole RELEASE_DELAY (a fan-out's first
                # burst: twice as long as the rest of it). One that hangs costs this once.
                until = min(until, full.since + FIRST_ANSWER_WAIT)
            remaining = until - self._monotonic()
            if remaining <= 0:
                return RELEASE_DELAY
            # What this job started already must run, or nothing makes room.
            self._start_soon(starting)
            self._room.wait(remaining)

    def _shares(self, item: Claimed) -> tuple[tuple[dict[Any, _Share], Any, int], ...]:
        """Each share `item` counts against: (shares of its kind, its key, the limit)."""
        return (
            (self._hosts, urlsplit(item.url).hostname or "", self._host_limit),
            (self._organizations, item.organization_id, self._organization_limit),
        )

    def _full_share(self, item: Claimed) -> _Share | None:
        """The share of its host or organization that `item` finds full, if any."""
        for shares, key, limit in self._shares(item):
            share = shares.get(key)
            if share is not None and share.in_flight >= limit:
                return share
        return None

    def _take_shares(self, item: Claimed) -> None:
        for shares, key, _ in self._shares(item):
            share = shares.get(key)
            if share is None:
                share = shares[key] = _Share(since=self._monotonic())
            share.in_flight += 1

    def _give_shares(self, item: Claimed, answered: bool) -> None:
        for shares, key, _ in self._shares(item):
            share = shares[key]
            share.in_flight -= 1
            if answered:
                share.answered_at = self._monotonic()
            if not share.in_flight:
                del shares[key]

    def _paused(self, key: int) -> bool:
        until = self._paused_until.get(key)
        if until is None:
            return False
        if self._monotonic() < until:
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
            self._paused_until[key] = self._monotonic() + PAUSE.total_seconds()
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
                endpoint.answered_at = self._monotonic()
                self._count(key, response)
                self._limits[key] = endpoint.limit
            following = None
            if take_next and endpoint.backlog and endpoint.in_flight <= endpoint.limit:
                # It takes over the place in flight, and its host's and organization's.
                following = endpoint.backlog.popleft()
                self._take_shares(following)
            # a timeout is no answer: a host that hangs stays silent
            self._give_shares(
                item, answered=response is not None and response.status_code is not None
            )
            if following is None:
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
            headers = attempts.request_headers(item, int(time.time()))
            response = await self._client.post(
                item.url, item.body, headers, self._settings.delivery_timeout
            )
        except Exception as error:  # a bug here must not lose the attempt's bookkeeping
            log.exception("delivery %s could not be sent", item.id)
            response = sender.Response(
                None, f"internal error: {error.__class__.__name__}", None, None, 0
            )
        settlement = attempts.outcome(item, response, started, self._settings)
        self.recorder.add(settlement)
        attempts.observe(settlement)
        return response

    def drain(self, timeout: float) -> bool:
        """Wait for what is in flight to finish and be recorded."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        idle = self.recorder.wait_idle(max(0.0, deadline - time.monotonic()))
        return idle and not self.in_flight
