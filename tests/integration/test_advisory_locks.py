"""Each kind of advisory lock has its own key space: one kind never waits for another."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask, g
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from moncreneau.api import web
from moncreneau.api.idempotency import idempotent
from moncreneau.app import create_app
from moncreneau.appointments import service as appointments
from moncreneau.appointments.service import NewAppointment
from moncreneau.db import write_session
from moncreneau.personal import Vault
from tests.conftest import Api, make_settings, new_organization

pytestmark = pytest.mark.postgres

STARTS_AT = datetime(2026, 2, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def app(postgres_url: str) -> Iterator[Flask]:
    application = create_app(make_settings(postgres_url))
    yield application
    application.extensions["moncreneau"].sessions.kw["bind"].dispose()


@pytest.fixture
def seventh(app: Flask) -> tuple[Api, int]:
    """Organization 7 (whose id once seeded the slot locks' hash too) and its department."""
    org = [new_organization(app, f"Clinique {n}") for n in range(1, 8)][-1]
    assert org["id"] == 7
    api = Api(app.test_client(), org["apiKey"])
    department = api.post(
        "/departments", {"name": "Radiologie", "timezone": "UTC", "slotMinutes": 30}
    ).json["id"]
    return api, department


def sessions_of(app: Flask) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = app.extensions["moncreneau"].sessions
    return factory


def slot_key(department: int) -> str:
    """An Idempotency-Key spelled like the slot lock's name."""
    return f"slot:{department}:{STARTS_AT.isoformat()}"


def vault_of(app: Flask) -> Vault:
    vault: Vault = app.extensions["moncreneau"].vault
    return vault


def test_an_idempotency_key_held_by_organization_7_does_not_block_a_slot_with_its_name(
    app: Flask, seventh: tuple[Api, int]
) -> None:
    _api, department = seventh
    booked: list[dict[str, Any]] = []

    def view() -> tuple[dict[str, Any], int]:
        # The request holds its Idempotency-Key's lock; another connection books the slot.
        other = write_session(sessions_of(app))
        try:
            # A lock it would wait for ends the test in an error instead of a hang.
            other.execute(text("SET lock_timeout = '10s'"))
            booked.append(
                appointments.book(
                    other, 7, NewAppointment(department, STARTS_AT, "A"), vault=vault_of(app)
                )
            )
            other.commit()
        finally:
            other.close()
        return {"booked": True}, 201

    with app.test_request_context(
        "/api/v1/departments",
        method="POST",
        json={"name": "Cardiologie", "timezone": "UTC"},
        headers={"Idempotency-Key": slot_key(department)},
    ):
        g.organization_id = 7
        try:
            response = idempotent(view)()
        finally:
            web.session().rollback()
            web.session().close()
    assert response.status_code == 201
    assert [b["status"] for b in booked] == ["pending"]


def test_a_slot_being_booked_does_not_hold_up_organization_7s_request_with_its_name(
    app: Flask, seventh: tuple[Api, int]
) -> None:
    api, department = seventh
    booking = write_session(sessions_of(app))
    try:
        appointments.book(
            booking, 7, NewAppointment(department, STARTS_AT, "A"), vault=vault_of(app)
        )
        created = api.post(
            "/departments",
            {"name": "Cardiologie", "timezone": "UTC"},
            headers={"Idempotency-Key": slot_key(department)},
        )
        assert created.status_code == 201, created.json
    finally:
        booking.rollback()
        booking.close()
