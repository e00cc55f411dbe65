"""Another organization's resources are 404 like missing ones, untouchable and never listed."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import Api

MISSING = {"department": 999_999, "appointment": 999_999, "event": "evt_0000000000zzzzzzzzzzzzzz"}
TABLES = ("appointments", "events", "departments", "idempotency_keys")


def table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def book(api: Api, department_id: int, date_time: str, name: str = "Test") -> dict[str, Any]:
    response = api.post(
        "/appointments", {"departmentId": department_id, "dateTime": date_time, "name": name}
    )
    assert response.status_code == 201, response.json
    body: dict[str, Any] = response.json
    return body


def everything(api: Api) -> dict[str, Any]:
    """All an organization can read: its lists and each appointment's history."""
    lists = {
        path: api.get(path, query_string={"limit": 200}).json["data"]
        for path in ("/departments", "/appointments", "/events")
    }
    histories = {
        a["id"]: api.get(f"/appointments/{a['id']}/events").json["data"]
        for a in lists["/appointments"]
    }
    return {**lists, "histories": histories}


@pytest.fixture
def foreign(api: Api, other_api: Api) -> dict[str, Any]:
    """The other organization's department, appointments and events, interleaved with ours."""
    ours = api.post("/departments", {"name": "Radiologie", "timezone": "Europe/Paris"}).json
    theirs = other_api.post(
        "/departments", {"name": "Leur radiologie", "timezone": "Europe/Paris"}
    ).json
    book(api, ours["id"], "2026-02-01T09:00:00", "Nous")
    pending = book(other_api, theirs["id"], "2026-02-01T10:00:00", "Eux")
    book(api, ours["id"], "2026-02-01T10:00:00", "Nous encore")
    validated = book(other_api, theirs["id"], "2026-02-01T11:00:00", "Eux encore")
    assert other_api.post(f"/appointments/{validated['id']}/validate").status_code == 200
    book(api, ours["id"], "2026-02-01T11:00:00", "Nous toujours")
    event = other_api.get(f"/appointments/{pending['id']}/events").json["data"][0]
    return {
        "ours": ours,
        "department": theirs["id"],
        "appointment": pending["id"],
        "validated": validated["id"],
        "event": event["id"],
    }


# (method, path, body, extra headers); each path names the foreign resource it reaches.
ROUTES: list[Any] = [
    pytest.param("GET", "/departments/{department}", None, {}, id="get-department"),
    pytest.param("GET", "/appointments/{appointment}", None, {}, id="get-appointment"),
    pytest.param(
        "PATCH", "/appointments/{appointment}", {"name": "Intrus"}, {}, id="change-contact"
    ),
    pytest.param(
        "PATCH",
        "/appointments/{appointment}",
        {"dateTime": "2026-02-01T12:00:00"},
        {},
        id="reschedule",
    ),
    pytest.param(
        "PATCH",
        "/appointments/{appointment}",
        {"name": "Intrus"},
        {"If-Match": '"1"'},
        id="change-with-current-if-match",
    ),
    pytest.param(
        "PATCH",
        "/appointments/{appointment}",
        {"name": "Intrus"},
        {"If-Match": '"7"'},
        id="change-with-stale-if-match",
    ),
    pytest.param("POST", "/appointments/{appointment}/validate", None, {}, id="validate"),
    pytest.param("POST", "/appointments/{validated}/complete", None, {}, id="complete"),
    pytest.param(
        "POST", "/appointments/{appointment}/cancel", {"reason": "Intrus"}, {}, id="cancel"
    ),
    pytest.param(
        "POST",
        "/appointments/{appointment}/cancel",
        None,
        {"Idempotency-Key": "intrus-1"},
        id="cancel-with-idempotency-key",
    ),
    pytest.param("GET", "/appointments/{appointment}/events", None, {}, id="history"),
    pytest.param("GET", "/events/{event}", None, {}, id="get-event"),
]


def _missing_ids() -> dict[str, Any]:
    return {**MISSING, "validated": MISSING["appointment"]}


def _placeholder(path: str) -> str:
    match = re.search(r"\{(\w+)\}", path)
    assert match
    return match.group(1)


@pytest.mark.parametrize(("method", "path", "body", "headers"), ROUTES)
def test_another_organizations_id_is_a_404_exactly_like_a_missing_id_and_changes_nothing(
    api: Api,
    other_api: Api,
    engine: Engine,
    foreign: dict[str, Any],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
) -> None:
    theirs_before = everything(other_api)
    ours_before = everything(api)
    counts_before = table_counts(engine)

    refused = api._call(method, path.format(**foreign), json=body, headers=headers)
    missing = api._call(method, path.format(**_missing_ids()), json=body, headers=headers)

    assert refused.status_code == missing.status_code == 404
    assert refused.mimetype == missing.mimetype == "application/json"
    assert set(refused.json) == set(missing.json) == {"code", "status", "message"}
    name = _placeholder(path)
    expected = json.dumps(missing.json).replace(str(_missing_ids()[name]), str(foreign[name]))
    assert refused.json == json.loads(expected)
    assert "ETag" not in refused.headers

    assert table_counts(engine) == counts_before
    assert everything(other_api) == theirs_before
    assert everything(api) == ours_before


def test_every_route_with_an_id_has_a_tenancy_case(app: Flask) -> None:
    arguments = {
        "department": "department_id",
        "appointment": "appointment_id",
        "validated": "appointment_id",
        "event": "event_id",
    }
    covered = set()
    for param in ROUTES:
        method, path = param.values[0], param.values[1]
        name = _placeholder(path)
        covered.add((method, "/api/v1" + path.replace(f"{{{name}}}", f"<{arguments[name]}>")))
    prefixes = ("/api/v1/departments", "/api/v1/appointments", "/api/v1/events")
    routes = {
        (method, re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"<\1>", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(prefixes) and rule.arguments
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert len(routes) >= 8
    assert routes - covered == set(), "routes without a tenancy case"


def test_booking_in_another_organizations_department_is_the_same_422_as_an_unknown_one(
    api: Api, other_api: Api, engine: Engine, foreign: dict[str, Any]
) -> None:
    counts_before = table_counts(engine)
    theirs_before = everything(other_api)
    body = {"dateTime": "2026-02-01T14:00:00", "name": "Intrus"}
    refused = api.post("/appointments", {**body, "departmentId": foreign["department"]})
    unknown = api.post("/appointments", {**body, "departmentId": MISSING["department"]})
    assert refused.status_code == unknown.status_code == 422
    assert set(refused.json["errors"]) == {"departmentId"}
    expected = json.dumps(unknown.json).replace(
        str(MISSING["department"]), str(foreign["department"])
    )
    assert refused.json == json.loads(expected)
    assert table_counts(engine) == counts_before
    assert everything(other_api) == theirs_before


def test_lists_never_show_another_organizations_resources(
    api: Api, other_api: Api, foreign: dict[str, Any]
) -> None:
    ours = everything(api)
    theirs = everything(other_api)
    assert [d["name"] for d in ours["/departments"]] == ["Radiologie"]
    assert [a["name"] for a in ours["/appointments"]] == ["Nous", "Nous encore", "Nous toujours"]
    assert [a["name"] for a in theirs["/appointments"]] == ["Eux", "Eux encore"]
    our_appointments = {a["id"] for a in ours["/appointments"]}
    assert {e["data"]["object"]["id"] for e in ours["/events"]} == our_appointments
    assert not {e["id"] for e in ours["/events"]} & {e["id"] for e in theirs["/events"]}
    assert len(ours["/events"]) == 3
    assert [e["type"] for e in theirs["/events"]] == [
        "appointment.created",
        "appointment.created",
        "appointment.validated",
    ]


@pytest.mark.parametrize(
    "query",
    [
        {"departmentId": "{department}"},
        {"type": "appointment.validated"},
        {"status": "validated"},
    ],
)
def test_filters_never_reach_another_organizations_resources(
    api: Api, foreign: dict[str, Any], query: dict[str, str]
) -> None:
    params = {k: v.format(**foreign) for k, v in query.items()}
    path = "/events" if "type" in params else "/appointments"
    response = api.get(path, query_string=params)
    assert response.status_code == 200
    assert response.json["data"] == []
    assert response.json["nextCursor"] is None


def encode_cursor(kind: str, after: int) -> str:
    return f"{kind}.{after:x}"


@pytest.mark.parametrize("path", ["/departments", "/appointments", "/events"])
def test_another_organizations_cursor_only_pages_through_our_own_resources(
    api: Api, other_api: Api, foreign: dict[str, Any], path: str
) -> None:
    ours = [item["id"] for item in api.get(path, query_string={"limit": 200}).json["data"]]
    theirs = [item["id"] for item in other_api.get(path, query_string={"limit": 200}).json["data"]]
    cursor = other_api.get(path, query_string={"limit": 1}).json["nextCursor"]
    if cursor is None:  # they have a single department: take a cursor from a crafted start
        cursor = encode_cursor(path.strip("/"), 0)
    seen: list[Any] = []
    while cursor:
        response = api.get(path, query_string={"limit": 1, "cursor": cursor})
        assert response.status_code == 200, response.json
        seen += [item["id"] for item in response.json["data"]]
        cursor = response.json["nextCursor"]
        assert len(seen) <= len(ours)
    assert seen
    assert not set(seen) & set(theirs)
    assert set(seen) <= set(ours)


@pytest.mark.parametrize("path", ["/departments", "/appointments", "/events"])
def test_a_cursor_from_the_very_start_lists_only_our_resources(
    api: Api, other_api: Api, foreign: dict[str, Any], path: str
) -> None:
    theirs = [item["id"] for item in other_api.get(path, query_string={"limit": 200}).json["data"]]
    ours = [item["id"] for item in api.get(path, query_string={"limit": 200}).json["data"]]
    response = api.get(path, query_string={"cursor": encode_cursor(path.strip("/"), 0)})
    assert response.status_code == 200
    listed = [item["id"] for item in response.json["data"]]
    assert listed == ours
    assert not set(listed) & set(theirs)


def test_an_idempotency_key_of_another_organization_replays_nothing_for_us(
    api: Api, other_api: Api, foreign: dict[str, Any]
) -> None:
    body = {"departmentId": foreign["department"], "dateTime": "2026-02-02T10:00:00", "name": "E"}
    theirs = other_api.post("/appointments", body, headers={"Idempotency-Key": "shared-key"})
    assert theirs.status_code == 201
    ours_body = {**body, "departmentId": foreign["ours"]["id"]}
    ours = api.post("/appointments", ours_body, headers={"Idempotency-Key": "shared-key"})
    assert ours.status_code == 201
    assert "Idempotent-Replayed" not in ours.headers
    assert ours.json["departmentId"] == foreign["ours"]["id"]


def test_the_same_key_and_body_from_two_organizations_are_two_requests(
    api: Api, other_api: Api
) -> None:
    ours = api.post(
        "/departments",
        {"name": "Même nom", "timezone": "Europe/Paris"},
        headers={"Idempotency-Key": "k"},
    )
    theirs = other_api.post(
        "/departments",
        {"name": "Même nom", "timezone": "Europe/Paris"},
        headers={"Idempotency-Key": "k"},
    )
    assert ours.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs.headers
    assert ours.json["id"] != theirs.json["id"]
    assert [d["id"] for d in other_api.get("/departments").json["data"]] == [theirs.json["id"]]
