"""The appointment aggregate: its rules, and that folding its events rebuilds it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from moncreneau.domain import events as domain_events
from moncreneau.domain.appointments import Appointment, IllegalTransition, Status
from moncreneau.domain.errors import Conflict

T0 = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)


def _booked() -> Appointment:
    return Appointment.book(
        7,
        1,
        department_id=2,
        starts_at=T0,
        duration_minutes=30,
        name="A",
        email=None,
        phone=None,
        notes=None,
        now=T0,
    )


ALLOWED = {
    (Status.PENDING, "validate"),
    (Status.VALIDATED, "complete"),
    (Status.PENDING, "cancel"),
    (Status.VALIDATED, "cancel"),
}
PATHS = {
    Status.PENDING: [],
    Status.VALIDATED: ["validate"],
    Status.COMPLETED: ["validate", "complete"],
    Status.CANCELLED: ["cancel"],
}


@pytest.mark.parametrize("start", list(Status))
@pytest.mark.parametrize("action", ["validate", "complete", "cancel"])
def test_the_state_machine_allows_exactly_the_contracts_moves(start: Status, action: str) -> None:
    appointment = _booked()
    for step in PATHS[start]:
        getattr(appointment, step)(T0)
    version = appointment.version
    if (start, action) in ALLOWED:
        getattr(appointment, action)(T0)
        assert appointment.version == version + 1
    else:
        with pytest.raises(IllegalTransition):
            getattr(appointment, action)(T0)
        assert appointment.version == version


def test_a_final_appointment_cannot_be_changed() -> None:
    appointment = _booked()
    appointment.cancel(T0, "x")
    with pytest.raises(Conflict):
        appointment.change(T0, name="B")


def test_a_change_that_changes_nothing_records_nothing() -> None:
    appointment = _booked()
    assert appointment.change(T0, name="A", duration_minutes=30) is None
    assert appointment.version == 1


def test_folding_the_encoded_events_rebuilds_the_same_appointment() -> None:
    appointment = _booked()
    appointment.change(T0, starts_at=T0.replace(hour=9), name="B", email="b@example.org")
    appointment.validate(T0)
    appointment.cancel(T0, "moved")
    stored = [(e.type, e.occurred_at, domain_events.encode(e)) for e in appointment.pending_events]
    replayed = Appointment.from_events(
        7, 1, [domain_events.decode(t, at, data) for t, at, data in stored]
    )
    replayed.pending_events = appointment.pending_events
    assert replayed == appointment
    assert replayed.status is Status.CANCELLED
    assert replayed.starts_at == T0.replace(hour=9)
