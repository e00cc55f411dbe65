"""Wake-ups: workers claim due deliveries from the database, however they were queued."""

from __future__ import annotations

import re
import time
import urllib.request
from http.server import BaseHTTPRequestHandler
from typing import Any

import redis
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Engine

from moncreneau.delivery.queueing import rq_queue, wake_mark
from moncreneau.delivery.store import QUEUE_LEASE
from moncreneau.outbox.store import notify_relays
from tests.conftest import Api, new_organization
from tests.e2e.conftest import Processes
from tests.e2e.test_faults import _assert_nothing_lost, _book
from tests.receiver import Received, Receiver, answer, hang
from tests.services import free_port, wait_until


def _deliveries(engine: Engine, where: str = "TRUE", **params: Any) -> int:
    with engine.connect() as conn:
        count: int = conn.execute(
            text(f"SELECT count(*) FROM deliveries WHERE {where}"), params
        ).scalar_one()
    return count


def test_bookings_made_one_at_a_time_leave_a_handful_of_jobs_and_are_all_delivered(
    api: Api,
    department: dict[str, Any],
    receiver: Receiver,
    processes: Processes,
    engine: Engine,
    redis_url: str,
    queue_name: str,
) -> None:
    hook = api.post("/webhooks", {"url": receiver.url("each"), "events": ["*"]}).json
    processes.start("relay")
    # The API wakes the workers after each commit, the relay after each event it relays.
    _book(api, department["id"], 200)
    wait_until(lambda: _deliveries(engine) == 200, 60, "the 200 deliveries created")
    queue = rq_queue(redis_url, queue_name)
    # One wake-up is pending however many deliveries wait (its mark may expire once).
    assert 1 <= queue.count <= 3
    processes.start("worker")
    _assert_nothing_lost(api, hook, receiver, "each", 60)


def test_a_wake_up_lost_from_redis_is_recovered_by_the_sweeper(
    api: Api,
    department: dict[str, Any],
    receiver: Receiver,
    processes: Processes,
    engine: Engine,
    redis_url: str,
    queue_name: str,
) -> None:
    """The pending wake-up's job disappears while its mark stays: no one may wake workers
    until the mark expires, then the sweeper does."""
    hook = api.post("/webhooks", {"url": receiver.url("lost"), "events": ["*"]}).json
    processes.start("relay")
    _book(api, department["id"], 3)
    queue = rq_queue(redis_url, queue_name)
    wait_until(lambda: _deliveries(engine) == 3 and queue.count == 1, what="a wake-up queued")
    queue.empty()
    assert redis.Redis.from_url(redis_url).exists(wake_mark(queue_name))
    processes.start("worker")
    _assert_nothing_lost(api, hook, receiver, "lost", 2 * QUEUE_LEASE.total_seconds() + 30)


def _sent_by(port: int) -> float:
    """Successful attempts a worker reports on its metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        page = response.read().decode()
    found = re.search(
        r'^moncreneau_delivery_attempts_total\{outcome="succeeded"\} (\S+)$', page, re.M
    )
    return float(found.group(1)) if found else 0.0


def _slow(request: Received, handler: BaseHTTPRequestHandler) -> None:
    time.sleep(0.005)
    answer(200)(request, handler)


def test_two_workers_both_take_part_in_a_big_backlog(
    api: Api,
    department: dict[str, Any],
    receiver: Receiver,
    processes: Processes,
    engine: Engine,
) -> None:
    # A few milliseconds per request: the backlog outlasts a worker's first batches.
    hook = api.post("/webhooks", {"url": receiver.on("big", _slow), "events": ["*"]}).json
    _book(api, department["id"], 1)
    # 3,000 more of the same event, committed at once (booking each would time the API).
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO events (id, organization_id, type, data, object, created_at) "
                "SELECT 'evt_' || md5(random()::text || g::text), organization_id, type, "
                "data, object, created_at FROM events, generate_series(1, 3000) AS g"
            )
        )
    notify_relays(engine)
    processes.start("relay")
    wait_until(lambda: _deliveries(engine) == 3001, 60, "the backlog created")
    ports = [free_port(), free_port()]
    for port in ports:
        processes.start("worker", "--metrics-port", str(port))
    _assert_nothing_lost(api, hook, receiver, "big", 120)
    sent = [_sent_by(port) for port in ports]
    assert sum(sent) >= 3001
    assert all(s > 0 for s in sent), sent


def test_another_organizations_delivery_arrives_while_one_with_hanging_webhooks_holds_its_share(
    app: Flask,
    api: Api,
    department: dict[str, Any],
    receiver: Receiver,
    processes: Processes,
    engine: Engine,
) -> None:
    """A's 100 webhooks hang for longer than the test waits; B's one delivery gets through
    before any of A's requests has timed out."""
    for n in range(100):
        url = receiver.on(f"a{n}", hang(60))
        assert api.post("/webhooks", {"url": url, "events": ["*"]}).status_code == 201
    b = Api(app.test_client(), new_organization(app, "B")["apiKey"])
    b_department = b.post(
        "/departments", {"name": "B", "timezone": "UTC", "slotMinutes": 30, "capacity": 10}
    ).json
    b.post("/webhooks", {"url": receiver.url("b"), "events": ["*"]})
    timeout = {"MONCRENEAU_DELIVERY_TIMEOUT": "40"}
    processes.start("relay", **timeout)
    processes.start("worker", **timeout)
    _book(api, department["id"], 30)
    # A's share of the worker is full of hanging requests, the rest of its 3,000 wait.
    wait_until(lambda: len([r for r in receiver.received if r.path.startswith("/a")]) >= 100)
    _book(b, b_department["id"], 1)
    receiver.wait_for(lambda got: any(r.path == "/b" for r in got), 30)
    wait_until(lambda: _deliveries(engine, "status = 'succeeded'") == 1, 10, "B's recorded")
    # None of A's requests has ended: B did not wait for A's timeouts.
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM delivery_attempts")).scalar_one() == 1
