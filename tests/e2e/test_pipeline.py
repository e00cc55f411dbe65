"""Every committed event reaches every matching subscription through real relay and worker."""

from __future__ import annotations

from typing import Any

from flask import Flask

from tests.conftest import Api, new_organization
from tests.e2e.conftest import Processes, wait_until
from tests.receiver import Receiver
from tests.verify import assert_verified


def _book_and_change(api: Api, department_id: int) -> int:
    made = api.post(
        "/appointments",
        {"departmentId": department_id, "dateTime": "2026-02-01T10:00:00", "name": "Test"},
    )
    assert made.status_code == 201
    appointment_id: int = made.json["id"]
    moved = api.patch(f"/appointments/{appointment_id}", {"dateTime": "2026-02-01T11:00:00"})
    assert moved.status_code == 200
    assert api.post(f"/appointments/{appointment_id}/validate").status_code == 200
    assert api.post(f"/appointments/{appointment_id}/cancel", {"reason": "x"}).status_code == 200
    return appointment_id


def test_booking_rescheduling_and_cancelling_reach_the_receiver_signed_and_versioned(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    processes.start("relay")
    processes.start("worker")
    everything = api.post("/webhooks", {"url": receiver.url("all"), "events": ["*"]}).json
    created_only = api.post(
        "/webhooks",
        {"url": receiver.url("created"), "events": ["appointment.created"], "version": "1.0"},
    ).json

    appointment_id = _book_and_change(api, department["id"])

    got = receiver.wait_for(lambda r: len([x for x in r if x.path == "/all"]) >= 4)
    # Arrival order is not guaranteed; the appointment's version orders them.
    all_events = sorted(
        (r for r in got if r.path == "/all"), key=lambda r: r.json["data"]["object"]["version"]
    )
    for request in all_events:
        assert_verified(request, everything["secret"])
    assert [r.json["type"] for r in all_events] == [
        "appointment.created",
        "appointment.updated",
        "appointment.validated",
        "appointment.cancelled",
    ]
    assert [r.json["data"]["object"]["version"] for r in all_events] == [1, 2, 3, 4]
    assert {r.json["version"] for r in all_events} == {"2.0"}
    assert all_events[1].json["data"]["changes"] == {
        "dateTime": {"old": "2026-02-01T10:00:00+01:00", "new": "2026-02-01T11:00:00+01:00"}
    }
    created = receiver.wait_for(lambda r: any(x.path == "/created" for x in r))
    [only] = [r for r in created if r.path == "/created"]
    assert_verified(only, created_only["secret"])
    assert only.json["type"] == "appointment.created"
    assert only.json["version"] == "1.0"
    assert only.json["data"]["object"]["id"] == appointment_id

    log = wait_until(
        lambda: (
            page := api.get(f"/webhooks/{everything['id']}/deliveries").json["data"]
        )
        and all(d["status"] == "succeeded" for d in page)
        and page,
        what="every delivery recorded as succeeded",
    )
    assert len(log) == 4
    ids = {r.header("X-Moncreneau-Delivery") for r in all_events}
    assert ids == {d["id"] for d in log}
    detail = api.get(f"/webhooks/{everything['id']}/deliveries/{log[0]['id']}").json
    assert detail["attempts"][0]["statusCode"] == 200
    assert detail["attempts"][0]["number"] == 1


def test_another_organizations_events_never_reach_a_subscription(
    app: Flask, api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    processes.start("relay")
    processes.start("worker")
    other = Api(app.test_client(), new_organization(app, "Autre")["apiKey"])
    other.post("/webhooks", {"url": receiver.url("other"), "events": ["*"]})
    mine = api.post("/webhooks", {"url": receiver.url("mine"), "events": ["*"]}).json

    _book_and_change(api, department["id"])

    receiver.wait_for(lambda r: len([x for x in r if x.path == "/mine"]) >= 4)
    test_send = other.post(f"/webhooks/{mine['id']}/test")
    assert test_send.status_code == 404
    assert receiver.at("other") == []
