"""Bad input anywhere is a 4xx in the common error shape, and writes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Engine

from moncreneau.app import create_app
from moncreneau.auth import keys
from tests.conftest import Api, make_settings, new_organization

Ids = dict[str, int]
Body = Callable[[Ids], Any]

TABLES = ("appointments", "events", "departments")


def snapshot(engine: Engine) -> dict[str, Any]:
    """Row counts of the tables a request could write, and each appointment's state."""
    with engine.connect() as conn:
        state: dict[str, Any] = {
            table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in TABLES
        }
        state["appointment_versions"] = [
            tuple(row)
            for row in conn.execute(
                text("SELECT id, version, status FROM appointments ORDER BY id")
            )
        ]
    return state


@contextmanager
def writes_nothing(engine: Engine) -> Iterator[None]:
    before = snapshot(engine)
    yield
    assert snapshot(engine) == before


def assert_error(response: Any, code: int, field: str | None = None) -> dict[str, Any]:
    """The common error shape: `{"code", "status", "message", "errors"?}`."""
    assert response.status_code == code, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.json
    assert {"code", "status", "message"} <= set(body) <= {"code", "status", "message", "errors"}
    assert body["code"] == code
    assert body["status"] == HTTPStatus(code).phrase
    assert isinstance(body["message"], str) and body["message"]
    if "errors" in body:
        assert isinstance(body["errors"], dict) and body["errors"]
        assert all(isinstance(messages, list) for messages in body["errors"].values())
    if field is not None:
        assert field in body.get("errors", {}), body
    return body


def seed(api: Api) -> Ids:
    """A department with a pending and a validated appointment."""
    department = api.post(
        "/departments",
        {"name": "Radiologie", "timezone": "Europe/Paris", "slotMinutes": 30, "capacity": 1},
    ).json["id"]
    pending = api.post(
        "/appointments",
        {"departmentId": department, "dateTime": "2026-02-01T10:00:00", "name": "Test"},
    ).json["id"]
    validated = api.post(
        "/appointments",
        {"departmentId": department, "dateTime": "2026-02-01T10:30:00", "name": "Test"},
    ).json["id"]
    assert api.post(f"/appointments/{validated}/validate").status_code == 200
    return {"department": department, "pending": pending, "validated": validated}


@pytest.fixture
def ids(api: Api) -> Ids:
    return seed(api)


# Every route that takes a body, with a body it would accept.
WRITE_ROUTES: list[Any] = [
    pytest.param(
        "POST",
        "/departments",
        lambda i: {"name": "Cardiologie", "timezone": "Europe/Paris"},
        id="create-department",
    ),
    pytest.param(
        "POST",
        "/appointments",
        lambda i: {
            "departmentId": i["department"],
            "dateTime": "2026-02-02T10:00:00",
            "name": "Test",
        },
        id="book",
    ),
    pytest.param(
        "PATCH", "/appointments/{pending}", lambda i: {"name": "Nouveau nom"}, id="change"
    ),
    pytest.param("POST", "/appointments/{pending}/validate", lambda i: {}, id="validate"),
    pytest.param("POST", "/appointments/{validated}/complete", lambda i: {}, id="complete"),
    pytest.param(
        "POST", "/appointments/{pending}/cancel", lambda i: {"reason": "ill"}, id="cancel"
    ),
]


def send(api: Api, method: str, path: str, ids: Ids, **kwargs: Any) -> Any:
    return api._call(method, path.format(**ids), **kwargs)


# ---------------------------------------------------------------------------- invalid fields

INVALID_BODIES: list[Any] = [
    pytest.param(
        "/departments", lambda i: {"timezone": "Europe/Paris"}, "name", id="department-no-name"
    ),
    pytest.param("/departments", lambda i: {"name": "R"}, "timezone", id="department-no-timezone"),
    pytest.param("/departments", lambda i: {}, "name", id="department-empty-object"),
    pytest.param(
        "/departments",
        lambda i: {"name": None, "timezone": "Europe/Paris"},
        "name",
        id="department-null-name",
    ),
    pytest.param(
        "/departments",
        lambda i: {"name": "   ", "timezone": "Europe/Paris"},
        "name",
        id="department-blank-name",
    ),
    pytest.param(
        "/departments",
        lambda i: {"name": "R", "timezone": "Europe/Paris", "slotMinutes": "30"},
        "slotMinutes",
        id="string-for-int-slotMinutes",
    ),
    pytest.param(
        "/departments",
        lambda i: {"name": "R", "timezone": "Europe/Paris", "capacity": "2"},
        "capacity",
        id="string-for-int-capacity",
    ),
    pytest.param(
        "/departments",
        lambda i: {"name": "R", "timezone": "Europe/Paris", "capacity": True},
        "capacity",
        id="bool-for-int-capacity",
    ),
    pytest.param(
        "/departments",
        lambda i: {"name": "R", "timezone": "Europe/Paris", "slotMinutes": False},
        "slotMinutes",
        id="bool-for-int-slotMinutes",
    ),
    pytest.param(
        "/departments",
        lambda i: {"name": "R", "timezone": "Europe/Paris", "capacity": 1.5},
        "capacity",
        id="fraction-for-int-capacity",
    ),
    pytest.param(
        "/departments",
        lambda i: {"name": "R", "timezone": "Europe/Paris", "capacity": 0},
        "capacity",
        id="zero-capacity",
    ),
    pytest.param(
        "/departments",
        lambda i: {"name": 42, "timezone": "Europe/Paris"},
        "name",
        id="number-for-string-name",
    ),
    pytest.param(
        "/departments",
        lambda i: {"name": "R", "timezone": 1},
        "timezone",
        id="number-for-string-timezone",
    ),
    pytest.param(
        "/appointments",
        lambda i: {"dateTime": "2026-02-02T10:00:00", "name": "Test"},
        "departmentId",
        id="booking-no-departmentId",
    ),
    pytest.param(
        "/appointments",
        lambda i: {"departmentId": i["department"], "name": "Test"},
        "dateTime",
        id="booking-no-dateTime",
    ),
    pytest.param(
        "/appointments",
        lambda i: {"departmentId": i["department"], "dateTime": "2026-02-02T10:00:00"},
        "name",
        id="booking-no-name",
    ),
    pytest.param(
        "/appointments",
        lambda i: {"departmentId": i["department"], "dateTime": None, "name": "Test"},
        "dateTime",
        id="booking-null-dateTime",
    ),
    pytest.param(
        "/appointments",
        lambda i: {
            "departmentId": str(i["department"]),
            "dateTime": "2026-02-02T10:00:00",
            "name": "Test",
        },
        "departmentId",
        id="string-for-int-departmentId",
    ),
    pytest.param(
        "/appointments",
        lambda i: {"departmentId": True, "dateTime": "2026-02-02T10:00:00", "name": "Test"},
        "departmentId",
        id="bool-for-int-departmentId",
    ),
    pytest.param(
        "/appointments",
        lambda i: {
            "departmentId": i["department"],
            "dateTime": "2026-02-02T10:00:00",
            "name": "Test",
            "durationMinutes": "30",
        },
        "durationMinutes",
        id="string-for-int-durationMinutes",
    ),
    pytest.param(
        "/appointments",
        lambda i: {
            "departmentId": i["department"],
            "dateTime": "2026-02-02T10:00:00",
            "name": "Test",
            "durationMinutes": True,
        },
        "durationMinutes",
        id="bool-for-int-durationMinutes",
    ),
    pytest.param(
        "/appointments",
        lambda i: {"departmentId": i["department"], "dateTime": "2026-02-02T10:00:00", "name": 5},
        "name",
        id="number-for-string-name",
    ),
    pytest.param(
        "/appointments",
        lambda i: {"departmentId": i["department"], "dateTime": 1769936400, "name": "Test"},
        "dateTime",
        id="number-for-string-dateTime",
    ),
    pytest.param(
        "/appointments",
        lambda i: {
            "departmentId": i["department"],
            "dateTime": "2026-02-02T10:00:00",
            "name": "Test",
            "notes": 12,
        },
        "notes",
        id="number-for-string-notes",
    ),
    pytest.param(
        "/appointments",
        lambda i: {"departmentId": i["department"], "dateTime": "tomorrow", "name": "Test"},
        "dateTime",
        id="not-a-dateTime",
    ),
    pytest.param(
        "/appointments",
        lambda i: {
            "departmentId": i["department"],
            "dateTime": "2026-02-02T10:00:00",
            "name": "Test",
            "email": "not-an-email",
        },
        "email",
        id="not-an-email",
    ),
]


@pytest.mark.parametrize(("path", "body", "field"), INVALID_BODIES)
def test_a_missing_or_mistyped_field_is_a_422_naming_it_and_writes_nothing(
    api: Api, engine: Engine, ids: Ids, path: str, body: Body, field: str
) -> None:
    with writes_nothing(engine):
        response = api.post(path, body(ids))
    assert_error(response, 422, field)


INVALID_CHANGES: list[Any] = [
    pytest.param({"name": ""}, "name", id="empty-name"),
    pytest.param({"name": None}, "name", id="null-name"),
    pytest.param({"name": 7}, "name", id="number-for-string-name"),
    pytest.param({"durationMinutes": "45"}, "durationMinutes", id="string-for-int"),
    pytest.param({"durationMinutes": True}, "durationMinutes", id="bool-for-int"),
    pytest.param({"dateTime": "soon"}, "dateTime", id="not-a-dateTime"),
    pytest.param({"status": "validated"}, "status", id="status-is-not-writable"),
    pytest.param({"version": 9}, "version", id="version-is-not-writable"),
]


@pytest.mark.parametrize(("body", "field"), INVALID_CHANGES)
def test_an_invalid_change_is_a_422_naming_the_field_and_writes_nothing(
    api: Api, engine: Engine, ids: Ids, body: dict[str, Any], field: str
) -> None:
    with writes_nothing(engine):
        response = api.patch(f"/appointments/{ids['pending']}", body)
    assert_error(response, 422, field)


def test_the_cancellation_reason_must_be_a_string(api: Api, engine: Engine, ids: Ids) -> None:
    with writes_nothing(engine):
        response = api.post(f"/appointments/{ids['pending']}/cancel", {"reason": 5})
    assert_error(response, 422, "reason")


@pytest.mark.parametrize(("method", "path", "body"), WRITE_ROUTES)
def test_an_unknown_field_is_a_422_naming_it_and_writes_nothing(
    api: Api, engine: Engine, ids: Ids, method: str, path: str, body: Body
) -> None:
    with writes_nothing(engine):
        response = send(api, method, path, ids, json={**body(ids), "colour": "blue"})
    assert_error(response, 422, "colour")


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param([], id="array"),
        pytest.param("text", id="string"),
        pytest.param(None, id="null"),
    ],
)
def test_a_json_body_that_is_not_an_object_is_a_422(
    api: Api, engine: Engine, ids: Ids, payload: Any
) -> None:
    with writes_nothing(engine):
        response = api.post(
            "/appointments", data=json.dumps(payload), content_type="application/json"
        )
    assert_error(response, 422)


# ---------------------------------------------------------------------------- semantic rules


def test_booking_in_an_unknown_department_is_a_422_on_departmentId(
    api: Api, engine: Engine, ids: Ids
) -> None:
    with writes_nothing(engine):
        response = api.post(
            "/appointments",
            {"departmentId": 999_999, "dateTime": "2026-02-02T10:00:00", "name": "Test"},
        )
    assert_error(response, 422, "departmentId")


def test_booking_in_another_organizations_department_is_the_same_422_as_an_unknown_one(
    api: Api, other_api: Api, engine: Engine, ids: Ids
) -> None:
    foreign = other_api.post("/departments", {"name": "Ailleurs", "timezone": "Europe/Paris"})
    foreign_id = foreign.json["id"]
    missing_id = 999_999
    with writes_nothing(engine):
        refused = api.post(
            "/appointments",
            {"departmentId": foreign_id, "dateTime": "2026-02-02T10:00:00", "name": "Test"},
        )
        unknown = api.post(
            "/appointments",
            {"departmentId": missing_id, "dateTime": "2026-02-02T10:00:00", "name": "Test"},
        )
    assert_error(refused, 422, "departmentId")
    assert_error(unknown, 422, "departmentId")
    expected = json.loads(json.dumps(unknown.json).replace(str(missing_id), str(foreign_id)))
    assert refused.json == expected


@pytest.mark.parametrize(
    "zone",
    ["Mars/Olympus_Mons", "europe/paris", "Paris", "+01:00", "CEST", "", "localtime"],
)
def test_a_department_in_a_zone_that_is_not_an_iana_name_is_a_422_on_timezone(
    api: Api, engine: Engine, ids: Ids, zone: str
) -> None:
    with writes_nothing(engine):
        response = api.post("/departments", {"name": "Radiologie", "timezone": zone})
    assert_error(response, 422, "timezone")


def test_booking_a_local_time_skipped_by_the_spring_dst_change_is_a_422_on_dateTime(
    api: Api, engine: Engine, ids: Ids
) -> None:
    with writes_nothing(engine):
        response = api.post(
            "/appointments",
            {"departmentId": ids["department"], "dateTime": "2026-03-29T02:30:00", "name": "T"},
        )
    assert_error(response, 422, "dateTime")


def test_rescheduling_to_a_local_time_skipped_by_the_spring_dst_change_is_a_422_on_dateTime(
    api: Api, engine: Engine, ids: Ids
) -> None:
    with writes_nothing(engine):
        response = api.patch(f"/appointments/{ids['pending']}", {"dateTime": "2026-03-29T02:30:00"})
    assert_error(response, 422, "dateTime")


@pytest.mark.parametrize(
    "date_time",
    [
        "2026-02-02T10:15:00",
        "2026-02-02T10:00:30",
        "2026-02-02T10:00:00.500",
        "2026-02-02T09:10:00Z",
        "2026-02-02T10:00:00+00:45",
    ],
)
def test_a_dateTime_off_the_slot_grid_is_a_422_on_dateTime(
    api: Api, engine: Engine, ids: Ids, date_time: str
) -> None:
    with writes_nothing(engine):
        booked = api.post(
            "/appointments",
            {"departmentId": ids["department"], "dateTime": date_time, "name": "Test"},
        )
        moved = api.patch(f"/appointments/{ids['pending']}", {"dateTime": date_time})
    assert_error(booked, 422, "dateTime")
    assert_error(moved, 422, "dateTime")


# ---------------------------------------------------------------------------- transport


@pytest.mark.parametrize(("method", "path", "body"), WRITE_ROUTES)
def test_malformed_json_is_a_400_and_writes_nothing(
    api: Api, engine: Engine, ids: Ids, method: str, path: str, body: Body
) -> None:
    with writes_nothing(engine):
        response = send(
            api, method, path, ids, data='{"name": "x",', content_type="application/json"
        )
    assert_error(response, 400)


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("application/x-www-form-urlencoded", id="curl-default-form"),
        pytest.param("text/plain", id="text"),
        pytest.param("multipart/form-data; boundary=xyz", id="multipart"),
    ],
)
@pytest.mark.parametrize(("method", "path", "body"), WRITE_ROUTES)
def test_a_body_that_is_not_sent_as_json_is_a_415_and_writes_nothing(
    api: Api,
    engine: Engine,
    ids: Ids,
    method: str,
    path: str,
    body: Body,
    content_type: str,
) -> None:
    with writes_nothing(engine):
        response = send(
            api, method, path, ids, data=json.dumps(body(ids)), content_type=content_type
        )
    assert_error(response, 415)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="no-body"),
        pytest.param({"data": "", "content_type": "application/json"}, id="empty-json-body"),
    ],
)
def test_an_empty_booking_is_a_422_naming_every_required_field(
    api: Api, engine: Engine, ids: Ids, kwargs: dict[str, Any]
) -> None:
    with writes_nothing(engine):
        response = api.post("/appointments", **kwargs)
    body = assert_error(response, 422)
    assert {"departmentId", "dateTime", "name"} <= set(body["errors"])


# ---------------------------------------------------------------------------- lists

LISTS = ["/departments", "/appointments", "/events"]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "%%%",
        "eyJrIjoiZXZlbnRzIiwiYSI6MX0",  # {"k":"events","a":1}: an older format
        "events.",  # no position
        "nope.1",  # another kind of list
        "appointments.x",  # not a hex position
        "departments.1\n",
        "events.11111111111111111",  # more than 64 bits
    ],
)
def test_an_invalid_cursor_is_a_422_on_cursor(api: Api, ids: Ids, path: str, cursor: str) -> None:
    response = api.get(path, query_string={"cursor": cursor})
    assert_error(response, 422, "cursor")


def test_a_cursor_of_one_list_is_refused_by_another(api: Api, ids: Ids) -> None:
    cursor = api.get("/appointments", query_string={"limit": 1}).json["nextCursor"]
    assert cursor
    assert_error(api.get("/events", query_string={"cursor": cursor}), 422, "cursor")
    assert_error(api.get("/departments", query_string={"cursor": cursor}), 422, "cursor")


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("limit", ["0", "201", "-1", "ten", "1.5", ""])
def test_a_limit_outside_1_to_200_is_a_422_on_limit(
    api: Api, ids: Ids, path: str, limit: str
) -> None:
    response = api.get(path, query_string={"limit": limit})
    assert_error(response, 422, "limit")


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("limit", ["1", "200"])
def test_the_limits_1_and_200_are_accepted(api: Api, ids: Ids, path: str, limit: str) -> None:
    assert api.get(path, query_string={"limit": limit}).status_code == 200


@pytest.mark.parametrize("status", ["bogus", "PENDING", "canceled", ""])
def test_an_unknown_status_filter_is_a_422_on_status(api: Api, ids: Ids, status: str) -> None:
    assert_error(api.get("/appointments", query_string={"status": status}), 422, "status")


@pytest.mark.parametrize(
    ("name", "value"),
    [("departmentId", "radiologie"), ("from", "yesterday"), ("to", "2026-13-01T00:00:00")],
)
def test_an_unreadable_appointment_filter_is_a_422_naming_it(
    api: Api, ids: Ids, name: str, value: str
) -> None:
    assert_error(api.get("/appointments", query_string={name: value}), 422, name)


def test_an_unknown_event_type_filter_is_a_422_on_type(api: Api, ids: Ids) -> None:
    assert_error(api.get("/events", query_string={"type": "appointment.deleted"}), 422, "type")


# ---------------------------------------------------------------------------- routing


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nothing-here",
        "/api/v1/appointments/not-a-number",
        "/api/v1/appointments/1/reopen",
        "/api/v2/appointments",
        "/nothing-here",
    ],
)
def test_an_unknown_route_is_a_404_in_the_error_shape(
    api: Api, engine: Engine, ids: Ids, path: str
) -> None:
    with writes_nothing(engine):
        response = api.client.get(path, headers={"X-API-Key": api.key})
        posted = api.client.post(path, json={"name": "x"}, headers={"X-API-Key": api.key})
    assert_error(response, 404)
    assert_error(posted, 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/departments", {"GET", "POST"}),
        ("PUT", "/departments/{department}", {"GET"}),
        ("DELETE", "/appointments", {"GET", "POST"}),
        ("PUT", "/appointments/{pending}", {"GET", "PATCH"}),
        ("DELETE", "/appointments/{pending}", {"GET", "PATCH"}),
        ("GET", "/appointments/{pending}/validate", {"POST"}),
        ("PATCH", "/appointments/{pending}/cancel", {"POST"}),
        ("POST", "/appointments/{pending}/events", {"GET"}),
        ("POST", "/events", {"GET"}),
    ],
)
def test_a_wrong_method_is_a_405_with_an_allow_header(
    api: Api, engine: Engine, ids: Ids, method: str, path: str, allowed: set[str]
) -> None:
    with writes_nothing(engine):
        response = send(api, method, path, ids, json={"name": "x"})
    assert_error(response, 405)
    advertised = {m.strip() for m in response.headers["Allow"].split(",")}
    assert allowed <= advertised
    assert method not in advertised


# ---------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("headers", [pytest.param({}, id="no-header"), {"X-API-Key": ""}])
def test_a_request_without_an_api_key_is_a_401_and_writes_nothing(
    api: Api, engine: Engine, ids: Ids, headers: dict[str, str]
) -> None:
    with writes_nothing(engine):
        listed = api.client.get("/api/v1/appointments", headers=headers)
        booked = api.client.post(
            "/api/v1/appointments",
            json={
                "departmentId": ids["department"],
                "dateTime": "2026-02-02T10:00:00",
                "name": "T",
            },
            headers=headers,
        )
        cancelled = api.client.post(
            f"/api/v1/appointments/{ids['pending']}/cancel", headers=headers
        )
    for response in (listed, booked, cancelled):
        assert_error(response, 401)


@pytest.mark.parametrize(
    "key",
    [
        "not-a-key",
        "mck_zzzzzzzz_" + "A" * 32,
        "mck__",
        "Bearer mck_zzzzzzzz_x",
    ],
)
def test_an_unknown_api_key_is_a_401_and_writes_nothing(
    api: Api, engine: Engine, ids: Ids, key: str
) -> None:
    with writes_nothing(engine):
        listed = api.client.get("/api/v1/departments", headers={"X-API-Key": key})
        created = api.client.post(
            "/api/v1/departments",
            json={"name": "Cardiologie", "timezone": "Europe/Paris"},
            headers={"X-API-Key": key},
        )
    assert_error(listed, 401)
    assert_error(created, 401)


def test_a_key_with_a_real_prefix_but_a_wrong_secret_is_a_401(
    api: Api, engine: Engine, ids: Ids, org: dict[str, Any]
) -> None:
    forged = f"{org['keyPrefix']}_{'x' * 32}"
    assert forged != api.key
    with writes_nothing(engine):
        response = api.client.post(
            f"/api/v1/appointments/{ids['pending']}/validate", headers={"X-API-Key": forged}
        )
    assert_error(response, 401)


def test_a_revoked_api_key_is_a_401_and_writes_nothing(
    app: Flask, api: Api, engine: Engine, ids: Ids, org: dict[str, Any]
) -> None:
    assert api.get("/departments").status_code == 200
    with app.extensions["moncreneau"].sessions() as db:
        keys.revoke(db, org["keyPrefix"])
        db.commit()
    with writes_nothing(engine):
        listed = api.get("/departments")
        created = api.post("/departments", {"name": "Cardiologie", "timezone": "Europe/Paris"})
        validated = api.post(f"/appointments/{ids['pending']}/validate")
    for response in (listed, created, validated):
        assert_error(response, 401)


# ---------------------------------------------------------------------------- size limit


@pytest.fixture
def small_app(database_url: str) -> Iterator[Flask]:
    application = create_app(make_settings(database_url, max_body_bytes=2048))
    yield application
    application.extensions["moncreneau"].sessions.kw["bind"].dispose()


@pytest.fixture
def small_api(small_app: Flask) -> Api:
    return Api(small_app.test_client(), new_organization(small_app)["apiKey"])


@pytest.mark.parametrize(("method", "path", "body"), WRITE_ROUTES)
def test_a_body_over_the_size_limit_is_a_413_and_writes_nothing(
    small_app: Flask, small_api: Api, method: str, path: str, body: Body
) -> None:
    engine: Engine = small_app.extensions["moncreneau"].sessions.kw["bind"]
    ids = seed(small_api)
    oversized = {**body(ids), "notes": "n" * 4096}
    with writes_nothing(engine):
        response = send(small_api, method, path, ids, json=oversized)
    assert_error(response, 413)


def test_a_body_under_the_size_limit_is_accepted(small_api: Api) -> None:
    ids = seed(small_api)
    response = small_api.post(
        "/appointments",
        {
            "departmentId": ids["department"],
            "dateTime": "2026-02-02T10:00:00",
            "name": "Test",
            "notes": "n" * 1500,
        },
    )
    assert response.status_code == 201, response.json


# ---------------------------------------------------------------------------- edge values


@pytest.mark.parametrize(("method", "path", "body"), WRITE_ROUTES)
def test_deeply_nested_json_is_a_4xx_and_writes_nothing(
    api: Api, engine: Engine, ids: Ids, method: str, path: str, body: Body
) -> None:
    nested = "[" * 2_000 + "]" * 2_000  # 4 kB
    with writes_nothing(engine):
        response = send(api, method, path, ids, data=nested, content_type="application/json")
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    assert_error(response, response.status_code)


def with_a_huge_integer(body: dict[str, Any]) -> str:
    """The body, plus an integer of 5,000 digits: more than Python reads from a string."""
    rest = json.dumps(body)[1:]
    return '{"huge": ' + "9" * 5_000 + (", " + rest if body else "}")


@pytest.mark.parametrize(("method", "path", "body"), WRITE_ROUTES)
def test_an_integer_of_thousands_of_digits_is_a_400_and_writes_nothing(
    api: Api,
    engine: Engine,
    ids: Ids,
    method: str,
    path: str,
    body: Body,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with writes_nothing(engine):
        response = send(
            api,
            method,
            path,
            ids,
            data=with_a_huge_integer(body(ids)),
            content_type="application/json",
        )
    assert "4,300 digits" in assert_error(response, 400)["message"]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_huge_integer_does_not_use_up_the_idempotency_key(api: Api, engine: Engine) -> None:
    body = {"name": "Cardiologie", "timezone": "Europe/Paris"}
    key = {"Idempotency-Key": "huge-1"}
    with writes_nothing(engine):
        refused = api.post(
            "/departments",
            data=with_a_huge_integer(body),
            content_type="application/json",
            headers=key,
        )
    assert_error(refused, 400)
    assert api.post("/departments", body, headers=key).status_code == 201
    replayed = api.post("/departments", body, headers=key)
    assert replayed.headers["Idempotent-Replayed"] == "true"


def test_a_huge_integer_inside_a_string_is_only_text(api: Api) -> None:
    created = api.post("/departments", {"name": "9" * 5_000, "timezone": "Europe/Paris"})
    assert_error(created, 422, "name")


OUT_OF_RANGE_IDS = [2**31, 2**63]  # past PostgreSQL's integer, past SQLite's

ID_ROUTES: list[Any] = [
    pytest.param("GET", "/departments/{id}", None, id="get-department"),
    pytest.param("GET", "/appointments/{id}", None, id="get-appointment"),
    pytest.param("PATCH", "/appointments/{id}", {"name": "X"}, id="change"),
    pytest.param("POST", "/appointments/{id}/validate", None, id="validate"),
    pytest.param("POST", "/appointments/{id}/cancel", None, id="cancel"),
    pytest.param("GET", "/appointments/{id}/events", None, id="history"),
]


@pytest.mark.parametrize("big", OUT_OF_RANGE_IDS)
@pytest.mark.parametrize(("method", "path", "body"), ID_ROUTES)
def test_an_id_beyond_the_integer_range_is_a_404_like_any_missing_id(
    api: Api, engine: Engine, ids: Ids, method: str, path: str, body: Any, big: int
) -> None:
    with writes_nothing(engine):
        response = api._call(method, path.format(id=big), json=body)
    assert_error(response, 404)


@pytest.mark.parametrize("big", OUT_OF_RANGE_IDS)
def test_booking_in_a_department_id_beyond_the_integer_range_is_a_422_on_departmentId(
    api: Api, engine: Engine, ids: Ids, big: int
) -> None:
    with writes_nothing(engine):
        response = api.post(
            "/appointments",
            {"departmentId": big, "dateTime": "2026-02-02T10:00:00", "name": "Test"},
        )
    assert_error(response, 422, "departmentId")


@pytest.mark.parametrize("big", OUT_OF_RANGE_IDS)
def test_a_department_filter_beyond_the_integer_range_finds_nothing_or_is_a_422(
    api: Api, ids: Ids, big: int
) -> None:
    response = api.get("/appointments", query_string={"departmentId": str(big)})
    if response.status_code == 200:
        assert response.json["data"] == []
    else:
        assert_error(response, 422, "departmentId")


def _cursor(kind: str, after: int) -> str:
    return f"{kind}.{after:x}"


@pytest.mark.parametrize("big", OUT_OF_RANGE_IDS)
@pytest.mark.parametrize("path", LISTS)
def test_a_cursor_beyond_the_integer_range_finds_nothing_or_is_a_422(
    api: Api, ids: Ids, path: str, big: int
) -> None:
    response = api.get(path, query_string={"cursor": _cursor(path.strip("/"), big)})
    if response.status_code == 200:
        assert response.json["data"] == []
    else:
        assert_error(response, 422, "cursor")


@pytest.mark.parametrize(
    "date_time",
    ["0001-01-01T00:00:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-05:00"],
)
def test_a_dateTime_whose_instant_is_out_of_range_is_a_422_on_dateTime(
    api: Api, engine: Engine, ids: Ids, date_time: str
) -> None:
    with writes_nothing(engine):
        booked = api.post(
            "/appointments",
            {"departmentId": ids["department"], "dateTime": date_time, "name": "Test"},
        )
        moved = api.patch(f"/appointments/{ids['pending']}", {"dateTime": date_time})
    assert_error(booked, 422, "dateTime")
    assert_error(moved, 422, "dateTime")


@pytest.mark.parametrize(
    ("name", "value"), [("from", "0001-01-01T00:00:00+05:00"), ("to", "9999-12-31T23:00:00-05:00")]
)
def test_a_time_filter_at_the_edge_of_the_calendar_lists_everything_or_is_a_422(
    api: Api, ids: Ids, name: str, value: str
) -> None:
    response = api.get("/appointments", query_string={name: value})
    if response.status_code == 200:
        assert [a["id"] for a in response.json["data"]] == [ids["pending"], ids["validated"]]
    else:
        assert_error(response, 422, name)


NUL_BODIES: list[Any] = [
    pytest.param(
        "/departments",
        lambda i: {"name": "Radio\x00logie", "timezone": "Europe/Paris"},
        "name",
        id="department-name",
    ),
    pytest.param(
        "/appointments",
        lambda i: {
            "departmentId": i["department"],
            "dateTime": "2026-02-02T10:00:00",
            "name": "Jean\x00",
        },
        "name",
        id="appointment-name",
    ),
    pytest.param(
        "/appointments",
        lambda i: {
            "departmentId": i["department"],
            "dateTime": "2026-02-02T10:00:00",
            "name": "Test",
            "notes": "à jeun\x00",
        },
        "notes",
        id="appointment-notes",
    ),
]


@pytest.mark.parametrize(("path", "body", "field"), NUL_BODIES)
def test_text_holding_a_nul_character_is_a_422_naming_the_field_and_writes_nothing(
    api: Api, engine: Engine, ids: Ids, path: str, body: Body, field: str
) -> None:
    with writes_nothing(engine):
        response = api.post(path, body(ids))
    assert_error(response, 422, field)


def test_a_change_holding_a_nul_character_is_a_422_and_writes_nothing(
    api: Api, engine: Engine, ids: Ids
) -> None:
    with writes_nothing(engine):
        response = api.patch(f"/appointments/{ids['pending']}", {"name": "Nou\x00veau"})
    assert_error(response, 422, "name")


@pytest.mark.parametrize("event_id", ["evt_%00", "evt_\u00e9t\u00e9", "x" * 300])
def test_an_unreadable_event_id_is_a_404(api: Api, ids: Ids, event_id: str) -> None:
    assert_error(api.get(f"/events/{event_id}"), 404)


def test_the_longest_phone_number_the_schema_admits_is_stored_or_refused_never_a_500(
    api: Api, engine: Engine, ids: Ids
) -> None:
    phone = "+" + "0" * 40
    before = snapshot(engine)
    response = api.post(
        "/appointments",
        {
            "departmentId": ids["department"],
            "dateTime": "2026-02-02T10:00:00",
            "name": "Test",
            "phone": phone,
        },
    )
    if response.status_code == 201:
        assert api.get(f"/appointments/{response.json['id']}").json["phone"] == phone
    else:
        assert_error(response, 422, "phone")
        assert snapshot(engine) == before
