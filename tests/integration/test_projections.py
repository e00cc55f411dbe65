"""Appointment rows are a projection: rebuilding them from the events gives the same rows."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import Engine

from moncreneau.cli import cli
from moncreneau.config import Settings
from tests.conftest import Api


def _rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(text("SELECT * FROM appointments ORDER BY id"))
        return [dict(r._mapping) for r in result]


def _busy_history(api: Api, department: dict[str, Any]) -> None:
    dep = department["id"]
    ids = []
    for hour in range(8, 14):
        made = api.post(
            "/appointments",
            {
                "departmentId": dep,
                "dateTime": f"2026-03-02T{hour:02d}:00:00",
                "name": f"Patient {hour}",
                "email": f"p{hour}@example.org",
            },
        )
        assert made.status_code == 201
        ids.append(made.json["id"])
    assert (
        api.patch(f"/appointments/{ids[0]}", {"dateTime": "2026-03-02T15:30:00"}).status_code == 200
    )
    assert (
        api.patch(
            f"/appointments/{ids[1]}", {"phone": "+33 1 23 45 67 89", "notes": "x"}
        ).status_code
        == 200
    )
    assert api.patch(f"/appointments/{ids[1]}", {"notes": None}).status_code == 200
    for action in ("validate", "complete"):
        assert api.post(f"/appointments/{ids[2]}/{action}").status_code == 200
    assert api.post(f"/appointments/{ids[3]}/validate").status_code == 200
    assert api.post(f"/appointments/{ids[3]}/cancel", {"reason": "moved away"}).status_code == 200
    assert api.post(f"/appointments/{ids[4]}/cancel").status_code == 200


def test_rebuilding_projections_from_events_reproduces_the_live_rows(
    api: Api,
    department: dict[str, Any],
    engine: Engine,
    database_url: str,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _busy_history(api, department)
    live = _rows(engine)
    assert len(live) == 6
    with engine.begin() as conn:
        conn.execute(text("UPDATE appointments SET name = 'corrupted', version = 99"))
    monkeypatch.setenv("DATABASE_URL", database_url)
    # the key that opens the events' personal values
    monkeypatch.setenv("MONCRENEAU_SECRET_KEY", settings.secret_key)

    result = CliRunner().invoke(cli, ["projections", "rebuild"])

    assert result.exit_code == 0, result.output
    assert "rebuilt 6 appointment(s)" in result.output
    assert _rows(engine) == live


def test_every_response_equals_the_fold_of_its_events(api: Api, department: dict[str, Any]) -> None:
    _busy_history(api, department)
    for appointment in api.get("/appointments").json["data"]:
        history = api.get(f"/appointments/{appointment['id']}/events").json["data"]
        assert [e["data"]["object"]["version"] for e in history] == list(
            range(1, appointment["version"] + 1)
        )
        assert history[-1]["data"]["object"] == appointment
