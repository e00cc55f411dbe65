"""The public JSON form of an appointment, shared by API responses and event payloads."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from moncreneau.clock import iso_utc
from moncreneau.domain.appointments import Appointment
from moncreneau.domain.events import AppointmentUpdated

# domain attribute -> public field name
PUBLIC_NAMES = {
    "starts_at": "dateTime",
    "duration_minutes": "durationMinutes",
    "name": "name",
    "email": "email",
    "phone": "phone",
    "notes": "notes",
}


def _value(name: str, value: Any, tz: ZoneInfo) -> Any:
    if name == "starts_at" and isinstance(value, datetime):
        return value.astimezone(tz).isoformat()
    return value


def represent(appointment: Appointment, tz: ZoneInfo) -> dict[str, Any]:
    assert appointment.created_at and appointment.updated_at and appointment.starts_at
    return {
        "id": appointment.id,
        "departmentId": appointment.department_id,
        "dateTime": _value("starts_at", appointment.starts_at, tz),
        "durationMinutes": appointment.duration_minutes,
        "name": appointment.name,
        "email": appointment.email,
        "phone": appointment.phone,
        "notes": appointment.notes,
        "status": appointment.status.value,
        "cancellationReason": appointment.cancellation_reason,
        "version": appointment.version,
        "createdAt": iso_utc(appointment.created_at),
        "updatedAt": iso_utc(appointment.updated_at),
        "erasedAt": iso_utc(appointment.erased_at) if appointment.erased_at else None,
    }


def previous_attributes(event: AppointmentUpdated, tz: ZoneInfo) -> dict[str, Any]:
    return {
        PUBLIC_NAMES[name]: _value(name, old, tz) for name, (old, _new) in event.changes.items()
    }
