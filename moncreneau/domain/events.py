"""Events: appointment facts in the past tense, their stored JSON form, and every type name."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar

# Fields whose values are datetimes inside `AppointmentUpdated.changes`.
_DATETIME_FIELDS = frozenset({"starts_at"})


@dataclass(frozen=True)
class AppointmentCreated:
    type: ClassVar[str] = "appointment.created"
    occurred_at: datetime
    department_id: int
    starts_at: datetime
    duration_minutes: int
    # null once the appointment is erased
    name: str | None
    email: str | None = None
    phone: str | None = None
    notes: str | None = None


@dataclass(frozen=True)
class AppointmentUpdated:
    """`changes` maps each changed field to its (old, new) values."""

    type: ClassVar[str] = "appointment.updated"
    occurred_at: datetime
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class AppointmentValidated:
    type: ClassVar[str] = "appointment.validated"
    occurred_at: datetime


@dataclass(frozen=True)
class AppointmentCompleted:
    type: ClassVar[str] = "appointment.completed"
    occurred_at: datetime


@dataclass(frozen=True)
class AppointmentCancelled:
    type: ClassVar[str] = "appointment.cancelled"
    occurred_at: datetime
    reason: str | None = None


@dataclass(frozen=True)
class AppointmentErased:
    """The personal data was erased; the events before it read null where it was."""

    type: ClassVar[str] = "appointment.erased"
    occurred_at: datetime


AppointmentEvent = (
    AppointmentCreated
    | AppointmentUpdated
    | AppointmentValidated
    | AppointmentCompleted
    | AppointmentCancelled
    | AppointmentErased
)

EVENT_CLASSES: dict[str, type[AppointmentEvent]] = {
    cls.type: cls
    for cls in (
        AppointmentCreated,
        AppointmentUpdated,
        AppointmentValidated,
        AppointmentCompleted,
        AppointmentCancelled,
        AppointmentErased,
    )
}
APPOINTMENT_EVENT_TYPES = tuple(EVENT_CLASSES)

# Events of a webhook rather than of an appointment.
TEST_EVENT = "webhook.test"
DISABLED_EVENT = "webhook.disabled"
# What a webhook may subscribe to (a test is sent to one endpoint on request, never fanned out).
SUBSCRIBABLE = (*APPOINTMENT_EVENT_TYPES, DISABLED_EVENT)
# Every type in the log.
EVENT_TYPES = (*APPOINTMENT_EVENT_TYPES, TEST_EVENT, DISABLED_EVENT)


def _encode_value(name: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _decode_value(name: str, value: Any) -> Any:
    if name in _DATETIME_FIELDS and isinstance(value, str):
        return datetime.fromisoformat(value)
    return value


def encode(event: AppointmentEvent) -> dict[str, Any]:
    """The event's facts as JSON-ready data (the type and time are stored beside it)."""
    data = asdict(event)
    data.pop("occurred_at")
    if isinstance(event, AppointmentUpdated):
        data["changes"] = {
            name: [_encode_value(name, old), _encode_value(name, new)]
            for name, (old, new) in event.changes.items()
        }
    else:
        data = {name: _encode_value(name, value) for name, value in data.items()}
    return data


def decode(type_: str, occurred_at: datetime, data: dict[str, Any]) -> AppointmentEvent:
    try:
        cls = EVENT_CLASSES[type_]
    except KeyError:
        raise ValueError(f"not an appointment event type: {type_!r}") from None
    if cls is AppointmentUpdated:
        changes = {
            name: (_decode_value(name, old), _decode_value(name, new))
            for name, (old, new) in data["changes"].items()
        }
        return AppointmentUpdated(occurred_at=occurred_at, changes=changes)
    known = {f.name for f in fields(cls)} - {"occurred_at"}
    values = {name: _decode_value(name, data[name]) for name in known if name in data}
    return cls(occurred_at=occurred_at, **values)
