"""Appointment commands and queries; each command appends its event in the caller's transaction."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from moncreneau import personal
from moncreneau.appointments.representation import previous_attributes, represent
from moncreneau.clock import utcnow
from moncreneau.db import LockKind, lock
from moncreneau.departments.service import Rules, rules, zone
from moncreneau.domain import events as domain_events
from moncreneau.domain.appointments import Appointment, Status
from moncreneau.domain.errors import Conflict, Invalid, NotFound, PreconditionFailed
from moncreneau.domain.events import AppointmentEvent, AppointmentUpdated
from moncreneau.models import AppointmentRow, Department, EventRecord, PersonalKey
from moncreneau.outbox import store
from moncreneau.outbox.payloads import envelope_v1
from moncreneau.pagination import Page, keyset_page
from moncreneau.personal import EMAIL, PHONE, Revealed, Vault

PROJECTED = (
    "department_id",
    "starts_at",
    "duration_minutes",
    "name",
    "email",
    "phone",
    "notes",
    "cancellation_reason",
    "version",
    "created_at",
    "updated_at",
    "erased_at",
)


@dataclass(frozen=True)
class NewAppointment:
    department_id: int
    date_time: datetime
    name: str
    email: str | None = None
    phone: str | None = None
    notes: str | None = None
    duration_minutes: int | None = None


@dataclass(frozen=True)
class AppointmentFilter:
    status: str | None = None
    department_id: int | None = None
    starts_from: datetime | None = None
    starts_before: datetime | None = None


def resolve_start(value: datetime, tz: ZoneInfo, slot_minutes: int) -> datetime:
    """The UTC instant of a requested start; naive values are the department's local time."""
    if value.tzinfo is None:
        local = value.replace(tzinfo=tz)
        if local.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != value:
            raise Invalid.field(
                "dateTime", f"{value.isoformat()} does not exist in {tz.key} (clocks go forward)."
            )
    else:
        local = value.astimezone(tz)
    minutes = local.hour * 60 + local.minute
    if local.second or local.microsecond or minutes % slot_minutes:
        raise Invalid.field(
            "dateTime",
            f"{local.isoformat()} is not on a {slot_minutes}-minute slot boundary "
            f"of the department's day in {tz.key}.",
        )
    return local.astimezone(UTC)


def _department(session: Session, organization_id: int, department_id: int) -> Rules:
    """The organization's department (departments never change once created)."""
    department = rules(session, department_id)
    if department is None or department.organization_id != organization_id:
        raise Invalid.field("departmentId", f"No department with id {department_id}.")
    return department


def _lock_slot(session: Session, department: Rules, starts_at: datetime) -> None:
    """Serialize the bookings of one start time until commit: capacity is per start time.

    Bookings of other start times, in this department or another, go on in parallel.
    """
    lock(session, LockKind.SLOT, f"{department.id}:{starts_at.isoformat()}")


# Built once: a booking's own work is a few statements, and building this one cost a third
# of running it.
_TAKEN = select(func.count()).where(
    AppointmentRow.department_id == bindparam("department_id"),
    AppointmentRow.starts_at == bindparam("starts_at"),
    AppointmentRow.status != Status.CANCELLED.value,
)
_TAKEN_BY_OTHERS = _TAKEN.where(AppointmentRow.id != bindparam("exclude"))


def _check_capacity(
    session: Session, department: Rules, starts_at: datetime, exclude: int | None = None
) -> None:
    """The caller holds the slot's lock, so no other booking can slip in meanwhile."""
    query = _TAKEN if exclude is None else _TAKEN_BY_OTHERS
    taken = session.scalar(
        query, {"department_id": department.id, "starts_at": starts_at, "exclude": exclude}
    )
    if (taken or 0) >= department.capacity:
        local = starts_at.astimezone(zone(department.timezone)).isoformat()
        raise Conflict(
            f"The slot at {local} is full: department {department.id} takes "
            f"{department.capacity} appointment(s) per start time."
        )


# The projection row and the sequence of the appointment's last event, read in one
# statement (one snapshot): the row is written in the transaction that appends each event.
_CURRENT = (
    select(
        AppointmentRow,
        select(func.max(EventRecord.sequence))
        .where(EventRecord.appointment_id == AppointmentRow.id)
        .scalar_subquery(),
    )
    .where(AppointmentRow.id == bindparam("id"))
    .execution_options(populate_existing=True)
)


def _load(
    session: Session, vault: Vault, organization_id: int, appointment_id: int
) -> tuple[Appointment, int, bytes | None]:
    """The appointment as its events say, the version its projection row is at, and its
    data key (None once erased).

    The row is the fold of the events whenever its version is the last event's sequence, so
    a change costs the same whatever the history's length. A row that is not (changed
    behind the application's back) costs one fold, and the change rewrites it.
    """
    found = session.execute(_CURRENT, {"id": appointment_id}).first()
    if found is None or found[0].organization_id != organization_id:
        raise NotFound(f"No appointment with id {appointment_id}.")
    row, last_sequence = found
    key = personal.keys_of(session, vault, [appointment_id]).get(appointment_id)
    if row.version == last_sequence:
        return _from_row(row), row.version, key
    history = store.appointment_history(session, appointment_id)
    revealed = [personal.open_event(e, key) for e in history]
    appointment = Appointment.from_events(appointment_id, organization_id, decode_history(revealed))
    return appointment, row.version, key


def decode_history(history: list[Revealed]) -> list[AppointmentEvent]:
    return [domain_events.decode(e.type, e.created_at, e.data) for e in history]


def _department_zone(session: Session, department_id: int) -> ZoneInfo:
    department = rules(session, department_id)
    assert department is not None
    return zone(department.timezone)


def _row_values(appointment: Appointment) -> dict[str, Any]:
    values = {name: getattr(appointment, name) for name in PROJECTED}
    values["status"] = appointment.status.value
    return values


def _append(
    session: Session,
    appointment: Appointment,
    tz: ZoneInfo,
    event: AppointmentEvent,
    key: bytes | None,
) -> EventRecord:
    """Append the event with its personal values sealed under the appointment's key."""
    record = store.append(
        session,
        organization_id=appointment.organization_id,
        type=event.type,
        occurred_at=event.occurred_at,
        data=domain_events.encode(event),
        object=represent(appointment, tz),
        previous_attributes=(
            previous_attributes(event, tz) if isinstance(event, AppointmentUpdated) else None
        ),
        appointment_id=appointment.id,
        sequence=appointment.version,
    )
    if key is not None:
        personal.seal(record, key)
    else:
        # No key, nothing to keep: an erased appointment's event carries no personal value.
        record.data, record.object, record.previous_attributes = _without_personal(record)
    return record


def _without_personal(
    record: EventRecord,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    parts, _taken = personal.split(
        personal.Parts(record.data, record.object, record.previous_attributes)
    )
    return parts.data, parts.object, parts.previous_attributes


def _save(
    session: Session,
    appointment: Appointment,
    tz: ZoneInfo,
    expected: int,
    preconditioned: bool,
    key: bytes | None,
) -> None:
    """Move the projection from version `expected` on and append the recorded events.

    Losing a race to another writer is a 412 when the caller named a version (If-Match),
    a 409 otherwise.
    """
    result = session.execute(
        update(AppointmentRow)
        .where(AppointmentRow.id == appointment.id, AppointmentRow.version == expected)
        .values(**_row_values(appointment))
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        message = (
            f"Appointment {appointment.id} was changed by another request; read it again and retry."
        )
        raise PreconditionFailed(message) if preconditioned else Conflict(message)
    for event in appointment.pending_events:
        _append(session, appointment, tz, event, key)
    appointment.pending_events.clear()


def _check_precondition(appointment: Appointment, expected: Collection[int] | None) -> None:
    if expected is not None and appointment.version not in expected:
        named = ", ".join(f'"{v}"' for v in sorted(expected)) or "no strong version tag"
        raise PreconditionFailed(
            f'Appointment {appointment.id} is at version "{appointment.version}"; '
            f"If-Match named {named}."
        )


def book(
    session: Session, organization_id: int, new: NewAppointment, *, vault: Vault
) -> dict[str, Any]:
    department = _department(session, organization_id, new.department_id)
    tz = zone(department.timezone)
    starts_at = resolve_start(new.date_time, tz, department.slot_minutes)
    _lock_slot(session, department, starts_at)
    _check_capacity(session, department, starts_at)
    appointment = Appointment.book(
        0,
        organization_id,
        department_id=department.id,
        starts_at=starts_at,
        duration_minutes=new.duration_minutes or department.slot_minutes,
        name=new.name,
        email=new.email,
        phone=new.phone,
        notes=new.notes,
        now=utcnow(),
    )
    row = AppointmentRow(organization_id=organization_id, **_row_values(appointment))
    session.add(row)
    session.flush()
    appointment.id = row.id
    key = personal.issue(
        session, vault, organization_id, row.id, new.email, new.phone, row.created_at
    )
    for event in appointment.pending_events:
        _append(session, appointment, tz, event, key)
    appointment.pending_events.clear()
    return represent(appointment, tz)


def change(
    session: Session,
    organization_id: int,
    appointment_id: int,
    values: dict[str, Any],
    expected_versions: Collection[int] | None = None,
    *,
    vault: Vault,
) -> dict[str, Any]:
    """Reschedule (`date_time`) or change contact details; a no-op records no event."""
    appointment, before, key = _load(session, vault, organization_id, appointment_id)
    _check_precondition(appointment, expected_versions)
    values = dict(values)
    department: Rules | None = None
    if "date_time" in values:
        department = _department(session, organization_id, appointment.department_id)
        tz = zone(department.timezone)
        values["starts_at"] = resolve_start(values.pop("date_time"), tz, department.slot_minutes)
    else:
        tz = _department_zone(session, appointment.department_id)
    event = appointment.change(utcnow(), **values)
    if event is None:
        return represent(appointment, tz)
    if department is not None and "starts_at" in event.changes and appointment.occupies_slot:
        assert appointment.starts_at is not None
        _lock_slot(session, department, appointment.starts_at)
        _check_capacity(session, department, appointment.starts_at, exclude=appointment.id)
    _save(session, appointment, tz, before, expected_versions is not None, key)
    if EMAIL in event.changes or PHONE in event.changes:
        session.execute(
            update(PersonalKey)
            .where(PersonalKey.appointment_id == appointment.id)
            .values(
                email_index=vault.index(EMAIL, appointment.email),
                phone_index=vault.index(PHONE, appointment.phone),
            )
        )
    return represent(appointment, tz)


def transition(
    session: Session,
    organization_id: int,
    appointment_id: int,
    action: str,
    expected_versions: Collection[int] | None = None,
    reason: str | None = None,
    *,
    vault: Vault,
) -> dict[str, Any]:
    """`validate`, `complete` or `cancel`; an illegal move is a Conflict and records nothing."""
    appointment, before, key = _load(session, vault, organization_id, appointment_id)
    _check_precondition(appointment, expected_versions)
    now = utcnow()
    if action == "validate":
        appointment.validate(now)
    elif action == "complete":
        appointment.complete(now)
    elif action == "cancel":
        appointment.cancel(now, reason)
    else:
        raise ValueError(f"unknown lifecycle action {action!r}")
    tz = _department_zone(session, appointment.department_id)
    _save(session, appointment, tz, before, expected_versions is not None, key)
    return represent(appointment, tz)


def _from_row(row: AppointmentRow) -> Appointment:
    return Appointment(
        id=row.id,
        organization_id=row.organization_id,
        status=Status(row.status),
        **{name: getattr(row, name) for name in PROJECTED},
    )


def get(session: Session, organization_id: int, appointment_id: int) -> dict[str, Any]:
    row = session.get(AppointmentRow, appointment_id)
    if row is None or row.organization_id != organization_id:
        raise NotFound(f"No appointment with id {appointment_id}.")
    return represent(_from_row(row), _department_zone(session, row.department_id))


def list_page(
    session: Session,
    organization_id: int,
    filters: AppointmentFilter,
    limit: int,
    cursor: str | None,
) -> Page[dict[str, Any]]:
    query = select(AppointmentRow).where(AppointmentRow.organization_id == organization_id)
    if filters.status:
        query = query.where(AppointmentRow.status == filters.status)
    if filters.department_id is not None:
        query = query.where(AppointmentRow.department_id == filters.department_id)
    if filters.starts_from is not None:
        query = query.where(AppointmentRow.starts_at >= filters.starts_from)
    if filters.starts_before is not None:
        query = query.where(AppointmentRow.starts_at < filters.starts_before)

    def render(rows: list[AppointmentRow]) -> list[dict[str, Any]]:
        departments = select(Department).where(Department.id.in_({r.department_id for r in rows}))
        zones = {d.id: zone(d.timezone) for d in session.scalars(departments)}
        return [represent(_from_row(r), zones[r.department_id]) for r in rows]

    return keyset_page(session, query, AppointmentRow.id, "appointments", limit, cursor, render)


def history(
    session: Session,
    organization_id: int,
    appointment_id: int,
    limit: int,
    cursor: str | None,
    *,
    vault: Vault,
) -> Page[dict[str, Any]]:
    """The appointment's events, oldest first, a page at a time."""
    row = session.get(AppointmentRow, appointment_id)
    if row is None or row.organization_id != organization_id:
        raise NotFound(f"No appointment with id {appointment_id}.")
    query = select(EventRecord).where(EventRecord.appointment_id == appointment_id)
    # Every event of an appointment has its sequence (1, 2, ...); only other events have none.
    sequence = cast("InstrumentedAttribute[int]", EventRecord.sequence)
    return keyset_page(
        session,
        query,
        sequence,
        "history",
        limit,
        cursor,
        lambda rows: [envelope_v1(r) for r in personal.reveal(session, vault, rows)],
    )


def rebuild_projections(session: Session, vault: Vault) -> int:
    """Replace every appointment row by the fold of its events; returns how many were built."""
    session.execute(delete(AppointmentRow))
    ids = session.scalars(
        select(EventRecord.appointment_id)
        .where(EventRecord.appointment_id.is_not(None))
        .distinct()
        .order_by(EventRecord.appointment_id)
    )
    count = 0
    for appointment_id in list(ids):
        assert appointment_id is not None
        records = personal.reveal(
            session, vault, store.appointment_history(session, appointment_id)
        )
        appointment = Appointment.from_events(
            appointment_id, records[0].organization_id, decode_history(records)
        )
        session.add(
            AppointmentRow(
                id=appointment.id,
                organization_id=appointment.organization_id,
                **_row_values(appointment),
            )
        )
        count += 1
    session.flush()
    return count


def erase(
    session: Session, organization_id: int, appointment_ids: Collection[int], now: datetime
) -> list[EventRecord]:
    """Erase those of these appointments that are not erased yet; returns their events.

    Each gets `appointment.erased`, its row loses its personal fields and its data key is
    deleted, so that every event before reads null. The rows are locked first (PostgreSQL):
    a change in flight commits before (and is erased with the rest) or fails on the version
    it expected (409, or 412 with If-Match).
    """
    query = (
        select(AppointmentRow)
        .where(
            AppointmentRow.organization_id == organization_id,
            AppointmentRow.id.in_(sorted(appointment_ids)),
            AppointmentRow.erased_at.is_(None),
        )
        .order_by(AppointmentRow.id)
        .execution_options(populate_existing=True)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    rows = list(session.scalars(query))
    if not rows:
        return []
    departments = select(Department).where(Department.id.in_({r.department_id for r in rows}))
    zones = {d.id: zone(d.timezone) for d in session.scalars(departments)}
    for row in rows:
        appointment = _from_row(row)
        appointment.erase(now)
        for name, value in _row_values(appointment).items():
            setattr(row, name, value)
        for event in appointment.pending_events:
            _append(session, appointment, zones[row.department_id], event, None)
    ids = [row.id for row in rows]
    # After the rows and before reading the events: a relay rendering them holds their keys
    # until it commits, and the deliveries it made are then visible here.
    session.execute(delete(PersonalKey).where(PersonalKey.appointment_id.in_(ids)))
    return list(
        session.scalars(
            select(EventRecord)
            .where(EventRecord.appointment_id.in_(ids))
            .order_by(EventRecord.position)
        )
    )
