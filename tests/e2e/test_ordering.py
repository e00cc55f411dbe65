"""Ordering per appointment through real relay and worker processes, PostgreSQL and Redis."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.conftest import Api, book_move_cancel
from tests.e2e.conftest import Processes
from tests.receiver import Behaviour, Received, Receiver, answer
from tests.services import wait_until

SLOW, OTHER = "Slow Patient", "Other Patient"
# Quick retries, and enough of them to outlast the other appointment's deliveries.
SCHEDULE = ",".join(["0.3"] * 30)


def _of(requests: list[Received], name: str) -> list[str]:
    return [r.json["type"] for r in requests if r.json["data"]["object"]["name"] == name]


def _fail_slow_creation_until(done: threading.Event) -> Behaviour:
    """A 500 to the slow patient's creation until `done`, and at least twice; 200 otherwise."""
    failures = {"n": 0}

    def behave(request: Received, handler: BaseHTTPRequestHandler) -> None:
        event = request.json
        slow_creation = (
            event["data"]["object"]["name"] == SLOW and event["type"] == "appointment.created"
        )
        if slow_creation and (failures["n"] < 2 or not done.is_set()):
            failures["n"] += 1
            answer(500)(request, handler)
            return
        answer(200)(request, handler)

    return behave


EVENTS = ["appointment.created", "appointment.updated", "appointment.cancelled"]


def test_an_ordered_webhook_gets_an_appointments_events_in_order_despite_failures(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    processes.start("relay", MONCRENEAU_RETRY_SCHEDULE=SCHEDULE)
    processes.start("worker", MONCRENEAU_RETRY_SCHEDULE=SCHEDULE)
    # The slow patient's creation fails at the ordered webhook until the other patient's
    # three events have arrived there, and at the unordered one until its own last event
    # has: each proves what did not wait.
    other_done, slow_done = threading.Event(), threading.Event()
    ordered = receiver.on("ordered", _fail_slow_creation_until(other_done))
    plain = receiver.on("plain", _fail_slow_creation_until(slow_done))
    made = api.post("/webhooks", {"url": ordered, "events": ["*"], "ordering": "appointment"})
    assert made.status_code == 201 and made.json["ordering"] == "appointment"
    assert api.post("/webhooks", {"url": plain, "events": ["*"]}).json["ordering"] == "none"

    book_move_cancel(api, department, 9, SLOW, "2026-06-01")
    book_move_cancel(api, department, 11, OTHER, "2026-06-01")

    receiver.wait_for(lambda _: len(_of(receiver.at("ordered"), OTHER)) == 3)
    other_done.set()
    receiver.wait_for(lambda _: "appointment.cancelled" in _of(receiver.at("plain"), SLOW))
    slow_done.set()
    receiver.wait_for(
        lambda _: (
            _of(receiver.at("ordered"), SLOW)[-1:] == ["appointment.cancelled"]
            and _of(receiver.at("plain"), SLOW).count("appointment.created") >= 3
        )
    )

    slow = _of(receiver.at("ordered"), SLOW)
    # Every attempt at the creation (two failures at least, then the success) came before
    # the update, and the update before the cancellation; the other appointment went
    # through meanwhile.
    tries = len(slow) - 2
    assert tries >= 3
    assert slow == ["appointment.created"] * tries + EVENTS[1:]
    assert _of(receiver.at("ordered"), OTHER) == EVENTS
    # Unordered (the default): the update and cancellation did not wait for the creation.
    unordered = _of(receiver.at("plain"), SLOW)
    assert unordered.index("appointment.cancelled") < len(unordered) - 1
    assert unordered[-1] == "appointment.created"
    assert sorted(set(unordered)) == sorted(EVENTS)


def test_a_dead_delivery_lets_the_next_of_its_appointment_go(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    schedule = "0.2,0.2"  # three attempts in all
    processes.start("relay", MONCRENEAU_RETRY_SCHEDULE=schedule)
    processes.start("worker", MONCRENEAU_RETRY_SCHEDULE=schedule)
    never = threading.Event()
    url = receiver.on("ordered", _fail_slow_creation_until(never))
    hook = api.post("/webhooks", {"url": url, "events": ["*"], "ordering": "appointment"}).json

    book_move_cancel(api, department, 9, SLOW, "2026-06-01")

    receiver.wait_for(lambda _: _of(receiver.at("ordered"), SLOW)[-1:] == ["appointment.cancelled"])
    assert _of(receiver.at("ordered"), SLOW) == ["appointment.created"] * 3 + EVENTS[1:]
    log = wait_until(
        lambda: (
            (page := api.get(f"/webhooks/{hook['id']}/deliveries").json["data"])
            and all(d["status"] in ("dead", "succeeded") for d in page)
            and page
        ),
        what="every delivery settled",
    )
    assert {d["eventType"]: d["status"] for d in log} == {
        "appointment.created": "dead",
        "appointment.updated": "succeeded",
        "appointment.cancelled": "succeeded",
    }
