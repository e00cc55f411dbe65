"""Request and response bodies of /api/v1/appointments."""

from __future__ import annotations

import marshmallow as ma

from moncreneau.api.fields import MAX_ID, DateTime, Email, Id, StrictInteger, Text
from moncreneau.departments.schemas import not_blank
from moncreneau.domain.appointments import Status

DATE_TIME_HELP = (
    "ISO 8601 start time. Without an offset it is local time in the department's time zone; "
    "it must fall on a slot boundary."
)


class _Contact(ma.Schema):
    name = Text(validate=[ma.validate.Length(min=1, max=200), not_blank])
    email = Email(allow_none=True, validate=ma.validate.Length(max=254))
    phone = Text(
        allow_none=True,
        validate=[
            ma.validate.Length(max=40),
            ma.validate.Regexp(
                r"^\+?[0-9 ().-]{3,39}$", error="Not a phone number (digits, spaces, + ( ) . -)."
            ),
        ],
    )
    notes = Text(allow_none=True, validate=ma.validate.Length(max=2000))
    duration_minutes = StrictInteger(
        data_key="durationMinutes",
        validate=ma.validate.Range(min=1, max=1440),
        metadata={"description": "Defaults to the department's slot length."},
    )


class AppointmentCreate(_Contact):
    department_id = Id(data_key="departmentId", required=True)
    date_time = DateTime(
        data_key="dateTime",
        required=True,
        metadata={"description": DATE_TIME_HELP, "example": "2026-02-01T10:00:00"},
    )
    name = Text(required=True, validate=[ma.validate.Length(min=1, max=200), not_blank])


class AppointmentChange(_Contact):
    date_time = DateTime(data_key="dateTime", metadata={"description": DATE_TIME_HELP})


class NoBody(ma.Schema):
    """Validate and complete take no fields; a body, if any, must be an empty JSON object."""


class CancelBody(ma.Schema):
    reason = Text(allow_none=True, validate=ma.validate.Length(max=500))


class AppointmentQuery(ma.Schema):
    status = ma.fields.Enum(Status, by_value=True)
    department_id = ma.fields.Integer(
        data_key="departmentId", validate=ma.validate.Range(min=1, max=MAX_ID)
    )
    starts_from = DateTime(
        data_key="from", metadata={"description": "Starts at or after (no offset means UTC)."}
    )
    starts_before = DateTime(
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
    name = ma.fields.String(
        required=True, allow_none=True, metadata={"description": "Null once erased."}
    )
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
    erasedAt = ma.fields.String(
        allow_none=True,
        metadata={
            "format": "date-time",
            "description": "When its personal data was erased (`POST /erasures`); from then on "
            "`name`, `email`, `phone`, `notes` and `cancellationReason` are null and it "
            "cannot be changed.",
        },
    )
