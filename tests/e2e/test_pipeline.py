"""Every committed event reaches every matching subscription through real relay and worker."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import text

from tests.conftest import Api, new_organization
from tests.e2e.conftest import Processes
from tests.receiver import Receiver
from tests.services import wait_until
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
            (page := api.get(f"/webhooks/{everything['id']}/deliveries").json["data"])
            and all(d["status"] == "succeeded" for d in page)
            and page
        ),
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


def test_several_relays_and_workers_deliver_each_event_once_per_subscription(
    api: Api,
    department: dict[str, Any],
    receiver: Receiver,
    processes: Processes,
    engine: Any,
) -> None:
    for _ in range(3):
        processes.start("relay")
    for _ in range(2):
        processes.start("worker")
    hook = api.post("/webhooks", {"url": receiver.url("many"), "events": ["*"]}).json
    booked = []
    for minute in range(0, 600, 30):
        made = api.post(
            "/appointments",
            {
                "departmentId": department["id"],
                "dateTime": f"2026-03-0{1 + minute // 300}T{8 + (minute % 300) // 60:02d}:"
                f"{minute % 60:02d}:00",
                "name": f"P{minute}",
            },
        )
        assert made.status_code == 201, made.json
        booked.append(made.json["id"])
    events = {e["id"] for e in api.get("/events?limit=200").json["data"]}
    assert len(events) == len(booked)

    got = receiver.wait_for(lambda r: {x.json["id"] for x in r} >= events)
    for request in got:
        assert_verified(request, hook["secret"])
    with engine.connect() as conn:
        per_event = conn.execute(
            text("SELECT event_id, count(*) FROM deliveries GROUP BY event_id")
        ).all()
    assert len(per_event) == len(events)
    assert all(count == 1 for _event, count in per_event)


def test_a_thin_subscription_receives_ids_and_versions_but_no_personal_data(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    processes.start("relay")
    processes.start("worker")
    hook = api.post(
        "/webhooks", {"url": receiver.url("thin"), "events": ["*"], "payload": "thin"}
    ).json
    made = api.post(
        "/appointments",
        {
            "departmentId": department["id"],
            "dateTime": "2026-02-01T10:00:00",
            "name": "Jeanne Martin",
            "email": "jeanne@example.org",
            "notes": "allergic to latex",
        },
    ).json
    api.patch(f"/appointments/{made['id']}", {"name": "Jeanne Dupont"})

    got = receiver.wait_for(lambda r: len(r) >= 2)
    for request in got:
        assert_verified(request, hook["secret"])
        for personal in (b"Jeanne", b"jeanne@example.org", b"latex"):
            assert personal not in request.body
        assert request.json["data"]["object"]["id"] == made["id"]
    updated = next(r.json for r in got if r.json["type"] == "appointment.updated")
    assert updated["data"]["changedFields"] == ["name"]
    assert updated["data"]["object"]["version"] == 2
