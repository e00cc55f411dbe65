"""Request and response bodies of /api/v1/appointments."""

from __future__ import annotations

import marshmallow as ma

from moncreneau.departments.schemas import not_blank
from moncreneau.domain.appointments import Status
from moncreneau.web import StrictInteger

DATE_TIME_HELP = (
    "ISO 8601 start time. Without an offset it is local time in the department's time zone; "
    "it must fall on a slot boundary."
)


class _Contact(ma.Schema):
    name = ma.fields.String(validate=[ma.validate.Length(min=1, max=200), not_blank])
    email = ma.fields.Email(allow_none=True, validate=ma.validate.Length(max=254))
    phone = ma.fields.String(
        allow_none=True,
        validate=ma.validate.Regexp(
            r"^\+?[0-9 ().-]{3,40}$", error="Not a phone number (digits, spaces, + ( ) . -)."
        ),
    )
    notes = ma.fields.String(allow_none=True, validate=ma.validate.Length(max=2000))
    duration_minutes = StrictInteger(
        data_key="durationMinutes",
        validate=ma.validate.Range(min=1, max=1440),
        metadata={"description": "Defaults to the department's slot length."},
    )


class AppointmentCreate(_Contact):
    department_id = StrictInteger(
        data_key="departmentId", required=True, validate=ma.validate.Range(min=1)
    )
    date_time = ma.fields.DateTime(
        data_key="dateTime",
        required=True,
        metadata={"description": DATE_TIME_HELP, "example": "2026-02-01T10:00:00"},
    )
    name = ma.fields.String(required=True, validate=[ma.validate.Length(min=1, max=200), not_blank])


class AppointmentChange(_Contact):
    date_time = ma.fields.DateTime(data_key="dateTime", metadata={"description": DATE_TIME_HELP})


class CancelBody(ma.Schema):
    reason = ma.fields.String(allow_none=True, validate=ma.validate.Length(max=500))


class AppointmentQuery(ma.Schema):
    status = ma.fields.Enum(Status, by_value=True)
    department_id = ma.fields.Integer(data_key="departmentId", validate=ma.validate.Range(min=1))
    starts_from = ma.fields.DateTime(
        data_key="from", metadata={"description": "Starts at or after (no offset means UTC)."}
    )
    starts_before = ma.fields.DateTime(
        data_key="to", metadata={"description": "Starts before (no offset means UTC)."}
    )


class Appointment(ma.Schema):
    id = ma.fields.Integer(required=True)
    departmentId = ma.fields.Integer(required=True)
    dateTime = ma.fields.String(
        required=True,
        metadata={"format": "date-time", "description": "Local time with the department's offset."},
    )
    durationMinutes = ma.fields.Integer(required=True)
    name = ma.fields.String(required=True)
    email = ma.fields.String(allow_none=True)
    phone = ma.fields.String(allow_none=True)
    notes = ma.fields.String(allow_none=True)
    status = ma.fields.String(required=True, metadata={"enum": [s.value for s in Status]})
    cancellationReason = ma.fields.String(allow_none=True)
    version = ma.fields.Integer(
        required=True, metadata={"description": "Sequence number of the last event applied."}
    )
    createdAt = ma.fields.String(required=True, metadata={"format": "date-time"})
    updatedAt = ma.fields.String(required=True, metadata={"format": "date-time"})
