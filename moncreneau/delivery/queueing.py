"""Waking whoever sends deliveries: RQ workers in production, a thread in embedded mode.

What is due is in the database; the queue only carries wake-ups, at most one pending per
queue, so a worker's cost per delivery does not depend on how deliveries were created.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Protocol

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from moncreneau.config import Settings

log = logging.getLogger(__name__)

# Jobs of delivery ids, as the previous version queued them: still run after an upgrade.
JOB = "moncreneau.delivery.jobs.deliver"
WAKE = "moncreneau.delivery.jobs.wake"
# A pending wake-up's mark outlives a lost job at most this long (seconds); the sweeper then
# wakes the workers again.
WAKE_MARK_SECONDS = 30


@cache
def redis_connection(url: str) -> Redis:
    """One connection pool per Redis URL and process."""
    return Redis.from_url(
        url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
    )


class DeliveryQueue(Protocol):
    def enqueue(self, delivery_ids: list[str]) -> None:
        """These deliveries are ready: make sure a wake-up is pending (the ids are not sent)."""
        ...

    def wake(self) -> None: ...

    def backlog(self) -> int:
        """Jobs waiting to be taken."""
        ...


def wake_mark(queue_name: str) -> str:
    return f"moncreneau:wake:{queue_name}"


class RedisQueue:
    """Wake-up jobs, one pending at most (a mark set with SET NX); arguments are JSON."""

    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url
        self.queue = rq_queue(settings.redis_url, settings.queue_name)
        self._mark = wake_mark(settings.queue_name)

    def enqueue(self, delivery_ids: list[str]) -> None:
        if delivery_ids:
            self.wake()

    def wake(self) -> None:
        # Whoever sets the mark queues the job; the job clears it when it starts, then looks
        # at the database, so whatever is committed before a failed SET NX is seen.
        if self.queue.connection.set(self._mark, 1, nx=True, ex=WAKE_MARK_SECONDS):
            job = Queue.prepare_data(WAKE, args=(self.queue.name,), result_ttl=0, failure_ttl=86400)
            self.queue.enqueue_many([job])

    def woken(self) -> None:
        """A wake-up starts: the next one asked for is queued."""
        self.queue.connection.delete(self._mark)

    def backlog(self) -> int:
        return int(self.queue.count)


class InlineQueue:
    """Embedded mode: the same wake-up, run by one background thread of this process.

    `wake` runs one wake-up; it is given the function that asks for another.
    """

    def __init__(self, settings: Settings, wake: Callable[[Callable[[], None]], int]) -> None:
        self._wake = wake
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="deliver")
        self._lock = threading.Lock()
        self._pending = False

    def enqueue(self, delivery_ids: list[str]) -> None:
        if delivery_ids:
            self.wake()

    def wake(self) -> None:
        with self._lock:
            if self._pending:
                return
            self._pending = True
        self._executor.submit(self._run)

    def backlog(self) -> int:
        return self._executor._work_queue.qsize()

    def _run(self) -> None:
        with self._lock:
            self._pending = False
        try:
            self._wake(self.wake)
        except Exception:
            # The deliveries stay due in the database; the sweeper wakes this thread again.
            log.exception("delivering due deliveries failed")


class SweeperOnly:
    """An API without Redis queues nothing: the relay's sweeper wakes the workers."""

    def enqueue(self, delivery_ids: list[str]) -> None:
        return None

    def wake(self) -> None:
        return None

    def backlog(self) -> int:
        return 0


def rq_queue(redis_url: str, name: str) -> Queue:
    return Queue(name, connection=redis_connection(redis_url), serializer=JSONSerializer)


def make_queue(settings: Settings) -> DeliveryQueue:
    return RedisQueue(settings) if settings.redis_url else SweeperOnly()
