"""The event catalog: every type, and per payload version a JSON Schema that every rendered
payload meets and an example rendered by the same code."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from jsonschema import Draft202012Validator, FormatChecker
from sqlalchemy import select

from moncreneau.clock import utcnow
from moncreneau.config import Settings
from moncreneau.db import write_session
from moncreneau.delivery.endpoints import record_disabled
from moncreneau.domain.events import EVENT_TYPES
from moncreneau.events.catalog import example, schema
from moncreneau.integrator.trigger import trigger
from moncreneau.models import EventRecord
from moncreneau.outbox import payloads
from moncreneau.webhooks.service import find
from tests.conftest import Api

HOOK = {"url": "https://example.org/webhooks/moncreneau", "events": ["*"]}


def _validator(event_type: str, version: str) -> Draft202012Validator:
    body = schema(event_type, version)
    Draft202012Validator.check_schema(body)
    return Draft202012Validator(body, format_checker=FormatChecker())


def test_the_catalog_lists_every_type_with_a_valid_example_per_version(api: Api) -> None:
    listed = api.get("/event-types")
    assert listed.status_code == 200
    assert listed.json["hasMore"] is False
    types = listed.json["data"]
    assert [t["type"] for t in types] == list(EVENT_TYPES)
    for entry in types:
        assert entry["description"]
        assert entry["subscribable"] is (entry["type"] != "webhook.test")
        assert [v["version"] for v in entry["versions"]] == list(payloads.VERSIONS)
        for version in entry["versions"]:
            assert version["schema"] == schema(entry["type"], version["version"])
            _validator(entry["type"], version["version"]).validate(version["example"])
            assert version["example"]["version"] == version["version"]
            assert version["example"]["type"] == entry["type"]


def test_the_catalog_needs_a_key(app: Flask) -> None:
    assert app.test_client().get("/api/v1/event-types").status_code == 401


def test_the_updated_example_differs_between_versions_as_documented() -> None:
    v1, v2 = example("appointment.updated", "1.0"), example("appointment.updated", "2.0")
    assert set(v1["data"]) == {"object", "previousAttributes"}
    assert set(v2["data"]) == {"object", "changes"}
    assert v2["data"]["changes"]["dateTime"]["old"] == v1["data"]["previousAttributes"]["dateTime"]


@pytest.mark.parametrize(
    "spoil",
    [
        lambda body: body["data"]["object"].update(unknown=1),
        lambda body: body["data"]["object"].pop("status"),
        lambda body: body["data"]["object"].update(version="1"),
        lambda body: body.update(version="9.9"),
        lambda body: body["data"].update(previousAttributes={"status": "pending"}),
    ],
)
def test_a_schema_refuses_a_body_that_drifted(spoil: Any) -> None:
    body = example("appointment.created", "1.0")
    spoil(body)
    assert list(_validator("appointment.created", "1.0").iter_errors(body))


def test_every_payload_the_services_render_meets_its_schema(
    app: Flask, api: Api, org: dict[str, Any], department: dict[str, Any], settings: Settings
) -> None:
    hook = api.post("/webhooks", HOOK).json
    other = api.post("/webhooks", HOOK).json
    booked = api.post(
        "/appointments",
        {"departmentId": department["id"], "dateTime": "2026-03-02T09:00:00", "name": "Léa"},
    ).json
    changed = api.patch(
        f"/appointments/{booked['id']}",
        {
            "name": "Léa B.",
            "email": "lea@example.org",
            "phone": "+33 6 00 00 00 00",
            "notes": "<b>notes</b>",
            "durationMinutes": 60,
        },
    )
    assert changed.status_code == 200, changed.json
    api.post(f"/appointments/{booked['id']}/cancel", {"reason": "ill"})
    api.post(f"/webhooks/{hook['id']}/test")
    sessions = app.extensions["moncreneau"].sessions
    with write_session(sessions) as db:
        for event_type in EVENT_TYPES:
            trigger(db, org["id"], event_type, settings, webhook_id=hook["id"])
        record_disabled(db, find(db, org["id"], other["id"]), "Gone.", utcnow())
        db.commit()
    with sessions() as db:
        events = list(db.scalars(select(EventRecord).order_by(EventRecord.position)))
    assert {e.type for e in events} == set(EVENT_TYPES)
    for event in events:
        for version in payloads.VERSIONS:
            validator = _validator(event.type, version)
            for style in payloads.STYLES:
                body = json.loads(payloads.render(event, version, style))
                errors = [e.message for e in validator.iter_errors(body)]
                assert errors == [], (event.type, version, style, body)
