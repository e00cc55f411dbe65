"""Faults in the delivery pipeline: killed processes, a wiped Redis and failing receivers."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any

import redis
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from moncreneau.delivery.queueing import rq_queue
from moncreneau.delivery.store import QUEUE_LEASE
from tests import services
from tests.conftest import Api
from tests.e2e.conftest import Processes
from tests.receiver import Behaviour, Received, Receiver, answer, sequence, start_receiver
from tests.services import free_port, wait_until
from tests.verify import assert_verified

DELIVERY = "X-Moncreneau-Delivery"
ATTEMPT = "X-Moncreneau-Attempt"
FIRST_SLOT = datetime(2026, 3, 2, 8, 0)
PLUS_ONE = timezone(timedelta(hours=1))
# The test that empties Redis does it in a database no other test uses.
LOSSY_REDIS_DB = 11


def _book(
    api: Api, department_id: int, count: int, start: int = 0, pause: float = 0.0
) -> list[int]:
    """Book `count` appointments on consecutive free slots, numbered from `start`."""
    booked = []
    for number in range(start, start + count):
        when = FIRST_SLOT + timedelta(minutes=30 * number)
        made = api.post(
            "/appointments",
            {"departmentId": department_id, "dateTime": when.isoformat(), "name": f"P{number}"},
        )
        assert made.status_code == 201, made.json
        booked.append(made.json["id"])
        time.sleep(pause)
    return booked


def _all_pages(api: Api, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        response = api.get(path, query_string=query)
        assert response.status_code == 200, response.json
        items += response.json["data"]
        cursor = response.json["nextCursor"]
        if not cursor:
            return items


def _deliveries(api: Api, hook: dict[str, Any]) -> list[dict[str, Any]]:
    return _all_pages(api, f"/webhooks/{hook['id']}/deliveries")


def _delivery(api: Api, hook: dict[str, Any], delivery_id: str) -> dict[str, Any]:
    response = api.get(f"/webhooks/{hook['id']}/deliveries/{delivery_id}")
    assert response.status_code == 200, response.json
    detail: dict[str, Any] = response.json
    return detail


def _committed_events(api: Api, hook: dict[str, Any]) -> set[str]:
    """Ids of the events the API committed that the subscription asks for."""
    wanted = set(hook["events"])
    return {e["id"] for e in _all_pages(api, "/events") if "*" in wanted or e["type"] in wanted}


def _deliveries_per_event(engine: Engine, hook: dict[str, Any]) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT event_id, count(*) FROM deliveries"
                " WHERE subscription_id = :hook GROUP BY event_id"
            ),
            {"hook": hook["id"]},
        ).all()
    return {event_id: count for event_id, count in rows}


def _claimed(engine: Engine, hook: dict[str, Any]) -> int:
    """How many of the subscription's deliveries a worker holds under a lease."""
    with engine.connect() as conn:
        held: int = conn.execute(
            text(
                "SELECT count(*) FROM deliveries"
                " WHERE subscription_id = :hook AND locked_until IS NOT NULL"
            ),
            {"hook": hook["id"]},
        ).scalar_one()
    return held


def _waiting_on_lock(engine: Engine, statement: str) -> bool:
    """Whether a backend of this database waits on a lock while running `statement...`."""
    with engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query ILIKE :statement"
            ),
            {"statement": statement + "%"},
        ).scalar_one()
    return waiting > 0


def _instant(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _assert_nothing_lost(
    api: Api, hook: dict[str, Any], receiver: Receiver, path: str, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Every committed event the subscription wants reached `path`, under one delivery id
    with one byte-identical signed body, and the log records each delivery as succeeded."""
    committed = _committed_events(api, hook)
    assert committed
    receiver.wait_for(
        lambda got: {r.json["id"] for r in got if r.path == f"/{path}"} >= committed, timeout
    )
    log: list[dict[str, Any]] = wait_until(
        lambda: (
            (rows := _deliveries(api, hook))
            and all(d["status"] == "succeeded" for d in rows)
            and rows
        ),
        timeout,
        what="every delivery recorded as succeeded",
    )
    assert sorted(d["eventId"] for d in log) == sorted(committed)
    requests = receiver.at(path)
    assert {r.json["id"] for r in requests} == committed
    assert {r.header(DELIVERY) for r in requests} == {d["id"] for d in log}
    bodies: dict[str, set[bytes]] = defaultdict(set)
    delivery_ids: dict[str, set[str]] = defaultdict(set)
    for request in requests:
        assert_verified(request, hook["secret"])
        bodies[request.header(DELIVERY)].add(request.body)
        delivery_ids[request.json["id"]].add(request.header(DELIVERY))
    assert all(len(found) == 1 for found in bodies.values()), "a resent body changed"
    assert all(len(found) == 1 for found in delivery_ids.values()), "an event got two ids"
    return log


def _slow_then_held(answered: int, release: threading.Event, held: list[Received]) -> Behaviour:
    """The first `answered` requests take 0.3 s each; later ones wait for `release` first."""
    seen = {"n": 0}
    lock = threading.Lock()

    def behave(request: Received, handler: BaseHTTPRequestHandler) -> None:
        with lock:
            seen["n"] += 1
            number = seen["n"]
            hold = number > answered and not release.is_set()
            if hold:
                held.append(request)
        if number <= answered:
            time.sleep(0.3)
        elif hold:
            release.wait(60)
        answer(200)(request, handler)

    return behave


def test_a_worker_killed_mid_batch_loses_nothing_and_resends_what_was_cut_off_unchanged(
    api: Api,
    department: dict[str, Any],
    receiver: Receiver,
    processes: Processes,
    engine: Engine,
) -> None:
    """The worker is SIGKILLed mid-batch: a crash at any moment loses nothing committed."""
    release = threading.Event()
    held: list[Received] = []
    url = receiver.on("slow", _slow_then_held(9, release, held))
    hook = api.post("/webhooks", {"url": url, "events": ["appointment.created"]}).json
    processes.start("relay")
    _book(api, department["id"], 30)
    wait_until(lambda: len(_deliveries_per_event(engine, hook)) == 30, what="30 deliveries")
    # Three requests at a time: nine are answered slowly, then three are held open, so the
    # worker is killed with some deliveries answered, some in flight and most not yet sent.
    worker = processes.start("worker", MONCRENEAU_WORKER_CONCURRENCY="3")
    receiver.wait_for(lambda got: len(got) >= 12)
    processes.kill(worker)
    cut_off = list(held)
    assert cut_off
    assert len(receiver.at("slow")) < 30
    release.set()

    processes.start("worker")

    _assert_nothing_lost(api, hook, receiver, "slow")
    received = receiver.at("slow")
    for first in cut_off:
        again = [r for r in received if r.header(DELIVERY) == first.header(DELIVERY)]
        assert len(again) >= 2, f"{first.header(DELIVERY)} was not sent again"
        assert all(r.body == first.body for r in again)
        attempts = [int(r.header(ATTEMPT)) for r in again]
        assert attempts == sorted(set(attempts))
        assert attempts[0] == 1


def test_a_relay_killed_while_events_are_appended_creates_every_delivery_exactly_once(
    app: Flask,
    api: Api,
    department: dict[str, Any],
    receiver: Receiver,
    processes: Processes,
    engine: Engine,
) -> None:
    """The relay is SIGKILLed while events are appended, and once inside its transaction:
    a crash at any moment loses nothing committed, and new relays create each delivery once."""
    hook = api.post("/webhooks", {"url": receiver.url("relayed"), "events": ["*"]}).json
    processes.start("worker")
    relay = processes.start("relay")
    booker = Api(app.test_client(), api.key)

    def created() -> int:
        return sum(_deliveries_per_event(engine, hook).values())

    stop_booking = threading.Event()

    def book_until_stopped() -> int:
        booked = 0
        while not stop_booking.is_set():
            _book(booker, department["id"], 1, start=booked, pause=0.05)
            booked += 1
        return booked

    with ThreadPoolExecutor(1) as pool:
        booking = pool.submit(book_until_stopped)
        for _ in range(3):
            before = created()
            wait_until(
                lambda: booking.done() or created() > before,  # noqa: B023
                what="the relay creating deliveries",
            )
            processes.kill(relay)
            relay = processes.start("relay")
        stop_booking.set()
        booked = booking.result()
    processes.kill(relay)

    # Killed inside its transaction: it has read the events and locked its position, and its
    # INSERT of deliveries waits on a lock held here. The relay is started once the lock is
    # held, so that relaying is the first thing it does: a relay already running could be
    # caught first in its sweep's UPDATE of deliveries still open, which waits on the same
    # lock (its SELECT ... FOR UPDATE goes through SHARE mode, its UPDATE does not).
    blocker = engine.connect()
    try:
        blocker.execute(text("LOCK TABLE deliveries IN SHARE MODE"))
        _book(api, department["id"], 5, start=booked)
        relay = processes.start("relay")
        wait_until(
            lambda: _waiting_on_lock(engine, "INSERT INTO deliveries"),
            what="the relay waiting inside its transaction",
        )
        processes.kill(relay)
    finally:
        blocker.rollback()
        blocker.close()

    # Two relays side by side: any number may run at once.
    processes.start("relay")
    processes.start("relay")

    _assert_nothing_lost(api, hook, receiver, "relayed")
    committed = _committed_events(api, hook)
    assert len(committed) == booked + 5
    assert _deliveries_per_event(engine, hook) == dict.fromkeys(committed, 1)


def _backends_waiting_on_lock(engine: Engine, statement: str) -> list[int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query ILIKE :statement"
            ),
            {"statement": statement + "%"},
        )
        return [pid for (pid,) in rows]


def _backend_alive(engine: Engine, pid: int) -> bool:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid})
        return found.first() is not None


def test_a_relay_killed_inside_a_lock_wait_frees_its_locks_while_that_wait_would_go_on(
    api: Api,
    department: dict[str, Any],
    receiver: Receiver,
    processes: Processes,
    engine: Engine,
) -> None:
    """A backend notices a dead client only when it next talks to it, and one waiting on a
    lock does not: it would keep the dead relay's lock on its position, and every relay
    started after it would wait behind it, for as long as the lock it waits on is held."""
    hook = api.post("/webhooks", {"url": receiver.url("orphan"), "events": ["*"]}).json
    blocker = engine.connect()
    try:
        blocker.execute(text("LOCK TABLE deliveries IN SHARE MODE"))
        relay = processes.start("relay")
        _book(api, department["id"], 2)
        [orphan] = wait_until(
            lambda: _backends_waiting_on_lock(engine, "INSERT INTO deliveries"),
            what="the relay waiting inside its transaction",
        )
        processes.kill(relay)
        # The lock it waited on is still held: its backend ends all the same, and with it
        # its hold on the relay's position.
        wait_until(
            lambda: not _backend_alive(engine, orphan), what="the dead relay's backend ending"
        )
        with engine.connect() as conn:
            conn.execute(text("SELECT position FROM relay_state FOR UPDATE NOWAIT")).all()
            conn.rollback()
    finally:
        blocker.rollback()
        blocker.close()
    processes.start("relay")
    processes.start("worker")
    _assert_nothing_lost(api, hook, receiver, "orphan")


def test_deliveries_queued_in_a_redis_that_loses_everything_are_delivered_all_the_same(
    api: Api,
    department: dict[str, Any],
    receiver: Receiver,
    processes: Processes,
    queue_name: str,
) -> None:
    """Redis is emptied while every delivery waits in its queue and no worker runs."""
    # A Redis database of this test's own, so that emptying it touches no other test.
    lossy = services.redis_database(LOSSY_REDIS_DB)
    hook = api.post("/webhooks", {"url": receiver.url("wiped"), "events": ["*"]}).json
    processes.start("relay", REDIS_URL=lossy)
    _book(api, department["id"], 5)
    queue = rq_queue(lossy, queue_name)
    wait_until(
        lambda: len(_deliveries(api, hook)) == 5 and queue.count >= 1,
        what="the five deliveries created and a wake-up queued in Redis",
    )
    # MonCréneau keeps everything it has in Redis in the one database REDIS_URL names:
    # emptying it is all of Redis lost, without touching other users of this server.
    redis.Redis.from_url(lossy).flushdb()
    assert queue.count == 0

    processes.start("worker", REDIS_URL=lossy)

    # Nothing is left to wake the worker (the pending wake-up's mark went too): the relay's
    # sweeper wakes it from the database once their queue lease has run out.
    _assert_nothing_lost(api, hook, receiver, "wiped", QUEUE_LEASE.total_seconds() + 15)


def test_a_receiver_that_is_down_gets_the_delivery_once_it_comes_up(
    api: Api, department: dict[str, Any], processes: Processes
) -> None:
    """Nothing listens on the endpoint's port at first; attempts fail with an error."""
    port = free_port()
    hook = api.post(
        "/webhooks",
        {"url": f"http://127.0.0.1:{port}/late", "events": ["appointment.created"]},
    ).json
    # Eleven attempts a second apart (rather than the suite's 0, 1, 2 s): the receiver comes
    # up long before they run out.
    retries = {"MONCRENEAU_RETRY_SCHEDULE": ",".join(["1"] * 10)}
    processes.start("relay", **retries)
    processes.start("worker", **retries)
    _book(api, department["id"], 1)

    [delivery] = wait_until(lambda: _deliveries(api, hook), what="the delivery created")
    down = wait_until(
        lambda: (d := _delivery(api, hook, delivery["id"])) and len(d["attempts"]) >= 2 and d,
        what="two failed attempts",
    )
    assert down["status"] == "failed"
    for attempt in down["attempts"]:
        assert attempt["statusCode"] is None
        assert attempt["error"]

    late = start_receiver(port)
    try:
        _assert_nothing_lost(api, hook, late, "late")
        [request] = late.at("late")
    finally:
        late.server.shutdown()
        late.server.server_close()
    number = int(request.header(ATTEMPT))
    assert number > len(down["attempts"])
    detail = _delivery(api, hook, delivery["id"])
    assert detail["status"] == "succeeded"
    *failed, succeeded = detail["attempts"]
    assert failed
    assert all(a["statusCode"] is None and a["error"] for a in failed)
    assert (succeeded["number"], succeeded["statusCode"]) == (number, 200)


def test_a_receiver_failing_twice_gets_the_same_signed_delivery_three_times(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    url = receiver.on("flaky", sequence(answer(500), answer(500), answer(200)))
    hook = api.post("/webhooks", {"url": url, "events": ["appointment.created"]}).json
    processes.start("relay")
    processes.start("worker")
    _book(api, department["id"], 1)

    [delivery] = _assert_nothing_lost(api, hook, receiver, "flaky")

    requests = receiver.at("flaky")
    assert [r.header(ATTEMPT) for r in requests] == ["1", "2", "3"]
    assert {r.header(DELIVERY) for r in requests} == {delivery["id"]}
    assert len({r.body for r in requests}) == 1
    detail = _delivery(api, hook, delivery["id"])
    assert detail["status"] == "succeeded"
    assert [(a["number"], a["statusCode"]) for a in detail["attempts"]] == [
        (1, 500),
        (2, 500),
        (3, 200),
    ]


def test_a_worker_killed_after_a_2xx_but_before_recording_it_sends_the_delivery_again(
    api: Api,
    department: dict[str, Any],
    receiver: Receiver,
    processes: Processes,
    engine: Engine,
) -> None:
    """The worker is SIGKILLed between the receiver's 200 and the attempt's record (held up
    by a lock on delivery_attempts): a crash at any moment loses nothing committed."""
    blockers: list[Connection] = []
    answered = threading.Event()

    def lock_then_answer(request: Received, handler: BaseHTTPRequestHandler) -> None:
        blocker = engine.connect()
        blockers.append(blocker)
        blocker.execute(text("LOCK TABLE delivery_attempts IN ACCESS EXCLUSIVE MODE"))
        answer(200)(request, handler)
        answered.set()

    url = receiver.on("locked", sequence(lock_then_answer, answer(200)))
    hook = api.post("/webhooks", {"url": url, "events": ["appointment.created"]}).json
    processes.start("relay")
    worker = processes.start("worker")
    _book(api, department["id"], 1)

    try:
        wait_until(answered.is_set, what="the receiver answering 200")
        wait_until(
            lambda: _waiting_on_lock(engine, "INSERT INTO delivery_attempts"),
            what="the worker's recorder waiting on the lock",
        )
        processes.kill(worker)
    finally:
        for blocker in blockers:
            blocker.rollback()
            blocker.close()

    processes.start("worker")

    [delivery] = _assert_nothing_lost(api, hook, receiver, "locked")
    first, again = receiver.at("locked")
    assert again.header(DELIVERY) == first.header(DELIVERY) == delivery["id"]
    assert again.body == first.body
    assert (first.header(ATTEMPT), again.header(ATTEMPT)) == ("1", "2")
    detail = _delivery(api, hook, delivery["id"])
    assert detail["status"] == "succeeded"
    assert (detail["attempts"][-1]["number"], detail["attempts"][-1]["statusCode"]) == (2, 200)


def test_a_dead_delivery_is_sent_again_by_retry_and_by_a_replay_of_its_window_only(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    url = receiver.on("dead", answer(500))
    hook = api.post("/webhooks", {"url": url, "events": ["appointment.created"]}).json
    processes.start("relay")
    processes.start("worker")
    _book(api, department["id"], 2)
    first = wait_until(
        lambda: len(rows := _deliveries(api, hook)) == 2 and rows, what="the first two deliveries"
    )
    early = {d["id"] for d in first}
    # Times in the API are whole seconds: the window starts on the second after the first
    # two deliveries were created, and the next two are booked once it has begun.
    boundary = max(_instant(d["createdAt"]) for d in first) + timedelta(seconds=1)
    wait_until(lambda: datetime.now(UTC) >= boundary, what="the window's start")
    _book(api, department["id"], 2, start=2)
    log = wait_until(
        lambda: (
            len(rows := _deliveries(api, hook)) == 4
            and all(d["status"] == "dead" for d in rows)
            and rows
        ),
        what="four dead deliveries",
    )
    late = {d["id"] for d in log} - early
    for delivery in log:
        attempts = _delivery(api, hook, delivery["id"])["attempts"]
        assert [(a["number"], a["statusCode"]) for a in attempts] == [
            (n, 500) for n in (1, 2, 3, 4)
        ]
    receiver.on("dead", answer(200))

    # One delivery by hand: a fifth attempt, the same id and body.
    retried_id, left_dead = sorted(early)
    retried = api.post(f"/webhooks/{hook['id']}/deliveries/{retried_id}/retry")
    assert retried.status_code == 202, retried.json
    detail = wait_until(
        lambda: (d := _delivery(api, hook, retried_id))["status"] == "succeeded" and d,
        what="the retried delivery succeeding",
    )
    assert [(a["number"], a["statusCode"]) for a in detail["attempts"]] == [
        (1, 500),
        (2, 500),
        (3, 500),
        (4, 500),
        (5, 200),
    ]
    sent = [r for r in receiver.at("dead") if r.header(DELIVERY) == retried_id]
    assert [r.header(ATTEMPT) for r in sent] == ["1", "2", "3", "4", "5"]
    assert len({r.body for r in sent}) == 1

    # Bulk: only what was created within the window.
    window = {
        "from": boundary.astimezone(PLUS_ONE).isoformat(),
        "to": (datetime.now(UTC) + timedelta(minutes=1)).astimezone(PLUS_ONE).isoformat(),
    }
    replayed = api.post(f"/webhooks/{hook['id']}/replay", window)
    assert replayed.status_code == 202, replayed.json
    assert replayed.json["count"] == 2
    assert set(replayed.json["deliveryIds"]) == late
    assert _delivery(api, hook, left_dead)["status"] == "dead"
    for delivery_id in late:
        detail = wait_until(
            lambda: (d := _delivery(api, hook, delivery_id))["status"] == "succeeded" and d,  # noqa: B023
            what="a replayed delivery succeeding",
        )
        assert [a["statusCode"] for a in detail["attempts"]] == [500, 500, 500, 500, 200]
    outside = _delivery(api, hook, left_dead)
    assert outside["status"] == "dead"
    assert len(outside["attempts"]) == 4
    assert len([r for r in receiver.at("dead") if r.header(DELIVERY) == left_dead]) == 4

    # The rest of the history: nothing stays undelivered.
    everything = {**window, "from": (boundary - timedelta(hours=1)).isoformat()}
    replayed = api.post(f"/webhooks/{hook['id']}/replay", everything)
    assert replayed.status_code == 202, replayed.json
    assert replayed.json["deliveryIds"] == [left_dead]
    _assert_nothing_lost(api, hook, receiver, "dead")


def test_a_replay_window_starting_within_a_second_includes_what_was_created_after_it(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    url = receiver.on("refused", answer(500))
    hook = api.post("/webhooks", {"url": url, "events": ["appointment.created"]}).json
    # A minute before the second attempt: a delivery stays `failed` meanwhile.
    retries = {"MONCRENEAU_RETRY_SCHEDULE": "60"}
    processes.start("relay", **retries)
    processes.start("worker", **retries)

    def failed() -> list[dict[str, Any]]:
        return [d for d in _deliveries(api, hook) if d["status"] == "failed"]

    _book(api, department["id"], 1)
    [before] = wait_until(failed, what="a first delivery failed once: the pipeline is up")
    # The window starts a little after the beginning of a second; the next booking follows.
    wait_until(lambda: 0.05 <= datetime.now(UTC).microsecond / 1e6 < 0.3, what="a second begun")
    start = datetime.now(UTC)
    _book(api, department["id"], 1, start=1)
    [after] = wait_until(
        lambda: [d for d in failed() if d["id"] != before["id"]], what="a second delivery failed"
    )

    window = {
        "from": start.astimezone(PLUS_ONE).isoformat(),
        "to": (start + timedelta(minutes=1)).astimezone(PLUS_ONE).isoformat(),
    }
    replayed = api.post(f"/webhooks/{hook['id']}/replay", window)

    assert replayed.status_code == 202, replayed.json
    assert replayed.json["deliveryIds"] == [after["id"]], (
        f"created after {window['from']} (createdAt {after['createdAt']}), not replayed"
    )
    receiver.on("refused", answer(200))
    everything = {**window, "from": (start - timedelta(hours=1)).isoformat()}
    assert api.post(f"/webhooks/{hook['id']}/replay", everything).status_code == 202
    _assert_nothing_lost(api, hook, receiver, "refused")


def test_a_delivery_claimed_by_a_worker_killed_before_sending_it_is_sent_by_the_next_one(
    api: Api,
    department: dict[str, Any],
    receiver: Receiver,
    processes: Processes,
    engine: Engine,
) -> None:
    """The worker is SIGKILLed holding a delivery it claimed but never sent: a crash at any
    moment loses nothing committed, and the attempt number sent agrees with the log."""
    release = threading.Event()
    held: list[Received] = []
    url = receiver.on("claimed", _slow_then_held(0, release, held))
    hook = api.post("/webhooks", {"url": url, "events": ["appointment.created"]}).json
    processes.start("relay")
    _book(api, department["id"], 2)
    wait_until(lambda: len(_deliveries_per_event(engine, hook)) == 2, what="two deliveries")
    # One request at a time: the first is held open, the second waits claimed for the
    # process's one place in flight. The host's and the organization's shares default to
    # that one place too, and a delivery that finds its host's share full and silent is
    # handed back to the database instead: room for two in each keeps the second claimed.
    # A timeout of its own, so that the held request is still open when the worker is
    # killed however slow the machine (the suite's 2 s would free the place for the second).
    worker = processes.start(
        "worker",
        MONCRENEAU_WORKER_CONCURRENCY="1",
        MONCRENEAU_HOST_CONCURRENCY="2",
        MONCRENEAU_ORGANIZATION_CONCURRENCY="2",
        MONCRENEAU_DELIVERY_TIMEOUT="10",
    )
    receiver.wait_for(lambda got: len(got) == 1)
    wait_until(lambda: _claimed(engine, hook) == 2, what="both deliveries claimed")
    processes.kill(worker)
    [sent] = held
    release.set()

    processes.start("worker")

    # The killed worker's claims hold for 2 x 10 + 5 s before the next one may send.
    log = _assert_nothing_lost(api, hook, receiver, "claimed", 60.0)
    [never_sent] = [d["id"] for d in log if d["id"] != sent.header(DELIVERY)]
    [first_try] = [r for r in receiver.at("claimed") if r.header(DELIVERY) == never_sent]
    detail = _delivery(api, hook, never_sent)
    # The claim counted a try (so that a delivery that keeps crashing its worker still runs
    # out of attempts): the header may say 2, and the log says the same.
    assert [a["number"] for a in detail["attempts"]] == [int(first_try.header(ATTEMPT))]
    assert detail["attemptCount"] == int(first_try.header(ATTEMPT))
