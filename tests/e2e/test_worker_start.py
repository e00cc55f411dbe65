"""A worker starts and listens even while its database cannot be reached."""

from __future__ import annotations

import redis

from tests.e2e.conftest import Processes
from tests.services import wait_until

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/test"


def test_a_worker_started_while_the_database_is_unreachable_listens_and_says_so(
    processes: Processes, redis_url: str, queue_name: str
) -> None:
    worker = processes.start("worker", DATABASE_URL=UNREACHABLE)
    client = redis.Redis.from_url(redis_url)
    wait_until(lambda: client.scard(f"rq:workers:{queue_name}") >= 1, 30, "the worker listening")
    assert worker.poll() is None
    assert "database unavailable at start" in processes.log_of(worker)
