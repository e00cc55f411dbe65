"""Upgrading a database that holds events makes them erasable: their values get sealed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from moncreneau import clock
from moncreneau.app import create_app
from moncreneau.auth import keys
from moncreneau.db import make_engine
from moncreneau.models import AppointmentRow, Department, EventRecord, Organization
from moncreneau.ops.housekeeping import keep_house
from moncreneau.ops.migrate import upgrade
from moncreneau.personal import Vault
from tests import services
from tests.conftest import BACKENDS, Api, make_settings

SECRET_KEY = "upgrade-secret-key"
EMAIL = "old.patient@legacy.example.org"
PHONE = "+33 6 01 02 03 04"
AT = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
OBJECT = {
    "id": 1,
    "departmentId": 1,
    "dateTime": "2026-12-01T10:00:00+01:00",
    "durationMinutes": 30,
    "name": "Old Patient",
    "email": EMAIL,
    "phone": PHONE,
    "notes": "legacy-note",
    "status": "pending",
    "cancellationReason": None,
    "version": 1,
    "createdAt": "2026-11-01T09:00:00Z",
    "updatedAt": "2026-11-01T09:00:00Z",
}


@pytest.fixture(params=BACKENDS)
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database at revision 0005, before personal data was sealed."""
    with services.database_at(request.param, tmp_path, "0005") as url:
        yield url


def _write_as_before(url: str) -> None:
    """What the code before this revision stored: every personal value in clear."""
    created = {
        "department_id": 1,
        "starts_at": "2026-12-01T09:00:00+00:00",
        "duration_minutes": 30,
        "name": "Old Patient",
        "email": EMAIL,
        "phone": "+33 6 99 99 99 99",
        "notes": "legacy-note",
    }
    updated = {"changes": {"phone": ["+33 6 99 99 99 99", PHONE]}}
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(Organization.__table__.insert().values(id=1, name="Old", created_at=AT))
        conn.execute(
            Department.__table__.insert().values(
                id=1,
                organization_id=1,
                name="R",
                timezone="Europe/Paris",
                slot_minutes=30,
                capacity=1,
                created_at=AT,
                updated_at=AT,
            )
        )
        conn.execute(
            AppointmentRow.__table__.insert().values(
                id=1,
                organization_id=1,
                department_id=1,
                starts_at=datetime(2026, 12, 1, 9, tzinfo=UTC),
                duration_minutes=30,
                name="Old Patient",
                email=EMAIL,
                phone=PHONE,
                notes="legacy-note",
                status="pending",
                version=2,
                created_at=AT,
                updated_at=AT,
            )
        )
        for sequence, (type_, data, previous) in enumerate(
            [
                ("appointment.created", created, None),
                ("appointment.updated", updated, {"phone": "+33 6 99 99 99 99"}),
            ],
            1,
        ):
            conn.execute(
                EventRecord.__table__.insert().values(
                    id=f"evt_legacy{sequence}",
                    organization_id=1,
                    type=type_,
                    appointment_id=1,
                    sequence=sequence,
                    data=data,
                    object={**OBJECT, "version": sequence},
                    previous_attributes=previous,
                    created_at=AT,
                )
            )
    engine.dispose()


def test_upgrading_seals_the_events_written_before_and_makes_them_erasable(
    old_database: str,
) -> None:
    _write_as_before(old_database)
    engine = make_engine(old_database)
    upgrade(engine, vault=Vault(SECRET_KEY))
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT position, id, sequence, data, object, sealed FROM events ORDER BY 1")
        ).all()
    assert [(r.id, r.sequence) for r in stored] == [("evt_legacy1", 1), ("evt_legacy2", 2)]
    assert all(r.sealed for r in stored)
    assert EMAIL not in repr(stored) and "legacy-note" not in repr(stored)
    assert "99 99" not in repr(stored)
    engine.dispose()
    settings = make_settings(old_database, secret_key=SECRET_KEY)
    app = create_app(settings)
    runtime = app.extensions["moncreneau"]
    try:
        with runtime.sessions() as db:
            key = keys.issue(db, 1).key
            db.commit()
        api = Api(app.test_client(), key)
        history = api.get("/appointments/1/events").json["data"]
        assert history[0]["data"]["object"]["email"] == EMAIL
        assert history[1]["data"]["previousAttributes"] == {"phone": "+33 6 99 99 99 99"}

        erasure = api.post("/erasures", {"email": EMAIL.upper()}).json
        assert erasure["appointmentIds"] == [1]
        keep_house(runtime.sessions, settings, runtime.vault, clock.now())

        history = api.get("/appointments/1/events").json["data"]
        assert [e["type"] for e in history][-1] == "appointment.erased"
        assert history[0]["id"] == "evt_legacy1"
        assert EMAIL not in json.dumps(history) and "99 99" not in json.dumps(history)
        assert history[1]["data"]["previousAttributes"] == {"phone": None}
    finally:
        runtime.sessions.kw["bind"].dispose()


def test_an_upgrade_with_data_but_no_secret_key_fails_and_changes_nothing(
    old_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if old_database.startswith("sqlite"):
        pytest.skip("the embedded mode makes its own key beside its database")
    _write_as_before(old_database)
    monkeypatch.delenv("MONCRENEAU_SECRET_KEY", raising=False)
    monkeypatch.setenv("DATABASE_URL", old_database)
    engine = make_engine(old_database)
    with pytest.raises(Exception, match="MONCRENEAU_SECRET_KEY"):
        upgrade(engine)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        raw: Any = conn.execute(text("SELECT object FROM events")).all()
    assert version == "0005" and EMAIL in repr(raw)
    engine.dispose()
