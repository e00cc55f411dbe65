"""Misbehaving receivers fail their own deliveries only, through real relay and worker processes."""

from __future__ import annotations

import itertools
import socket
import time
from datetime import datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.conftest import Api
from tests.e2e.conftest import DELIVERY_TIMEOUT, Processes
from tests.receiver import Behaviour, Received, Receiver, answer, drip, hang, sequence, stream
from tests.services import wait_until
from tests.verify import assert_verified

# Far longer than the delivery timeout: only the worker's deadline can end these requests.
HANG_SECONDS = 30.0
# How long past its deadline an attempt may take to be cut and recorded (liveness, not speed).
GRACE = 3.0
# One retry, right away: a delivery is dead after its second attempt.
ONE_RETRY = {"MONCRENEAU_RETRY_SCHEDULE": "0"}
DRIP_EVERY = 0.5

_slots = itertools.count()


def _subscribe(api: Api, url: str, events: list[str] | None = None) -> dict[str, Any]:
    created = api.post("/webhooks", {"url": url, "events": events or ["*"]})
    assert created.status_code == 201, created.json
    hook: dict[str, Any] = created.json
    return hook


def _book(api: Api, department_id: int, count: int = 1) -> list[int]:
    """`count` new appointments, each on a free slot: one `appointment.created` each."""
    ids = []
    for _ in range(count):
        when = datetime(2026, 3, 2, 8) + timedelta(minutes=30 * next(_slots))
        made = api.post(
            "/appointments",
            {"departmentId": department_id, "dateTime": when.isoformat(), "name": "Test"},
        )
        assert made.status_code == 201, made.json
        ids.append(made.json["id"])
    return ids


def _webhook(api: Api, hook_id: int) -> dict[str, Any]:
    found: dict[str, Any] = api.get(f"/webhooks/{hook_id}").json
    return found


def _deliveries(api: Api, hook_id: int) -> list[dict[str, Any]]:
    """Each delivery of a webhook with its attempts, oldest first."""
    listed = api.get(f"/webhooks/{hook_id}/deliveries", query_string={"limit": 200}).json
    return [
        api.get(f"/webhooks/{hook_id}/deliveries/{d['id']}").json for d in reversed(listed["data"])
    ]


def _settled(api: Api, hook_id: int, count: int, statuses: set[str]) -> list[dict[str, Any]]:
    """Wait for `count` deliveries of the webhook, each in one of `statuses`."""

    def check() -> list[dict[str, Any]] | None:
        found = _deliveries(api, hook_id)
        done = len(found) >= count and all(d["status"] in statuses for d in found)
        return found if done else None

    settled: list[dict[str, Any]] = wait_until(
        check, timeout=30, what=f"{count} deliveries of webhook {hook_id} in {statuses}"
    )
    return settled


def _first_attempts(api: Api, hook_id: int, count: int) -> list[dict[str, Any]]:
    """Wait until `count` deliveries of the webhook have their first attempt recorded."""

    def check() -> list[dict[str, Any]] | None:
        found = _deliveries(api, hook_id)
        firsts = [d["attempts"][0] for d in found if d["attempts"]]
        return firsts if len(firsts) >= count else None

    firsts: list[dict[str, Any]] = wait_until(
        check, timeout=30, what=f"first attempts of {count} deliveries of webhook {hook_id}"
    )
    return firsts


def _at(received: list[Received], path: str) -> list[Received]:
    return [r for r in received if r.path == "/" + path]


def _events(api: Api, **filters: str) -> list[dict[str, Any]]:
    page = api.get("/events", query_string={"limit": 200, **filters})
    assert page.status_code == 200, page.json
    events: list[dict[str, Any]] = page.json["data"]
    return events


def _assert_healthy(
    api: Api, receiver: Receiver, path: str, hook: dict[str, Any], count: int
) -> list[Received]:
    """Every one of `count` deliveries reached the healthy receiver once, signed, first try."""
    got = _at(receiver.wait_for(lambda r: len(_at(r, path)) >= count, timeout=30), path)
    assert len(got) == count
    for request in got:
        assert_verified(request, hook["secret"])
        assert request.header("X-Moncreneau-Attempt") == "1"
    log = _settled(api, hook["id"], count, {"succeeded"})
    assert [len(d["attempts"]) for d in log] == [1] * count
    return got


def test_hanging_receivers_are_cut_at_the_timeout_while_a_healthy_one_gets_every_delivery_at_once(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    events = 6
    hanging = [
        _subscribe(api, receiver.on(path, hang(HANG_SECONDS))) for path in ("hang-a", "hang-b")
    ]
    healthy = _subscribe(api, receiver.url("healthy"))
    # Booked before the processes start, so that one relay batch holds every delivery.
    _book(api, department["id"], events)
    processes.start("relay")
    processes.start("worker")

    received = receiver.wait_for(
        lambda r: all(len(_at(r, p)) >= events for p in ("healthy", "hang-a", "hang-b"))
    )

    # Every healthy delivery arrived before the first hanging request could even time out.
    first_hanging = min(r.at for r in _at(received, "hang-a") + _at(received, "hang-b"))
    last_healthy = max(r.at for r in _at(received, "healthy"))
    assert last_healthy < first_hanging + DELIVERY_TIMEOUT
    _assert_healthy(api, receiver, "healthy", healthy, events)
    for hook in hanging:
        for attempt in _first_attempts(api, hook["id"], events):
            assert attempt["statusCode"] is None
            assert attempt["error"] == f"no response within {DELIVERY_TIMEOUT:g}s"
            # Not given up early, and not held for anything like the receiver's 30 s.
            assert attempt["durationMs"] >= DELIVERY_TIMEOUT * 1000 * 0.95
            assert attempt["durationMs"] < (DELIVERY_TIMEOUT + GRACE) * 1000


def test_endpoints_hanging_beyond_their_concurrency_cap_do_not_hold_up_a_healthy_endpoint(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    events = 8
    cap = 2
    for path in ("hang-a", "hang-b"):
        _subscribe(api, receiver.on(path, hang(HANG_SECONDS)))
    healthy = _subscribe(api, receiver.url("healthy"))
    _book(api, department["id"], events)
    processes.start("relay")
    # Each hanging endpoint has 4 times its cap of first attempts to get through: 4 rounds
    # of the 2 s timeout. What does not fit behind an endpoint goes back to the database.
    processes.start("worker", MONCRENEAU_ENDPOINT_CONCURRENCY=str(cap))

    receiver.wait_for(lambda r: len(_at(r, "healthy")) >= events)

    with receiver.lock:
        snapshot = list(receiver.received)
    for path in ("hang-a", "hang-b"):
        assert len(_at(snapshot, path)) < events, f"{path} was done before the healthy endpoint"
    # Put back for a busy cap, never attempted: every healthy request is still attempt 1.
    _assert_healthy(api, receiver, "healthy", healthy, events)
    # The hanging endpoints never had more requests open at once than their cap.
    received = receiver.wait_for(lambda r: len(_at(r, "hang-a")) >= 2 * cap)
    starts = sorted(r.at for r in _at(received, "hang-a"))
    for index, start in enumerate(starts[cap:], start=cap):
        assert start >= starts[index - cap] + DELIVERY_TIMEOUT * 0.9


def test_a_receiver_dripping_its_headers_is_cut_at_the_deadline_and_the_attempt_fails(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    events = 3
    hung_up: list[float] = []
    # A status line at once, then one header byte every 0.5 s: the headers would end after
    # about 35 s, the body after that.
    dripping = drip(
        b"HTTP/1.1 200 OK\r\n",
        b"X-Drip: " + b"." * 60 + b"\r\nContent-Length: 2\r\n\r\nok",
        DRIP_EVERY,
        hung_up,
    )
    hook = _subscribe(api, receiver.on("drip", dripping))
    healthy = _subscribe(api, receiver.url("healthy"))
    processes.start("relay")
    processes.start("worker")

    _book(api, department["id"], events)

    _assert_healthy(api, receiver, "healthy", healthy, events)
    # The worker hung up on each drip within a few seconds of its request, not after 35 s.
    wait_until(lambda: len(hung_up) >= events, timeout=DELIVERY_TIMEOUT + GRACE, what="cut")
    assert max(hung_up) < min(r.at for r in receiver.at("drip")) + DELIVERY_TIMEOUT + GRACE
    firsts = _first_attempts(api, hook["id"], events)
    assert all(a["durationMs"] < (DELIVERY_TIMEOUT + GRACE) * 1000 for a in firsts)
    # The header block never ended within the timeout: no response, a failed attempt.
    assert [(a["statusCode"], a["error"]) for a in firsts] == [
        (None, f"no response within {DELIVERY_TIMEOUT:g}s")
    ] * events
    assert not [d for d in _deliveries(api, hook["id"]) if d["status"] == "succeeded"]


def test_a_receiver_dripping_its_body_is_cut_at_the_deadline_long_before_the_drip_ends(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    events = 3
    hung_up: list[float] = []
    # Complete headers at once, then a 60-byte body at one byte every 0.5 s: 30 s.
    dripping = drip(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 60\r\n\r\n",
        b"." * 60,
        DRIP_EVERY,
        hung_up,
    )
    hook = _subscribe(api, receiver.on("drip", dripping))
    healthy = _subscribe(api, receiver.url("healthy"))
    processes.start("relay")
    processes.start("worker")

    _book(api, department["id"], events)

    _assert_healthy(api, receiver, "healthy", healthy, events)
    wait_until(lambda: len(hung_up) >= events, timeout=DELIVERY_TIMEOUT + GRACE, what="cut")
    assert max(hung_up) < min(r.at for r in receiver.at("drip")) + DELIVERY_TIMEOUT + GRACE
    for attempt in _first_attempts(api, hook["id"], events):
        # The status came in time; whether a 2xx with a truncated body counts is the
        # sender's call, but the attempt is recorded, and within the deadline's reach.
        assert attempt["statusCode"] == 200 or attempt["error"]
        assert attempt["durationMs"] < (DELIVERY_TIMEOUT + GRACE) * 1000
        assert len(attempt["responseBody"] or "") < 60


def test_a_50_mb_answer_succeeds_with_a_short_excerpt_and_is_never_read_to_its_end(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    size = 50 * 1024 * 1024
    written: list[int] = []
    huge = _subscribe(api, receiver.on("huge", stream(size, written=written)))
    healthy = _subscribe(api, receiver.url("healthy"))
    processes.start("relay")
    processes.start("worker")

    _book(api, department["id"])

    [delivery] = _settled(api, huge["id"], 1, {"succeeded"})
    [attempt] = delivery["attempts"]
    assert attempt["statusCode"] == 200
    assert attempt["error"] is None
    assert 0 < len(attempt["responseBody"]) <= 1024
    assert set(attempt["responseBody"]) == {"x"}
    # The worker hung up: the receiver's writes failed long before the 50 MB were out.
    wait_until(lambda: written, timeout=DELIVERY_TIMEOUT + GRACE, what="the receiver cut off")
    assert written[0] < size
    _assert_healthy(api, receiver, "healthy", healthy, 1)


def test_a_redirect_is_a_failed_attempt_and_its_target_is_never_called(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    target = receiver.url("target")
    codes = (301, 302, 307, 308)
    moved = {
        code: _subscribe(
            api, receiver.on(f"moved-{code}", answer(code, b"moved", {"Location": target}))
        )
        for code in codes
    }
    healthy = _subscribe(api, receiver.url("healthy"))
    processes.start("relay", **ONE_RETRY)
    processes.start("worker", **ONE_RETRY)

    _book(api, department["id"])

    _assert_healthy(api, receiver, "healthy", healthy, 1)
    for code, hook in moved.items():
        [delivery] = _settled(api, hook["id"], 1, {"dead"})
        assert len(delivery["attempts"]) == 2
        for attempt in delivery["attempts"]:
            assert attempt["statusCode"] == code
            assert "redirect" in attempt["error"]
            assert target in attempt["error"]
        assert len(receiver.at(f"moved-{code}")) == 2
    assert receiver.at("target") == []


def test_connection_refused_and_an_unknown_host_are_failed_attempts(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    with socket.socket() as probe:  # a port nobody listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    refused = _subscribe(api, f"http://127.0.0.1:{closed_port}/hook")
    unknown = _subscribe(api, "http://no-such-host.invalid/hook")
    healthy = _subscribe(api, receiver.url("healthy"))
    processes.start("relay", **ONE_RETRY)
    processes.start("worker", **ONE_RETRY)

    _book(api, department["id"])

    _assert_healthy(api, receiver, "healthy", healthy, 1)
    for hook, error in ((refused, "connection refused"), (unknown, "DNS lookup failed")):
        [delivery] = _settled(api, hook["id"], 1, {"dead"})
        assert len(delivery["attempts"]) == 2
        for attempt in delivery["attempts"]:
            assert attempt["statusCode"] is None
            assert attempt["error"] == error


def test_410_gone_disables_the_subscription_at_once_and_tells_the_organizations_other_ones(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    gone = _subscribe(api, receiver.on("gone", answer(410, b"gone")))
    watcher = _subscribe(api, receiver.url("watcher"), ["webhook.disabled"])
    everything = _subscribe(api, receiver.url("everything"))
    processes.start("relay")
    processes.start("worker")

    _book(api, department["id"])

    [delivery] = _settled(api, gone["id"], 1, {"dead"})
    assert [a["statusCode"] for a in delivery["attempts"]] == [410]
    disabled = _webhook(api, gone["id"])
    assert disabled["enabled"] is False
    assert "410" in disabled["disabledReason"]

    [event] = [e for e in _events(api) if e["type"] == "webhook.disabled"]
    assert event["data"]["object"]["id"] == gone["id"]
    assert event["data"]["object"]["enabled"] is False
    assert event["data"]["object"]["disabledReason"] == disabled["disabledReason"]
    assert "secret" not in event["data"]["object"]

    for path, hook in (("watcher", watcher), ("everything", everything)):
        got = receiver.wait_for(
            lambda r, path=path: any(x.json["type"] == "webhook.disabled" for x in _at(r, path))
        )
        [told] = [x for x in _at(got, path) if x.json["type"] == "webhook.disabled"]
        assert_verified(told, hook["secret"])
        assert told.json["id"] == event["id"]
        assert told.json["data"]["object"]["id"] == gone["id"]
    assert [x.json["type"] for x in receiver.at("watcher")] == ["webhook.disabled"]

    # Later events reach the others, never the disabled endpoint.
    [later] = _book(api, department["id"])
    receiver.wait_for(
        lambda r: any(x.json["data"]["object"].get("id") == later for x in _at(r, "everything"))
    )
    assert len(receiver.at("gone")) == 1
    assert len(_deliveries(api, gone["id"])) == 1


def test_a_webhook_disabled_event_can_be_pulled_from_the_event_log_by_its_type(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    gone = _subscribe(api, receiver.on("gone", answer(410, b"gone")))
    processes.start("relay")
    processes.start("worker")

    _book(api, department["id"])

    wait_until(lambda: _webhook(api, gone["id"])["enabled"] is False, what="disabled")
    [event] = [e for e in _events(api) if e["type"] == "webhook.disabled"]
    assert api.get(f"/events/{event['id']}").json == event
    # A consumer that was offline catches up by pulling the type it missed.
    assert [e["id"] for e in _events(api, type="webhook.disabled")] == [event["id"]]


def _busy_until_http_date(seconds: float) -> Behaviour:
    """503 with Retry-After as an HTTP date `seconds` ahead (whole seconds, rounded down)."""

    def behave(request: Received, handler: BaseHTTPRequestHandler) -> None:
        when = formatdate(time.time() + seconds, usegmt=True)
        answer(503, b"busy", {"Retry-After": when})(request, handler)

    return behave


def test_retry_after_puts_off_the_next_attempt_for_at_least_that_long(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    busy = {
        429: answer(429, b"slow down", {"Retry-After": "3"}),
        503: _busy_until_http_date(4),  # at least 3 s ahead once rounded down
    }
    limited = {
        status: _subscribe(api, receiver.on(f"limited-{status}", sequence(first, answer(200))))
        for status, first in busy.items()
    }
    healthy = _subscribe(api, receiver.url("healthy"))
    processes.start("relay")
    processes.start("worker")

    _book(api, department["id"])

    _assert_healthy(api, receiver, "healthy", healthy, 1)
    for status, hook in limited.items():
        [delivery] = _settled(api, hook["id"], 1, {"succeeded"})
        assert [a["statusCode"] for a in delivery["attempts"]] == [status, 200]
        first, second = receiver.at(f"limited-{status}")
        assert second.header("X-Moncreneau-Attempt") == "2"
        # The schedule alone would try again at once (its first delay is 0 s).
        assert second.at - first.at >= 3.0 - 0.05, status


def test_an_unreadable_retry_after_is_a_failed_attempt_and_never_holds_up_its_endpoint(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    events = 4
    # "\u00b2" (the byte 0xb2) is a digit to str.isdigit(), not to float().
    odd = answer(429, b"slow down", {"Retry-After": "\u00b2"})
    hook = _subscribe(api, receiver.on("odd", sequence(odd, answer(200))))
    processes.start("relay")
    # One request at a time: the odd answer's place must be freed for the others to go.
    processes.start("worker", MONCRENEAU_ENDPOINT_CONCURRENCY="1")

    _book(api, department["id"], events)

    log = _settled(api, hook["id"], events, {"succeeded"})
    attempts = sorted([(a["statusCode"], a["error"]) for a in d["attempts"]] for d in log)
    assert attempts == [[(200, None)]] * (events - 1) + [[(429, "HTTP 429"), (200, None)]]


def test_a_subscription_failing_for_the_configured_period_is_disabled_and_the_others_are_told(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    hours = 0.0005  # 1.8 s
    broken = _subscribe(api, receiver.on("broken", answer(500, b"oops")))
    watcher = _subscribe(api, receiver.url("watcher"), ["webhook.disabled"])
    healthy = _subscribe(api, receiver.url("healthy"), ["appointment.created"])
    processes.start("relay")
    processes.start("worker", MONCRENEAU_DISABLE_AFTER_HOURS=str(hours))

    _book(api, department["id"], 3)

    disabled = wait_until(
        lambda: (hook := _webhook(api, broken["id"]))["enabled"] is False and hook,
        timeout=30,
        what="the failing subscription disabled",
    )
    assert "failed" in disabled["disabledReason"]
    attempts = [a for d in _deliveries(api, broken["id"]) for a in d["attempts"]]
    assert attempts and all(a["statusCode"] == 500 for a in attempts)
    # Not before the configured period had passed since the first failure (`updatedAt` is
    # rendered in whole seconds, rounded down: up to 1 s is added back).
    first_failure = min(datetime.fromisoformat(a["at"]) for a in attempts)
    disabled_at = datetime.fromisoformat(disabled["updatedAt"]) + timedelta(seconds=1)
    assert disabled_at - first_failure >= timedelta(hours=hours)

    [event] = [e for e in _events(api) if e["type"] == "webhook.disabled"]
    assert event["data"]["object"]["id"] == broken["id"]
    got = receiver.wait_for(lambda r: len(_at(r, "watcher")) >= 1)
    [told] = _at(got, "watcher")
    assert_verified(told, watcher["secret"])
    assert told.json["id"] == event["id"]
    assert told.json["data"]["object"]["disabledReason"] == disabled["disabledReason"]

    # Later events reach the healthy subscription, never the disabled one.
    [later] = _book(api, department["id"])
    _assert_healthy(api, receiver, "healthy", healthy, 4)
    [later_event] = [
        r.json for r in receiver.at("healthy") if r.json["data"]["object"]["id"] == later
    ]
    assert later_event["id"] not in {d["eventId"] for d in _deliveries(api, broken["id"])}
    assert all(r.json["id"] != later_event["id"] for r in receiver.at("broken"))


def test_a_receiver_answering_nul_bytes_is_recorded_and_never_blocks_bookkeeping(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    """PostgreSQL text cannot hold NUL: the excerpt keeps a replacement character instead."""
    nul = receiver.on("nul", answer(200, b"ok\x00done"))
    plain = receiver.on("plain", answer(200))
    hooks = [api.post("/webhooks", {"url": u, "events": ["*"]}).json for u in (nul, plain)]
    processes.start("relay")
    processes.start("worker")
    for hour in (9, 10):
        booked = api.post(
            "/appointments",
            {
                "departmentId": department["id"],
                "dateTime": f"2026-02-01T{hour:02d}:00",
                "name": "N",
            },
        )
        assert booked.status_code == 201

    def settled() -> bool:
        pages = [api.get(f"/webhooks/{h['id']}/deliveries").json["data"] for h in hooks]
        return all(len(p) == 2 and all(d["status"] == "succeeded" for d in p) for p in pages)

    wait_until(settled, what="every delivery recorded, the NUL answers included")
    delivery = api.get(f"/webhooks/{hooks[0]['id']}/deliveries").json["data"][0]
    detail = api.get(f"/webhooks/{hooks[0]['id']}/deliveries/{delivery['id']}").json
    assert detail["attempts"][0]["responseBody"] == "ok\ufffddone"
