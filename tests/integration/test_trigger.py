"""`moncreneau trigger` appends real sample events that the relay delivers like any other."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Engine

from moncreneau.cli import cli
from moncreneau.config import Settings
from moncreneau.outbox.relay import relay_once
from tests.conftest import Api

HOOK = {"url": "https://example.org/hook", "events": ["*"]}


@pytest.fixture
def run_cli(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MONCRENEAU_SECRET_KEY", "test-secret-key-for-encryption-000")

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, list(args))

    return run


def _deliveries(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT subscription_id, event_type FROM deliveries ORDER BY seq")
        ).all()
    return [(r[0], r[1]) for r in rows]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("appointment.created", ["appointment.created"]),
        ("appointment.updated", ["appointment.created", "appointment.updated"]),
        ("appointment.validated", ["appointment.created", "appointment.validated"]),
        (
            "appointment.completed",
            ["appointment.created", "appointment.validated", "appointment.completed"],
        ),
        ("appointment.cancelled", ["appointment.created", "appointment.cancelled"]),
        ("webhook.disabled", ["webhook.disabled"]),
    ],
)
def test_trigger_appends_the_events_a_real_appointment_would_go_through(
    app: Flask,
    api: Api,
    org: dict[str, Any],
    run_cli: Any,
    settings: Settings,
    engine: Engine,
    kind: str,
    expected: list[str],
) -> None:
    first = api.post("/webhooks", HOOK).json
    second = api.post("/webhooks", HOOK).json

    result = run_cli("trigger", kind, "--org", str(org["id"]), "--webhook", str(first["id"]))

    assert result.exit_code == 0, result.output
    events = api.get("/events").json["data"]
    assert [e["type"] for e in events] == expected
    if kind.startswith("appointment."):
        appointment = api.get(f"/appointments/{events[-1]['data']['object']['id']}").json
        assert appointment == events[-1]["data"]["object"]
    relay_once(app.extensions["moncreneau"].sessions, settings)
    assert _deliveries(engine) == [(first["id"], t) for t in expected]
    assert second["id"] not in {s for s, _ in _deliveries(engine)}


def test_trigger_without_a_webhook_goes_to_every_subscriber(
    app: Flask, api: Api, org: dict[str, Any], run_cli: Any, settings: Settings, engine: Engine
) -> None:
    everything = api.post("/webhooks", HOOK).json
    cancellations = api.post("/webhooks", {**HOOK, "events": ["appointment.cancelled"]}).json

    assert run_cli("trigger", "appointment.cancelled", "--org", str(org["id"])).exit_code == 0
    relay_once(app.extensions["moncreneau"].sessions, settings)

    assert sorted(_deliveries(engine)) == sorted(
        [
            (everything["id"], "appointment.created"),
            (everything["id"], "appointment.cancelled"),
            (cancellations["id"], "appointment.cancelled"),
        ]
    )


def test_trigger_refuses_unknown_types_and_webhooks_that_do_not_listen(
    api: Api, org: dict[str, Any], run_cli: Any
) -> None:
    picky = api.post("/webhooks", {**HOOK, "events": ["appointment.created"]}).json
    unknown = run_cli("trigger", "appointment.exploded", "--org", str(org["id"]))
    assert unknown.exit_code != 0
    assert "Unknown event type" in unknown.output
    deaf = run_cli(
        "trigger", "appointment.cancelled", "--org", str(org["id"]), "--webhook", str(picky["id"])
    )
    assert deaf.exit_code != 0
    assert "does not subscribe" in deaf.output
    assert api.get("/events").json["data"] == []
