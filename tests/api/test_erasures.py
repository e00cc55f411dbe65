"""Erasure of personal data: every copy reads null, the log stays append-only, on each backend."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select, text, update
from sqlalchemy.engine import Engine

from moncreneau import clock
from moncreneau.appointments import service as appointments
from moncreneau.cli import cli
from moncreneau.config import Settings
from moncreneau.delivery import store as deliveries
from moncreneau.models import Delivery, DeliveryAttempt, EventRecord
from moncreneau.ops.housekeeping import keep_house
from moncreneau.outbox import relay
from tests.conftest import Api

NAME, EMAIL, PHONE, NOTES = (
    "Zéphyrine Quasimodo-Erasable",
    "Zephyrine.Q@erasable.example.org",
    "+33 6 11 22 33 44",
    "Allergic to latex; erasable-note",
)
REASON = "erasable-reason: feeling unwell"
PERSONAL = (NAME, EMAIL.lower(), EMAIL, PHONE, NOTES, REASON, "+33 6 55 66 77 88")


def _book(api: Api, department: dict[str, Any], hour: int, **extra: Any) -> dict[str, Any]:
    body = {"departmentId": department["id"], "dateTime": f"2026-03-02T{hour:02d}:00:00"}
    response = api.post("/appointments", {"name": NAME, **body, **extra})
    assert response.status_code == 201, response.json
    result: dict[str, Any] = response.json
    return result


def _history(api: Api, department: dict[str, Any]) -> list[int]:
    """Two appointments of the patient (one changed, one cancelled), one of someone else."""
    first = _book(api, department, 9, email=EMAIL, phone=PHONE, notes=NOTES)
    changed = api.patch(f"/appointments/{first['id']}", {"phone": "+33 6 55 66 77 88"})
    assert changed.status_code == 200
    second = _book(api, department, 10, email=EMAIL.upper())
    assert api.post(f"/appointments/{second['id']}/cancel", {"reason": REASON}).status_code == 200
    other = _book(api, department, 11, email="someone.else@example.org")
    return [first["id"], second["id"], other["id"]]


def _housekeeping(app: Flask, settings: Settings, now: Any = None, retention: bool = False) -> None:
    runtime = app.extensions["moncreneau"]
    keep_house(runtime.sessions, settings, runtime.vault, now or clock.now(), retention)


def _everything(engine: Engine) -> str:
    """Every row of every table, as text: what a dump of the database would show."""
    with engine.connect() as conn:
        tables = [
            row[0]
            for row in conn.execute(
                text(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    if engine.dialect.name == "sqlite"
                    else "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            )
        ]
        return "\n".join(
            repr(list(conn.execute(text(f'SELECT * FROM "{table}"')))) for table in tables
        )


def _erase(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/erasures", body)
    assert response.status_code == 202, response.json
    result: dict[str, Any] = response.json
    return result


def test_an_erasure_by_email_nulls_every_personal_value_and_keeps_the_log(
    api: Api, department: dict[str, Any], app: Flask, settings: Settings, engine: Engine
) -> None:
    first, second, other = _history(api, department)
    before = api.get("/events").json["data"]
    assert any(e["data"]["object"]["name"] == NAME for e in before)

    erasure = _erase(api, {"email": "zephyrine.q@ERASABLE.example.org"})

    assert erasure["status"] == "pending"
    assert erasure["appointmentIds"] == [first, second]
    assert erasure["selector"] == "email" and erasure["requestedBy"] == api.key[:12]
    assert "erasable" not in json.dumps(erasure).lower()
    _housekeeping(app, settings)
    done = api.get(f"/erasures/{erasure['id']}").json
    assert done["status"] == "completed" and done["completedAt"]
    for appointment_id in (first, second):
        shown = api.get(f"/appointments/{appointment_id}").json
        assert shown["erasedAt"] is not None
        assert {shown[k] for k in ("name", "email", "phone", "notes", "cancellationReason")} == {
            None
        }
        history = api.get(f"/appointments/{appointment_id}/events").json["data"]
        assert history[-1]["type"] == "appointment.erased"
        assert history[-1]["data"]["object"] == shown
        assert [e["data"]["object"]["version"] for e in history] == list(
            range(1, shown["version"] + 1)
        )
    assert api.get(f"/appointments/{other}").json["name"] == NAME
    after = api.get("/events").json["data"]
    # Every event stays, with its id and place, and one erased event per appointment is added.
    assert [e["id"] for e in after][: len(before)] == [e["id"] for e in before]
    assert [e["type"] for e in after[len(before) :]] == ["appointment.erased"] * 2
    text_of_log = json.dumps([e for e in after if e["data"]["object"]["id"] != other])
    for value in PERSONAL:
        assert value not in text_of_log
    stored = _everything(engine)
    for value in (EMAIL, EMAIL.lower(), PHONE, NOTES, REASON, "+33 6 55 66 77 88"):
        assert value not in stored
    # Someone else's data is untouched, and only ever stored encrypted in the log.
    assert api.get(f"/appointments/{other}/events").json["data"][0]["data"]["object"]["email"] == (
        "someone.else@example.org"
    )
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT data, object FROM events")).all()
    assert "someone.else" not in repr(raw)


def test_projections_rebuilt_after_an_erasure_reproduce_the_erased_rows(
    api: Api,
    department: dict[str, Any],
    app: Flask,
    settings: Settings,
    engine: Engine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, _second, _other = _history(api, department)
    _erase(api, {"appointmentIds": [first]})
    _housekeeping(app, settings)
    with engine.connect() as conn:
        live = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM appointments"))]
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MONCRENEAU_SECRET_KEY", settings.secret_key)

    result = CliRunner().invoke(cli, ["projections", "rebuild"])

    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        rebuilt = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM appointments"))]
    assert sorted(rebuilt, key=lambda r: r["id"]) == sorted(live, key=lambda r: r["id"])
    assert [r["name"] for r in rebuilt if r["id"] == first] == [None]


def test_a_selector_that_matches_nothing_answers_the_same_and_keeps_no_value(
    api: Api, other_api: Api, department: dict[str, Any], engine: Engine
) -> None:
    mine = _book(api, department, 9, email=EMAIL, phone=PHONE)

    for body in ({"email": "nobody@example.org"}, {"phone": "+1 555 0100"}):
        erasure = _erase(api, body)
        assert erasure["status"] == "completed" and erasure["appointmentIds"] == []
    # Another organization cannot reach this one's patients, by value or by id.
    assert _erase(other_api, {"email": EMAIL})["appointmentIds"] == []
    assert _erase(other_api, {"phone": "+33611223344"})["appointmentIds"] == []
    assert _erase(other_api, {"appointmentIds": [mine["id"]]})["appointmentIds"] == []
    assert other_api.get("/erasures").json["data"][0]["appointmentIds"] == []
    assert len(api.get("/erasures").json["data"]) == 2
    # The phone matches however it is written.
    assert _erase(api, {"phone": "+33 (6) 11.22.33.44"})["appointmentIds"] == [mine["id"]]
    with engine.connect() as conn:
        erasures = repr(conn.execute(text("SELECT * FROM erasures")).all())
    assert "nobody" not in erasures and "0100" not in erasures and "11.22" not in erasures


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": EMAIL, "phone": PHONE},
        {"appointmentIds": []},
        {"appointmentIds": list(range(1, 1002))},
        {"email": "not an address"},
    ],
    ids=["none", "two", "no-ids", "too-many", "bad-email"],
)
def test_an_erasure_needs_exactly_one_valid_selector_and_never_echoes_it(
    api: Api, body: dict[str, Any]
) -> None:
    response = api.post("/erasures", body)

    assert response.status_code == 422
    assert set(response.json) == {"code", "status", "message", "errors"}
    assert "example.org" not in response.get_data(as_text=True)
    assert "not an address" not in response.get_data(as_text=True)
    assert api.get("/erasures").json["data"] == []


def test_an_erased_appointment_cannot_be_changed_any_more(
    api: Api, department: dict[str, Any], app: Flask, settings: Settings
) -> None:
    booked = _book(api, department, 9, email=EMAIL)
    _erase(api, {"appointmentIds": [booked["id"]]})
    _housekeeping(app, settings)

    for response in (
        api.patch(f"/appointments/{booked['id']}", {"name": "Back again"}),
        api.post(f"/appointments/{booked['id']}/validate"),
    ):
        assert response.status_code == 409, response.json
        assert "erased" in response.json["message"]
    assert api.get(f"/appointments/{booked['id']}").json["name"] is None
    # Erasing again changes nothing: no second event.
    _erase(api, {"appointmentIds": [booked["id"]]})
    _housekeeping(app, settings)
    assert len(api.get(f"/appointments/{booked['id']}/events").json["data"]) == 2


def test_a_stored_idempotent_response_replays_without_the_personal_values(
    api: Api, department: dict[str, Any], app: Flask, settings: Settings
) -> None:
    body = {"departmentId": department["id"], "dateTime": "2026-03-02T09:00:00", "name": NAME}
    first = api.post("/appointments", body, headers={"Idempotency-Key": "book-1"})
    assert first.status_code == 201
    _erase(api, {"appointmentIds": [first.json["id"]]})
    _housekeeping(app, settings)

    again = api.post("/appointments", body, headers={"Idempotency-Key": "book-1"})

    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json["id"] == first.json["id"] and again.json["name"] is None
    assert len(api.get("/appointments").json["data"]) == 1


def test_deliveries_of_an_erased_appointment_are_rewritten_and_those_waiting_never_sent(
    api: Api, department: dict[str, Any], app: Flask, settings: Settings, engine: Engine
) -> None:
    hook = api.post("/webhooks", {"url": "http://127.0.0.1:9/hook", "events": ["*"]}).json
    thin = api.post(
        "/webhooks",
        {"url": "http://127.0.0.1:9/thin", "events": ["appointment.erased"], "payload": "thin"},
    ).json
    booked = _book(api, department, 9, email=EMAIL, notes=NOTES)
    sessions = app.extensions["moncreneau"].sessions
    relay.relay_once(sessions, settings)
    with engine.begin() as conn:
        # The creation was delivered (the receiver echoed the body), then a change is waiting.
        conn.execute(
            update(Delivery).values(status=deliveries.SUCCEEDED, attempts=1, next_attempt_at=None)
        )
        seq = conn.execute(select(Delivery.seq)).scalar_one()
        conn.execute(
            DeliveryAttempt.__table__.insert().values(
                delivery_seq=seq,
                number=1,
                started_at=clock.now(),
                duration_ms=3,
                status_code=200,
                response_excerpt=f"got {NOTES}",
            )
        )
    assert api.patch(f"/appointments/{booked['id']}", {"notes": "changed"}).status_code == 200
    relay.relay_once(sessions, settings)
    listed = api.get(f"/webhooks/{hook['id']}/deliveries").json["data"]
    waiting, delivered = listed
    assert waiting["status"] == "pending" and delivered["status"] == "succeeded"

    _erase(api, {"email": EMAIL})
    _housekeeping(app, settings)
    relay.relay_once(sessions, settings)

    listed = api.get(f"/webhooks/{hook['id']}/deliveries").json["data"]
    erased_event, waiting, delivered = listed
    assert waiting["status"] == "erased" and waiting["nextAttemptAt"] is None
    assert delivered["status"] == "succeeded"
    for delivery in (waiting, delivered):
        detail = api.get(f"/webhooks/{hook['id']}/deliveries/{delivery['id']}").json
        assert detail["payload"]["data"]["object"]["name"] is None
        assert all(a["responseBody"] is None for a in detail["attempts"])
        retried = api.post(f"/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry")
        assert retried.status_code == 410, retried.json
    replayed = api.post(
        f"/webhooks/{hook['id']}/replay",
        {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
    )
    assert replayed.json["count"] == 0
    # The erasure itself reaches subscribers of `*` and of `appointment.erased`.
    assert erased_event["eventType"] == "appointment.erased"
    assert erased_event["status"] == "pending"
    (to_thin,) = api.get(f"/webhooks/{thin['id']}/deliveries").json["data"]
    body = api.get(f"/webhooks/{thin['id']}/deliveries/{to_thin['id']}").json["payload"]
    assert body["type"] == "appointment.erased"
    assert body["data"]["object"]["erasedAt"] is not None
    stored = _everything(engine)
    for value in (EMAIL, NOTES, "changed"):
        assert value not in stored


def test_a_thousand_appointments_are_erased_in_one_round_of_housekeeping(
    api: Api, org: dict[str, Any], app: Flask, settings: Settings, engine: Engine
) -> None:
    runtime = app.extensions["moncreneau"]
    bulk = api.post(
        "/departments", {"name": "Bulk", "timezone": "UTC", "slotMinutes": 30, "capacity": 1000}
    ).json
    start = clock.utcnow().replace(hour=8, minute=0, second=0)
    with runtime.sessions() as db:
        for n in range(1000):
            new = appointments.NewAppointment(bulk["id"], start, f"Bulk {n}", email=EMAIL)
            appointments.book(db, org["id"], new, vault=runtime.vault)
        db.commit()
    erasure = _erase(api, {"email": EMAIL})
    assert len(erasure["appointmentIds"]) == 1000

    _housekeeping(app, settings)

    assert api.get(f"/erasures/{erasure['id']}").json["status"] == "completed"
    with engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM appointments WHERE erased_at IS NULL"))
        erased = conn.execute(
            select(EventRecord.id).where(EventRecord.type == "appointment.erased")
        ).all()
    assert left.scalar_one() == 0 and len(erased) == 1000


def test_payload_retention_purges_finished_deliveries_only_and_keeps_their_metadata(
    api: Api, department: dict[str, Any], app: Flask, settings: Settings, engine: Engine
) -> None:
    hook = api.post("/webhooks", {"url": "http://127.0.0.1:9/hook", "events": ["*"]}).json
    _book(api, department, 9, email=EMAIL)
    _book(api, department, 10, email="other@example.org")
    relay.relay_once(app.extensions["moncreneau"].sessions, settings)
    later, still_retrying = api.get(f"/webhooks/{hook['id']}/deliveries").json["data"]
    with engine.begin() as conn:
        conn.execute(update(Delivery).values(attempts=1, last_status_code=500))
        conn.execute(
            update(Delivery)
            .where(Delivery.id == later["id"])
            .values(status=deliveries.DEAD, next_attempt_at=None)
        )
        conn.execute(
            update(Delivery)
            .where(Delivery.id == still_retrying["id"])
            .values(status=deliveries.FAILED)
        )
        for delivery_id in (later["id"], still_retrying["id"]):
            seq = conn.execute(select(Delivery.seq).where(Delivery.id == delivery_id)).scalar_one()
            conn.execute(
                DeliveryAttempt.__table__.insert().values(
                    delivery_seq=seq,
                    number=1,
                    started_at=clock.now(),
                    duration_ms=3,
                    status_code=500,
                    response_excerpt="echo",
                )
            )

    # 29 days on, nothing is old enough; 31 days on, the dead one is.
    _housekeeping(app, settings, clock.now() + timedelta(days=29), retention=True)
    dead = api.get(f"/webhooks/{hook['id']}/deliveries/{later['id']}").json
    assert dead["payload"] is not None
    _housekeeping(app, settings, clock.now() + timedelta(days=31), retention=True)

    dead = api.get(f"/webhooks/{hook['id']}/deliveries/{later['id']}").json
    assert dead["payload"] is None
    assert dead["status"] == "dead" and dead["attemptCount"] == 1
    assert dead["attempts"][0]["statusCode"] == 500 and dead["attempts"][0]["responseBody"] is None
    retrying = api.get(f"/webhooks/{hook['id']}/deliveries/{still_retrying['id']}").json
    assert retrying["payload"] is not None and retrying["attempts"][0]["responseBody"] == "echo"
    retried = api.post(f"/webhooks/{hook['id']}/deliveries/{later['id']}/retry")
    assert retried.status_code == 410
    assert "purged" in retried.json["message"]


def test_appointments_unchanged_for_too_long_are_erased_automatically(
    api: Api, department: dict[str, Any], app: Flask, settings: Settings
) -> None:
    old = _book(api, department, 9, email=EMAIL)
    keeping = settings.replace(erase_after_days=90.0)

    _housekeeping(app, keeping, clock.now() + timedelta(days=89), retention=True)
    _housekeeping(app, keeping, clock.now() + timedelta(days=89), retention=False)
    assert api.get(f"/appointments/{old['id']}").json["name"] == NAME
    _housekeeping(app, keeping, clock.now() + timedelta(days=91), retention=True)
    _housekeeping(app, keeping, clock.now() + timedelta(days=91), retention=False)

    assert api.get(f"/appointments/{old['id']}").json["name"] is None
    (erasure,) = api.get("/erasures").json["data"]
    assert erasure["selector"] == "retention" and erasure["requestedBy"] is None
    assert erasure["appointmentIds"] == [old["id"]] and erasure["status"] == "completed"
    # Nothing happens without the setting.
    fresh = _book(api, department, 10)
    _housekeeping(app, settings, clock.now() + timedelta(days=1000), retention=True)
    _housekeeping(app, settings, clock.now() + timedelta(days=1000), retention=False)
    assert api.get(f"/appointments/{fresh['id']}").json["name"] == NAME


def test_sample_data_from_moncreneau_trigger_is_sealed_and_erasable(
    api: Api, org: dict[str, Any], app: Flask, settings: Settings, engine: Engine
) -> None:
    from moncreneau.integrator.trigger import trigger

    with app.extensions["moncreneau"].sessions() as db:
        events = trigger(db, org["id"], "appointment.erased", settings, None)
        db.commit()
    assert [e.type for e in events] == ["appointment.created", "appointment.erased"]
    assert "sample.patient" not in _everything(engine)
    (sample,) = api.get("/appointments").json["data"]
    assert sample["erasedAt"] is not None and sample["email"] is None
