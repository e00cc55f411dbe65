"""The walkthrough from the README, through the API, on each storage backend."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api


def test_booking_rescheduling_and_cancelling_leaves_a_matching_event_history(
    api: Api, department: dict[str, Any]
) -> None:
    created = api.post(
        "/appointments",
        {"departmentId": department["id"], "dateTime": "2026-02-01T10:00:00", "name": "Test"},
    )
    assert created.status_code == 201
    appointment = created.json
    assert appointment["dateTime"] == "2026-02-01T10:00:00+01:00"
    assert (appointment["status"], appointment["version"]) == ("pending", 1)
    assert created.headers["ETag"] == '"1"'

    moved = api.patch(
        f"/appointments/{appointment['id']}",
        {"dateTime": "2026-02-01T11:30:00"},
        headers={"If-Match": '"1"'},
    )
    assert moved.status_code == 200, moved.json
    assert moved.json["version"] == 2

    cancelled = api.post(f"/appointments/{appointment['id']}/cancel", {"reason": "ill"})
    assert cancelled.json["status"] == "cancelled"

    history = api.get(f"/appointments/{appointment['id']}/events").json["data"]
    assert [e["type"] for e in history] == [
        "appointment.created",
        "appointment.updated",
        "appointment.cancelled",
    ]
    assert history[1]["data"]["previousAttributes"] == {"dateTime": "2026-02-01T10:00:00+01:00"}
    assert history[-1]["data"]["object"] == api.get(f"/appointments/{appointment['id']}").json


def test_a_weak_entity_tag_never_satisfies_if_match(api: Api, department: dict[str, Any]) -> None:
    made = api.post(
        "/appointments",
        {"departmentId": department["id"], "dateTime": "2026-02-01T10:00:00", "name": "Test"},
    ).json
    weak = api.patch(f"/appointments/{made['id']}", {"name": "B"}, headers={"If-Match": 'W/"1"'})
    assert weak.status_code == 412
    listed = api.patch(
        f"/appointments/{made['id']}", {"name": "B"}, headers={"If-Match": 'W/"1", "1"'}
    )
    assert listed.status_code == 200
    assert listed.json["version"] == 2
