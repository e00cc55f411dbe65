"""Booking, the lifecycle, changes, lists and the event log, as the contract states them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.engine import Engine

from moncreneau.appointments import service as appointments
from moncreneau.departments import service as departments
from moncreneau.models import AppointmentRow
from tests.conftest import Api

OFFSET_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)$")
UTC_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
EVENT_ID = re.compile(r"^evt_[0-9a-z]+$")


def book(api: Api, department_id: int, date_time: str, name: str = "Test", **extra: Any) -> Any:
    return api.post(
        "/appointments",
        {"departmentId": department_id, "dateTime": date_time, "name": name, **extra},
    )


def booked(api: Api, department_id: int, date_time: str, **extra: Any) -> dict[str, Any]:
    response = book(api, department_id, date_time, **extra)
    assert response.status_code == 201, response.json
    body: dict[str, Any] = response.json
    return body


def all_events(api: Api, **query: Any) -> list[dict[str, Any]]:
    response = api.get("/events", query_string={"limit": 200, **query})
    assert response.status_code == 200
    assert response.json["nextCursor"] is None
    events: list[dict[str, Any]] = response.json["data"]
    return events


def history(api: Api, appointment_id: int) -> list[dict[str, Any]]:
    response = api.get(f"/appointments/{appointment_id}/events")
    assert response.status_code == 200
    events: list[dict[str, Any]] = response.json["data"]
    return events


def walk(api: Api, path: str, limit: int, **query: Any) -> list[list[dict[str, Any]]]:
    """Every page of a list, following `nextCursor`; checks the header matches the body."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        params = {"limit": limit, **query, **({"cursor": cursor} if cursor else {})}
        response = api.get(path, query_string=params)
        assert response.status_code == 200, response.json
        body = response.json
        assert response.headers.get("X-Next-Cursor") == body["nextCursor"]
        assert body["hasMore"] is (body["nextCursor"] is not None)
        pages.append(body["data"])
        cursor = body["nextCursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "pagination never ends"


def assert_envelope(event: dict[str, Any]) -> None:
    """Payload version 1.0: exactly these keys, previousAttributes only on updates."""
    assert set(event) == {"id", "type", "created", "version", "data"}
    assert EVENT_ID.match(event["id"]), event["id"]
    assert UTC_TIMESTAMP.match(event["created"]), event["created"]
    assert event["version"] == "1.0"
    expected = (
        {"object", "previousAttributes"} if event["type"] == "appointment.updated" else {"object"}
    )
    assert set(event["data"]) == expected
    assert isinstance(event["data"]["object"], dict)


# ---------------------------------------------------------------------------- booking


def test_booking_answers_201_with_the_whole_appointment_and_etag_1(
    api: Api, department: dict[str, Any]
) -> None:
    response = book(
        api,
        department["id"],
        "2026-02-01T10:00:00",
        name="Alice Martin",
        email="alice@example.org",
        phone="+33 1 23 45 67 89",
        notes="Première visite",
    )
    assert response.status_code == 201, response.json
    assert response.headers["ETag"] == '"1"'
    body = response.json
    assert isinstance(body["id"], int)
    assert body["departmentId"] == department["id"]
    assert body["dateTime"] == "2026-02-01T10:00:00+01:00"
    assert body["name"] == "Alice Martin"
    assert body["email"] == "alice@example.org"
    assert body["phone"] == "+33 1 23 45 67 89"
    assert body["notes"] == "Première visite"
    assert body["durationMinutes"] == department["slotMinutes"]
    assert body["status"] == "pending"
    assert body["version"] == 1
    assert UTC_TIMESTAMP.match(body["createdAt"])
    assert body["updatedAt"] == body["createdAt"]
    assert api.get(f"/appointments/{body['id']}").json == body


def test_booking_emits_one_appointment_created_event_carrying_the_appointment(
    api: Api, department: dict[str, Any]
) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00")
    events = all_events(api)
    assert [e["type"] for e in events] == ["appointment.created"]
    assert events[0]["data"]["object"] == appointment


def test_every_timestamp_in_an_appointment_carries_an_offset(
    api: Api, department: dict[str, Any]
) -> None:
    appointment = booked(api, department["id"], "2026-07-01T10:00:00")
    assert appointment["dateTime"] == "2026-07-01T10:00:00+02:00"
    for name in ("dateTime", "createdAt", "updatedAt"):
        assert OFFSET_TIMESTAMP.match(appointment[name]), (name, appointment[name])


def test_a_dateTime_with_an_offset_is_that_instant_answered_in_the_departments_offset(
    app: Flask, api: Api, department: dict[str, Any]
) -> None:
    appointment = booked(api, department["id"], "2026-02-01T09:00:00Z")
    assert appointment["dateTime"] == "2026-02-01T10:00:00+01:00"
    with app.extensions["moncreneau"].sessions() as db:
        row = db.get(AppointmentRow, appointment["id"])
        assert row is not None
        assert row.starts_at == datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
    # The same instant written as Paris local time is the same, now full, slot.
    assert book(api, department["id"], "2026-02-01T10:00:00").status_code == 409
    assert book(api, department["id"], "2026-02-01T04:00:00-05:00").status_code == 409


def test_a_dateTime_without_an_offset_is_local_time_on_both_sides_of_a_dst_change(
    api: Api, department: dict[str, Any]
) -> None:
    winter = booked(api, department["id"], "2026-03-28T10:00:00")
    summer = booked(api, department["id"], "2026-03-29T10:00:00")
    assert winter["dateTime"] == "2026-03-28T10:00:00+01:00"
    assert summer["dateTime"] == "2026-03-29T10:00:00+02:00"


# ---------------------------------------------------------------------------- capacity


def test_booking_a_full_slot_is_a_409_and_emits_nothing(
    api: Api, engine: Engine, department: dict[str, Any]
) -> None:
    first = booked(api, department["id"], "2026-02-01T10:00:00")
    events_before = all_events(api)
    response = book(api, department["id"], "2026-02-01T10:00:00", name="Second")
    assert response.status_code == 409
    assert set(response.json) >= {"code", "status", "message"}
    assert response.json["code"] == 409
    assert all_events(api) == events_before
    assert [a["id"] for a in api.get("/appointments").json["data"]] == [first["id"]]


def test_a_capacity_of_two_takes_two_appointments_at_the_same_time_and_no_third(
    api: Api,
) -> None:
    department = api.post(
        "/departments",
        {"name": "Prises de sang", "timezone": "Europe/Paris", "slotMinutes": 15, "capacity": 2},
    ).json
    booked(api, department["id"], "2026-02-01T08:15:00", name="Un")
    booked(api, department["id"], "2026-02-01T08:15:00", name="Deux")
    assert book(api, department["id"], "2026-02-01T08:15:00", name="Trois").status_code == 409
    assert len(all_events(api)) == 2


def test_the_same_time_in_two_departments_does_not_share_capacity(
    api: Api, department: dict[str, Any]
) -> None:
    other = api.post("/departments", {"name": "Cardiologie", "timezone": "Europe/Paris"}).json
    booked(api, department["id"], "2026-02-01T10:00:00")
    booked(api, other["id"], "2026-02-01T10:00:00")


def test_a_department_unknown_at_one_booking_is_found_once_created(
    api: Api, department: dict[str, Any]
) -> None:
    # Departments are kept in memory once read; one that did not exist yet must not be.
    booked(api, department["id"], "2026-02-01T10:00:00")
    next_id = department["id"] + 1
    missing = book(api, next_id, "2026-02-01T10:00:00")
    assert missing.status_code == 422
    assert missing.json["errors"] == {"departmentId": [f"No department with id {next_id}."]}
    created = api.post(
        "/departments",
        {"name": "Cardiologie", "timezone": "America/New_York", "slotMinutes": 45},
    ).json
    assert created["id"] == next_id
    # Its own zone and slot length apply, not the first department's.
    assert book(api, next_id, "2026-02-01T11:00:00").status_code == 422
    assert booked(api, next_id, "2026-02-01T10:30:00")["dateTime"] == "2026-02-01T10:30:00-05:00"


def test_a_department_read_in_a_transaction_that_rolled_back_is_not_remembered(
    app: Flask, org: dict[str, Any], other_api: Api
) -> None:
    # A department created and booked into by a transaction that then rolls back: SQLite
    # gives its id to the next department, which must not inherit what was read of it.
    with app.extensions["moncreneau"].sessions() as db:
        gone = departments.create(db, org["id"], departments.NewDepartment("Temp", "UTC", 30, 1))
        appointments.book(
            db,
            org["id"],
            appointments.NewAppointment(gone["id"], datetime(2026, 2, 1, 10), "A"),
            vault=app.extensions["moncreneau"].vault,
        )
        db.rollback()
    theirs = other_api.post(
        "/departments", {"name": "Autre", "timezone": "America/New_York", "slotMinutes": 45}
    ).json
    answer = other_api.post(
        "/appointments",
        {"departmentId": theirs["id"], "dateTime": "2026-02-01T10:30:00", "name": "B"},
    )
    assert answer.status_code == 201, answer.json
    assert answer.json["dateTime"] == "2026-02-01T10:30:00-05:00"


def test_a_cancelled_appointment_frees_its_slot(api: Api, department: dict[str, Any]) -> None:
    first = booked(api, department["id"], "2026-02-01T10:00:00")
    assert book(api, department["id"], "2026-02-01T10:00:00").status_code == 409
    assert api.post(f"/appointments/{first['id']}/cancel").status_code == 200
    booked(api, department["id"], "2026-02-01T10:00:00", name="Remplaçant")


def test_rescheduling_into_a_full_slot_is_a_409_and_changes_nothing(
    api: Api, department: dict[str, Any]
) -> None:
    booked(api, department["id"], "2026-02-01T10:00:00", name="Occupant")
    moving = booked(api, department["id"], "2026-02-01T11:00:00")
    events_before = all_events(api)
    response = api.patch(f"/appointments/{moving['id']}", {"dateTime": "2026-02-01T10:00:00"})
    assert response.status_code == 409
    assert response.json["code"] == 409
    assert api.get(f"/appointments/{moving['id']}").json == moving
    assert all_events(api) == events_before


def test_rescheduling_into_a_slot_freed_by_a_cancellation_works(
    api: Api, department: dict[str, Any]
) -> None:
    occupant = booked(api, department["id"], "2026-02-01T10:00:00")
    moving = booked(api, department["id"], "2026-02-01T11:00:00")
    api.post(f"/appointments/{occupant['id']}/cancel")
    response = api.patch(f"/appointments/{moving['id']}", {"dateTime": "2026-02-01T10:00:00"})
    assert response.status_code == 200, response.json
    assert response.json["dateTime"] == "2026-02-01T10:00:00+01:00"


def test_rescheduling_frees_the_old_slot(api: Api, department: dict[str, Any]) -> None:
    moving = booked(api, department["id"], "2026-02-01T10:00:00")
    api.patch(f"/appointments/{moving['id']}", {"dateTime": "2026-02-01T10:30:00"})
    booked(api, department["id"], "2026-02-01T10:00:00")


# ---------------------------------------------------------------------------- lifecycle

ALLOWED_PATHS = [
    pytest.param(["validate"], ["validated"], id="pending-validated"),
    pytest.param(["validate", "complete"], ["validated", "completed"], id="validated-completed"),
    pytest.param(["cancel"], ["cancelled"], id="pending-cancelled"),
    pytest.param(["validate", "cancel"], ["validated", "cancelled"], id="validated-cancelled"),
]


@pytest.mark.parametrize(("actions", "statuses"), ALLOWED_PATHS)
def test_an_allowed_transition_answers_200_bumps_the_version_and_emits_its_event(
    api: Api, department: dict[str, Any], actions: list[str], statuses: list[str]
) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00")
    for step, (action, status) in enumerate(zip(actions, statuses, strict=True), start=2):
        response = api.post(f"/appointments/{appointment['id']}/{action}")
        assert response.status_code == 200, response.json
        assert response.json["status"] == status
        assert response.json["version"] == step
        assert response.headers["ETag"] == f'"{step}"'
        assert api.get(f"/appointments/{appointment['id']}").json == response.json
    types = [e["type"] for e in history(api, appointment["id"])]
    assert types == ["appointment.created", *(f"appointment.{s}" for s in statuses)]


def test_cancelling_with_a_reason_keeps_the_reason(api: Api, department: dict[str, Any]) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00")
    response = api.post(f"/appointments/{appointment['id']}/cancel", {"reason": "Malade"})
    assert response.status_code == 200
    assert response.json["cancellationReason"] == "Malade"
    assert history(api, appointment["id"])[-1]["data"]["object"]["cancellationReason"] == "Malade"


REACH = {
    "pending": [],
    "validated": ["validate"],
    "completed": ["validate", "complete"],
    "cancelled": ["cancel"],
}
DISALLOWED = [
    ("pending", "complete"),
    ("validated", "validate"),
    ("completed", "validate"),
    ("completed", "complete"),
    ("completed", "cancel"),
    ("cancelled", "validate"),
    ("cancelled", "complete"),
    ("cancelled", "cancel"),
]


@pytest.mark.parametrize(("status", "action"), DISALLOWED)
def test_a_disallowed_transition_is_a_409_that_changes_nothing_and_emits_nothing(
    api: Api, department: dict[str, Any], status: str, action: str
) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00")
    for step in REACH[status]:
        assert api.post(f"/appointments/{appointment['id']}/{step}").status_code == 200
    before = api.get(f"/appointments/{appointment['id']}").json
    assert before["status"] == status
    events_before = all_events(api)
    response = api.post(f"/appointments/{appointment['id']}/{action}")
    assert response.status_code == 409
    assert response.json["code"] == 409
    assert response.json["status"] == "Conflict"
    assert api.get(f"/appointments/{appointment['id']}").json == before
    assert all_events(api) == events_before


@pytest.mark.parametrize("status", ["completed", "cancelled"])
def test_a_final_appointment_cannot_be_changed(
    api: Api, department: dict[str, Any], status: str
) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00")
    for step in REACH[status]:
        api.post(f"/appointments/{appointment['id']}/{step}")
    before = api.get(f"/appointments/{appointment['id']}").json
    events_before = all_events(api)
    response = api.patch(f"/appointments/{appointment['id']}", {"name": "Autre"})
    assert response.status_code == 409
    assert api.get(f"/appointments/{appointment['id']}").json == before
    assert all_events(api) == events_before


def test_a_transition_with_a_stale_if_match_is_a_412_and_changes_nothing(
    api: Api, department: dict[str, Any]
) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00")
    api.patch(f"/appointments/{appointment['id']}", {"name": "Nouveau"})
    response = api.post(f"/appointments/{appointment['id']}/validate", headers={"If-Match": '"1"'})
    assert response.status_code == 412
    assert api.get(f"/appointments/{appointment['id']}").json["status"] == "pending"
    fresh = api.post(f"/appointments/{appointment['id']}/validate", headers={"If-Match": '"2"'})
    assert fresh.status_code == 200


# ---------------------------------------------------------------------------- changes


def test_a_patch_with_a_stale_if_match_is_a_412_and_writes_nothing(
    api: Api, department: dict[str, Any]
) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00")
    current = api.patch(f"/appointments/{appointment['id']}", {"name": "Deuxième"}).json
    events_before = all_events(api)
    response = api.patch(
        f"/appointments/{appointment['id']}",
        {"name": "Troisième", "dateTime": "2026-02-01T12:00:00"},
        headers={"If-Match": '"1"'},
    )
    assert response.status_code == 412
    assert response.json["code"] == 412
    assert response.json["status"] == "Precondition Failed"
    assert api.get(f"/appointments/{appointment['id']}").json == current
    assert all_events(api) == events_before


@pytest.mark.parametrize("if_match", ['"1"', "*", '"0", "1"'])
def test_a_patch_with_a_matching_if_match_applies(
    api: Api, department: dict[str, Any], if_match: str
) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00")
    response = api.patch(
        f"/appointments/{appointment['id']}", {"name": "Nouveau"}, headers={"If-Match": if_match}
    )
    assert response.status_code == 200, response.json
    assert response.json["name"] == "Nouveau"
    assert response.json["version"] == 2
    assert response.headers["ETag"] == '"2"'


def test_a_patch_that_changes_nothing_answers_200_and_emits_nothing(
    api: Api, department: dict[str, Any]
) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00", email="a@example.org")
    events_before = all_events(api)
    response = api.patch(
        f"/appointments/{appointment['id']}",
        {"name": "Test", "email": "a@example.org", "dateTime": "2026-02-01T09:00:00Z"},
    )
    assert response.status_code == 200, response.json
    assert response.json == appointment
    assert response.headers["ETag"] == '"1"'
    assert all_events(api) == events_before
    empty = api.patch(f"/appointments/{appointment['id']}", {})
    assert empty.status_code == 200
    assert empty.json == appointment
    assert all_events(api) == events_before


def test_a_patch_emits_an_update_whose_previous_attributes_are_exactly_the_changed_fields(
    api: Api, department: dict[str, Any]
) -> None:
    appointment = booked(
        api, department["id"], "2026-02-01T10:00:00", name="Alice", phone="+33 1 23 45 67 89"
    )
    response = api.patch(
        f"/appointments/{appointment['id']}",
        {
            "name": "Alice",
            "phone": "+33 1 23 45 67 89",
            "email": "alice@example.org",
            "dateTime": "2026-02-01T11:30:00",
            "durationMinutes": 60,
        },
    )
    assert response.status_code == 200, response.json
    changed = response.json
    assert changed["email"] == "alice@example.org"
    assert changed["dateTime"] == "2026-02-01T11:30:00+01:00"
    assert changed["durationMinutes"] == 60
    assert changed["version"] == 2
    update = history(api, appointment["id"])[-1]
    assert update["type"] == "appointment.updated"
    assert update["data"]["previousAttributes"] == {
        "email": None,
        "dateTime": "2026-02-01T10:00:00+01:00",
        "durationMinutes": 30,
    }
    assert update["data"]["object"] == changed


def test_a_patch_can_clear_an_optional_field(api: Api, department: dict[str, Any]) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00", notes="à jeun")
    response = api.patch(f"/appointments/{appointment['id']}", {"notes": None})
    assert response.status_code == 200
    assert response.json["notes"] is None
    assert history(api, appointment["id"])[-1]["data"]["previousAttributes"] == {"notes": "à jeun"}


def test_a_validated_appointment_can_still_be_rescheduled(
    api: Api, department: dict[str, Any]
) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00")
    api.post(f"/appointments/{appointment['id']}/validate")
    response = api.patch(f"/appointments/{appointment['id']}", {"dateTime": "2026-02-02T10:00:00"})
    assert response.status_code == 200
    assert (response.json["status"], response.json["version"]) == ("validated", 3)


# ---------------------------------------------------------------------------- reading


@pytest.fixture
def spread(api: Api, department: dict[str, Any]) -> dict[str, Any]:
    """Appointments in two departments at several times and statuses."""
    other = api.post(
        "/departments", {"name": "Dentaire", "timezone": "America/New_York", "capacity": 3}
    ).json
    a = booked(api, department["id"], "2026-02-01T09:00:00")  # 08:00Z
    b = booked(api, department["id"], "2026-02-01T10:00:00")  # 09:00Z
    c = booked(api, other["id"], "2026-02-01T04:00:00")  # 09:00Z
    d = booked(api, other["id"], "2026-02-01T05:00:00")  # 10:00Z
    e = booked(api, department["id"], "2026-02-02T10:00:00")  # next day 09:00Z
    api.post(f"/appointments/{b['id']}/validate")
    api.post(f"/appointments/{d['id']}/validate")
    api.post(f"/appointments/{e['id']}/cancel")
    return {"department": department, "other": other, "a": a, "b": b, "c": c, "d": d, "e": e}


def listed_ids(api: Api, **query: Any) -> list[int]:
    response = api.get("/appointments", query_string=query)
    assert response.status_code == 200, response.json
    return [item["id"] for item in response.json["data"]]


def test_listing_appointments_returns_them_all_oldest_first(
    api: Api, spread: dict[str, Any]
) -> None:
    ids = [spread[k]["id"] for k in "abcde"]
    assert listed_ids(api) == ids
    assert api.get("/appointments").json["data"][0] == spread["a"]


def test_listing_filters_by_status(api: Api, spread: dict[str, Any]) -> None:
    assert listed_ids(api, status="validated") == [spread["b"]["id"], spread["d"]["id"]]
    assert listed_ids(api, status="pending") == [spread["a"]["id"], spread["c"]["id"]]
    assert listed_ids(api, status="cancelled") == [spread["e"]["id"]]
    assert listed_ids(api, status="completed") == []


def test_listing_filters_by_department(api: Api, spread: dict[str, Any]) -> None:
    assert listed_ids(api, departmentId=spread["other"]["id"]) == [
        spread["c"]["id"],
        spread["d"]["id"],
    ]
    assert listed_ids(api, departmentId=999_999) == []


def test_listing_filters_by_start_from_inclusive_to_exclusive(
    api: Api, spread: dict[str, Any]
) -> None:
    ids = {k: spread[k]["id"] for k in "abcde"}
    assert listed_ids(api, **{"from": "2026-02-01T09:00:00Z"}) == [
        ids["b"],
        ids["c"],
        ids["d"],
        ids["e"],
    ]
    assert listed_ids(api, to="2026-02-01T09:00:00Z") == [ids["a"]]
    assert listed_ids(api, **{"from": "2026-02-01T09:00:00Z", "to": "2026-02-01T10:00:00Z"}) == [
        ids["b"],
        ids["c"],
    ]
    # An offset in the filter is honoured: 10:00 in Paris is 09:00Z.
    assert listed_ids(
        api, **{"from": "2026-02-01T10:00:00+01:00", "to": "2026-02-01T11:00:00+01:00"}
    ) == [ids["b"], ids["c"]]


def test_listing_filters_combine(api: Api, spread: dict[str, Any]) -> None:
    assert listed_ids(
        api,
        status="validated",
        departmentId=spread["department"]["id"],
        **{"from": "2026-02-01T00:00:00Z"},
    ) == [spread["b"]["id"]]


def test_paginating_by_two_over_five_appointments_returns_each_exactly_once(
    api: Api, spread: dict[str, Any]
) -> None:
    pages = walk(api, "/appointments", 2)
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [item["id"] for page in pages for item in page] == [spread[k]["id"] for k in "abcde"]


def test_paginating_keeps_the_filters_applied_on_every_page(
    api: Api, spread: dict[str, Any]
) -> None:
    pages = walk(api, "/appointments", 1, status="pending")
    assert [item["id"] for page in pages for item in page] == [
        spread["a"]["id"],
        spread["c"]["id"],
    ]


def test_a_page_that_ends_exactly_on_the_last_item_has_no_next_cursor(
    api: Api, spread: dict[str, Any]
) -> None:
    pages = walk(api, "/appointments", 5)
    assert [len(page) for page in pages] == [5]


def test_an_appointment_booked_while_paginating_appears_on_a_later_page(
    api: Api, spread: dict[str, Any]
) -> None:
    first = api.get("/appointments", query_string={"limit": 2})
    late = booked(api, spread["department"]["id"], "2026-02-03T10:00:00")
    rest = walk(api, "/appointments", 2, cursor=first.json["nextCursor"])
    seen = [item["id"] for item in first.json["data"]] + [i["id"] for p in rest for i in p]
    assert seen == [*(spread[k]["id"] for k in "abcde"), late["id"]]


def test_an_appointments_history_is_paginated_oldest_first_and_a_later_change_follows(
    api: Api, department: dict[str, Any]
) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00")
    path = f"/appointments/{appointment['id']}/events"
    for n in range(5):
        assert (
            api.patch(f"/appointments/{appointment['id']}", {"notes": f"n{n}"}).status_code == 200
        )
    first = api.get(path, query_string={"limit": 4})
    assert first.status_code == 200
    assert first.json["hasMore"] is True
    assert api.post(f"/appointments/{appointment['id']}/validate").status_code == 200
    rest = walk(api, path, 4, cursor=first.json["nextCursor"])
    pages = [first.json["data"], *rest]
    assert [len(page) for page in pages] == [4, 3]
    events = [event for page in pages for event in page]
    assert [e["data"]["object"]["version"] for e in events] == list(range(1, 8))
    assert events[-1]["type"] == "appointment.validated"
    assert [e["type"] for e in walk(api, path, 50)[0]] == [e["type"] for e in events]


def test_a_history_cursor_is_the_history_lists_own(api: Api, department: dict[str, Any]) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00")
    path = f"/appointments/{appointment['id']}/events"
    for cursor in ("events.1", "appointments.1", "history.x"):
        refused = api.get(path, query_string={"cursor": cursor})
        assert refused.status_code == 422, cursor
        assert refused.json["errors"]
    assert api.get(path, query_string={"limit": 201}).status_code == 422
    past_the_end = api.get(path, query_string={"cursor": "history.ffffffffffffffff"})
    assert past_the_end.json["data"] == []
    assert api.get("/appointments/999999/events").status_code == 404


def test_get_answers_the_appointment_with_its_etag(api: Api, department: dict[str, Any]) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00")
    api.post(f"/appointments/{appointment['id']}/validate")
    response = api.get(f"/appointments/{appointment['id']}")
    assert response.status_code == 200
    assert response.headers["ETag"] == '"2"'


def test_a_missing_appointment_is_a_404(api: Api, department: dict[str, Any]) -> None:
    response = api.get("/appointments/999999")
    assert response.status_code == 404
    assert response.json["code"] == 404
    assert response.json["status"] == "Not Found"


# ---------------------------------------------------------------------------- events


def test_an_appointments_history_is_its_events_oldest_first_ending_in_its_current_state(
    api: Api, department: dict[str, Any]
) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00")
    api.patch(f"/appointments/{appointment['id']}", {"dateTime": "2026-02-01T11:00:00"})
    api.post(f"/appointments/{appointment['id']}/validate")
    api.post(f"/appointments/{appointment['id']}/complete")
    events = history(api, appointment["id"])
    assert [e["type"] for e in events] == [
        "appointment.created",
        "appointment.updated",
        "appointment.validated",
        "appointment.completed",
    ]
    assert [e["data"]["object"]["version"] for e in events] == [1, 2, 3, 4]
    assert [e["data"]["object"]["status"] for e in events] == [
        "pending",
        "pending",
        "validated",
        "completed",
    ]
    assert events[-1]["data"]["object"] == api.get(f"/appointments/{appointment['id']}").json
    for event in events:
        assert_envelope(event)


def test_an_appointments_history_only_holds_its_own_events(
    api: Api, department: dict[str, Any]
) -> None:
    mine = booked(api, department["id"], "2026-02-01T10:00:00")
    other = booked(api, department["id"], "2026-02-01T11:00:00")
    api.post(f"/appointments/{other['id']}/cancel")
    assert {e["data"]["object"]["id"] for e in history(api, mine["id"])} == {mine["id"]}


def test_a_missing_appointments_history_is_a_404(api: Api, department: dict[str, Any]) -> None:
    response = api.get("/appointments/999999/events")
    assert response.status_code == 404
    assert response.json["code"] == 404


@pytest.fixture
def busy(api: Api, department: dict[str, Any]) -> list[dict[str, Any]]:
    """Six events over two appointments, at least one of each appointment event type."""
    first = booked(api, department["id"], "2026-02-01T10:00:00")
    second = booked(api, department["id"], "2026-02-01T11:00:00")
    api.patch(f"/appointments/{first['id']}", {"name": "Renommé"})
    api.post(f"/appointments/{first['id']}/validate")
    api.post(f"/appointments/{second['id']}/cancel")
    api.post(f"/appointments/{first['id']}/complete")
    api.patch(f"/appointments/{second['id']}", {"name": "Trop tard"})  # refused: final
    return all_events(api)


def test_the_event_log_lists_every_event_oldest_first_in_the_v1_envelope(
    api: Api, busy: list[dict[str, Any]]
) -> None:
    assert [e["type"] for e in busy] == [
        "appointment.created",
        "appointment.created",
        "appointment.updated",
        "appointment.validated",
        "appointment.cancelled",
        "appointment.completed",
    ]
    assert len({e["id"] for e in busy}) == len(busy)
    assert [e["created"] for e in busy] == sorted(e["created"] for e in busy)
    for event in busy:
        assert_envelope(event)


def test_only_updates_carry_previous_attributes(api: Api, busy: list[dict[str, Any]]) -> None:
    updates = [e for e in busy if e["type"] == "appointment.updated"]
    assert [u["data"]["previousAttributes"] for u in updates] == [{"name": "Test"}]
    assert all("previousAttributes" not in e["data"] for e in busy if e not in updates)


@pytest.mark.parametrize(
    "event_type",
    [
        "appointment.created",
        "appointment.updated",
        "appointment.validated",
        "appointment.completed",
        "appointment.cancelled",
        "webhook.test",
    ],
)
def test_the_event_log_filters_by_type(
    api: Api, busy: list[dict[str, Any]], event_type: str
) -> None:
    expected = [e for e in busy if e["type"] == event_type]
    assert all_events(api, type=event_type) == expected


@pytest.mark.parametrize("limit", [1, 2, 3, 6])
def test_paginating_the_event_log_returns_each_event_exactly_once_in_order(
    api: Api, busy: list[dict[str, Any]], limit: int
) -> None:
    pages = walk(api, "/events", limit)
    assert [e for page in pages for e in page] == busy
    assert all(len(page) == limit for page in pages[:-1])


def test_paginating_the_event_log_by_type_returns_each_matching_event_once(
    api: Api, busy: list[dict[str, Any]]
) -> None:
    pages = walk(api, "/events", 1, type="appointment.created")
    assert [e for page in pages for e in page] == busy[:2]


def test_a_consumer_resuming_from_its_last_cursor_sees_only_newer_events(
    api: Api, department: dict[str, Any], busy: list[dict[str, Any]]
) -> None:
    caught_up = api.get("/events", query_string={"limit": len(busy)})
    cursor = caught_up.json["nextCursor"]
    assert cursor is None
    last_page = api.get("/events", query_string={"limit": len(busy) - 1}).json
    late = booked(api, department["id"], "2026-02-05T10:00:00")
    resumed = walk(api, "/events", 10, cursor=last_page["nextCursor"])
    assert [e["type"] for page in resumed for e in page] == [
        busy[-1]["type"],
        "appointment.created",
    ]
    assert resumed[-1][-1]["data"]["object"] == late


def test_an_event_is_readable_by_its_id(api: Api, busy: list[dict[str, Any]]) -> None:
    for event in busy:
        response = api.get(f"/events/{event['id']}")
        assert response.status_code == 200
        assert response.json == event


def test_a_missing_event_is_a_404(api: Api, busy: list[dict[str, Any]]) -> None:
    response = api.get("/events/evt_00000000000000000000000000")
    assert response.status_code == 404
    assert response.json["code"] == 404


# ---------------------------------------------------------------------------- idempotency


def test_repeating_a_booking_with_its_idempotency_key_replays_it_and_books_once(
    api: Api, department: dict[str, Any]
) -> None:
    body = {"departmentId": department["id"], "dateTime": "2026-02-01T10:00:00", "name": "Test"}
    first = api.post("/appointments", body, headers={"Idempotency-Key": "book-1"})
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    again = api.post(
        "/appointments", dict(reversed(body.items())), headers={"Idempotency-Key": "book-1"}
    )
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    assert again.headers["ETag"] == first.headers["ETag"]
    assert [a["id"] for a in api.get("/appointments").json["data"]] == [first.json["id"]]
    assert [e["type"] for e in all_events(api)] == ["appointment.created"]


def test_reusing_an_idempotency_key_with_another_body_is_a_422_and_writes_nothing(
    api: Api, department: dict[str, Any]
) -> None:
    body = {"departmentId": department["id"], "dateTime": "2026-02-01T10:00:00", "name": "Test"}
    first = api.post("/appointments", body, headers={"Idempotency-Key": "book-2"})
    assert first.status_code == 201
    other = {**body, "dateTime": "2026-02-01T10:30:00"}
    response = api.post("/appointments", other, headers={"Idempotency-Key": "book-2"})
    assert response.status_code == 422
    assert response.json["code"] == 422
    assert "Idempotency-Key" in response.json["errors"]
    assert [a["id"] for a in api.get("/appointments").json["data"]] == [first.json["id"]]
    assert len(all_events(api)) == 1


def test_reusing_an_idempotency_key_on_another_route_is_a_422_and_writes_nothing(
    api: Api, department: dict[str, Any]
) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00")
    path = f"/appointments/{appointment['id']}"
    first = api.post(f"{path}/validate", headers={"Idempotency-Key": "step-1"})
    assert first.status_code == 200
    response = api.post(f"{path}/cancel", headers={"Idempotency-Key": "step-1"})
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json["errors"]
    assert api.get(path).json["status"] == "validated"
    assert len(history(api, appointment["id"])) == 2


def test_different_idempotency_keys_book_separately(api: Api) -> None:
    department = api.post(
        "/departments", {"name": "Labo", "timezone": "Europe/Paris", "capacity": 2}
    ).json
    body = {"departmentId": department["id"], "dateTime": "2026-02-01T10:00:00", "name": "Test"}
    one = api.post("/appointments", body, headers={"Idempotency-Key": "k-1"})
    two = api.post("/appointments", body, headers={"Idempotency-Key": "k-2"})
    assert one.json["id"] != two.json["id"]
    assert len(all_events(api)) == 2


def test_repeating_a_cancellation_with_its_idempotency_key_replays_it_and_cancels_once(
    api: Api, department: dict[str, Any]
) -> None:
    appointment = booked(api, department["id"], "2026-02-01T10:00:00")
    path = f"/appointments/{appointment['id']}/cancel"
    first = api.post(path, {"reason": "Malade"}, headers={"Idempotency-Key": "cancel-1"})
    again = api.post(path, {"reason": "Malade"}, headers={"Idempotency-Key": "cancel-1"})
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    assert [e["type"] for e in history(api, appointment["id"])] == [
        "appointment.created",
        "appointment.cancelled",
    ]
