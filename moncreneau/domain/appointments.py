"""The appointment aggregate: commands check the rules and record events; `apply` folds them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from moncreneau.domain.errors import Conflict
from moncreneau.domain.events import (
    AppointmentCancelled,
    AppointmentCompleted,
    AppointmentCreated,
    AppointmentErased,
    AppointmentEvent,
    AppointmentUpdated,
    AppointmentValidated,
)


class Status(StrEnum):
    PENDING = "pending"
    VALIDATED = "validated"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


# target status -> the statuses it may be reached from
ALLOWED_FROM: dict[Status, frozenset[Status]] = {
    Status.VALIDATED: frozenset({Status.PENDING}),
    Status.COMPLETED: frozenset({Status.VALIDATED}),
    Status.CANCELLED: frozenset({Status.PENDING, Status.VALIDATED}),
}
FINAL = frozenset({Status.COMPLETED, Status.CANCELLED})
# Fields a reschedule or contact change may touch.
MUTABLE_FIELDS = ("starts_at", "duration_minutes", "name", "email", "phone", "notes")
# What an erasure nulls.
PERSONAL_FIELDS = ("name", "email", "phone", "notes", "cancellation_reason")


class IllegalTransition(Conflict):
    def __init__(self, current: Status, target: Status) -> None:
        super().__init__(f"cannot move an appointment from {current.value} to {target.value}")
        self.current = current
        self.target = target


@dataclass
class Appointment:
    id: int
    organization_id: int
    department_id: int = 0
    starts_at: datetime | None = None
    duration_minutes: int = 0
    name: str | None = ""
    email: str | None = None
    phone: str | None = None
    notes: str | None = None
    status: Status = Status.PENDING
    cancellation_reason: str | None = None
    version: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    erased_at: datetime | None = None
    pending_events: list[AppointmentEvent] = field(default_factory=list, repr=False)

    @classmethod
    def book(
        cls,
        id: int,
        organization_id: int,
        *,
        department_id: int,
        starts_at: datetime,
        duration_minutes: int,
        name: str | None,
        email: str | None,
        phone: str | None,
        notes: str | None,
        now: datetime,
    ) -> Appointment:
        appointment = cls(id=id, organization_id=organization_id)
        appointment._record(
            AppointmentCreated(
                occurred_at=now,
                department_id=department_id,
                starts_at=starts_at,
                duration_minutes=duration_minutes,
                name=name,
                email=email,
                phone=phone,
                notes=notes,
            )
        )
        return appointment

    @classmethod
    def from_events(
        cls, id: int, organization_id: int, events: list[AppointmentEvent]
    ) -> Appointment:
        appointment = cls(id=id, organization_id=organization_id)
        for event in events:
            appointment.apply(event)
        return appointment

    def change(self, now: datetime, **values: Any) -> AppointmentUpdated | None:
        """Reschedule or change contact details; records nothing when nothing differs."""
        unknown = set(values) - set(MUTABLE_FIELDS)
        if unknown:
            raise ValueError(f"fields that cannot be changed: {sorted(unknown)!r}")
        self._check_not_erased()
        if self.status in FINAL:
            raise Conflict(f"a {self.status.value} appointment cannot be changed")
        changes = {
            name: (getattr(self, name), value)
            for name, value in values.items()
            if getattr(self, name) != value
        }
        if not changes:
            return None
        event = AppointmentUpdated(occurred_at=now, changes=changes)
        self._record(event)
        return event

    def validate(self, now: datetime) -> AppointmentValidated:
        self._check(Status.VALIDATED)
        event = AppointmentValidated(occurred_at=now)
        self._record(event)
        return event

    def complete(self, now: datetime) -> AppointmentCompleted:
        self._check(Status.COMPLETED)
        event = AppointmentCompleted(occurred_at=now)
        self._record(event)
        return event

    def cancel(self, now: datetime, reason: str | None = None) -> AppointmentCancelled:
        self._check(Status.CANCELLED)
        event = AppointmentCancelled(occurred_at=now, reason=reason)
        self._record(event)
        return event

    def erase(self, now: datetime) -> AppointmentErased:
        """Forget the personal fields; the appointment keeps its place and status, frozen."""
        self._check_not_erased()
        event = AppointmentErased(occurred_at=now)
        self._record(event)
        return event

    def apply(self, event: AppointmentEvent) -> None:
        match event:
            case AppointmentCreated():
                self.department_id = event.department_id
                self.starts_at = event.starts_at
                self.duration_minutes = event.duration_minutes
                self.name = event.name
                self.email = event.email
                self.phone = event.phone
                self.notes = event.notes
                self.status = Status.PENDING
                self.created_at = event.occurred_at
            case AppointmentUpdated():
                for name, (_old, new) in event.changes.items():
                    setattr(self, name, new)
            case AppointmentValidated():
                self.status = Status.VALIDATED
            case AppointmentCompleted():
                self.status = Status.COMPLETED
            case AppointmentCancelled():
                self.status = Status.CANCELLED
                self.cancellation_reason = event.reason
            case AppointmentErased():
                for name in PERSONAL_FIELDS:
                    setattr(self, name, None)
                self.erased_at = event.occurred_at
        self.version += 1
        self.updated_at = event.occurred_at

    @property
    def occupies_slot(self) -> bool:
        return self.status is not Status.CANCELLED

    def _check_not_erased(self) -> None:
        if self.erased_at is not None:
            raise Conflict(f"Appointment {self.id} was erased; it cannot be changed any more.")

    def _check(self, target: Status) -> None:
        self._check_not_erased()
        if self.status not in ALLOWED_FROM[target]:
            raise IllegalTransition(self.status, target)

    def _record(self, event: AppointmentEvent) -> None:
        self.apply(event)
        self.pending_events.append(event)
