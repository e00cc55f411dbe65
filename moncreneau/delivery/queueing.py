"""Handing delivery ids to whoever sends them: RQ in production, a thread in embedded mode."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Protocol

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from moncreneau.config import Settings

log = logging.getLogger(__name__)

JOB = "moncreneau.delivery.jobs.deliver"


@cache
def redis_connection(url: str) -> Redis:
    """One connection pool per Redis URL and process."""
    return Redis.from_url(
        url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
    )


def chunks(ids: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


class DeliveryQueue(Protocol):
    def enqueue(self, delivery_ids: list[str]) -> None: ...

    def backlog(self) -> int:
        """Jobs waiting to be taken."""
        ...


class RedisQueue:
    """Jobs of up to `job_batch` ids each; arguments are JSON, never pickles."""

    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url
        self._batch = settings.job_batch
        self.queue = rq_queue(settings.redis_url, settings.queue_name)

    def enqueue(self, delivery_ids: list[str]) -> None:
        if not delivery_ids:
            return
        jobs = [
            Queue.prepare_data(JOB, args=(chunk,), result_ttl=0, failure_ttl=86400)
            for chunk in chunks(delivery_ids, self._batch)
        ]
        self.queue.enqueue_many(jobs)

    def backlog(self) -> int:
        return int(self.queue.count)


class InlineQueue:
    """Embedded mode: the same job, run by one background thread of this process."""

    def __init__(self, settings: Settings, deliver: Callable[[list[str]], int]) -> None:
        self._batch = settings.job_batch
        self._deliver = deliver
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="deliver")

    def enqueue(self, delivery_ids: list[str]) -> None:
        for chunk in chunks(delivery_ids, self._batch):
            self._executor.submit(self._run, chunk)

    def backlog(self) -> int:
        return self._executor._work_queue.qsize()

    def _run(self, ids: list[str]) -> None:
        try:
            self._deliver(ids)
        except Exception:
            # The deliveries stay due in the database; the sweeper queues them again.
            log.exception("delivering %d deliveries failed", len(ids))


class SweeperOnly:
    """An API without Redis queues nothing: the relay's sweeper picks deliveries up."""

    def enqueue(self, delivery_ids: list[str]) -> None:
        return None

    def backlog(self) -> int:
        return 0


def rq_queue(redis_url: str, name: str) -> Queue:
    return Queue(name, connection=redis_connection(redis_url), serializer=JSONSerializer)


def make_queue(settings: Settings) -> DeliveryQueue:
    return RedisQueue(settings) if settings.redis_url else SweeperOnly()
