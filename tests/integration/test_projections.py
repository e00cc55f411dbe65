"""Appointment rows are a projection: rebuilding them from the events gives the same rows."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from moncreneau.appointments import service
from moncreneau.cli import cli
from moncreneau.config import Settings
from moncreneau.models import AppointmentRow, EventRecord
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


def _lengthen(app: Flask, appointment_id: int, changes: int) -> None:
    """`changes` more events in the appointment's history, as PATCH would append them."""
    runtime = app.extensions["moncreneau"]
    with runtime.sessions() as db:
        row = db.get(AppointmentRow, appointment_id)
        assert row is not None
        for n in range(changes):
            service.change(
                db, row.organization_id, appointment_id, {"notes": f"note {n}"}, vault=runtime.vault
            )
        db.commit()


class Reads:
    """SQL statements run, and event rows loaded, while counting."""

    def __init__(self, engine: Engine) -> None:
        self.statements = 0
        self.events_loaded = 0
        self.counting = False
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(Session, "loaded_as_persistent", self._loaded)
        self._engine = engine

    def _statement(self, *_args: Any) -> None:
        self.statements += self.counting

    def _loaded(self, _session: Session, instance: object) -> None:
        self.events_loaded += self.counting and isinstance(instance, EventRecord)

    def of(self, call: Any) -> tuple[int, int]:
        self.statements = self.events_loaded = 0
        self.counting = True
        try:
            call()
        finally:
            self.counting = False
        return self.statements, self.events_loaded

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._statement)
        event.remove(Session, "loaded_as_persistent", self._loaded)


def test_a_change_reads_as_much_after_500_events_as_after_one(
    app: Flask, api: Api, department: dict[str, Any], engine: Engine
) -> None:
    made = {"departmentId": department["id"], "dateTime": "2026-03-02T08:00:00", "name": "P"}
    short = api.post("/appointments", made).json["id"]
    long = api.post("/appointments", {**made, "dateTime": "2026-03-02T09:00:00"}).json["id"]
    _lengthen(app, long, 499)
    reads = Reads(engine)
    try:
        per_change = {
            appointment: [
                reads.of(lambda a=appointment, n=n: _ok(api.patch(f"/appointments/{a}", n)))
                for n in ({"notes": "x"}, {"name": "Q"})
            ]
            + [reads.of(lambda a=appointment: _ok(api.post(f"/appointments/{a}/validate")))]
            for appointment in (short, long)
        }
    finally:
        reads.close()
    assert per_change[long] == per_change[short]
    assert all(loaded == 0 for _statements, loaded in per_change[long])
    assert api.get(f"/appointments/{long}").json["version"] == 503


def _ok(response: Any) -> None:
    assert response.status_code == 200, response.json


def test_a_projection_row_that_lags_its_events_is_folded_again_and_rewritten(
    api: Api, department: dict[str, Any], engine: Engine, database_url: str
) -> None:
    _busy_history(api, department)
    live = _rows(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE appointments SET name = 'stale', version = 1 WHERE id = 2"))
    assert api.patch("/appointments/2", {"notes": "y"}).status_code == 200
    assert api.patch("/appointments/2", {"notes": "x"}).status_code == 200
    now = _rows(engine)
    assert now[1]["name"] == live[1]["name"]
    assert now[1]["version"] == live[1]["version"] + 2
    assert [r for r in now if r["id"] != 2] == [r for r in live if r["id"] != 2]
