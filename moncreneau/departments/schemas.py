"""Request and response bodies of /api/v1/departments."""

from __future__ import annotations

import marshmallow as ma

from moncreneau.api.fields import StrictInteger, Text
from moncreneau.api.web import page_schema
from moncreneau.departments.service import zones


def not_blank(value: str) -> None:
    if not value.strip():
        raise ma.ValidationError("Must not be blank.")


def known_zone(value: str) -> None:
    # Not an enum in the spec: the list grows with each tzdata release, the API with it.
    if value not in zones():
        raise ma.ValidationError(f"Unknown IANA time zone {value!r}.")


class DepartmentCreate(ma.Schema):
    name = Text(required=True, validate=[ma.validate.Length(min=1, max=200), not_blank])
    timezone = Text(
        required=True,
        validate=[ma.validate.Length(max=64), known_zone],
        metadata={
            "description": "An IANA time zone name of the tz database, e.g. `Europe/Paris`.",
            "example": "Europe/Paris",
            "pattern": r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$",
        },
    )
    slot_minutes = StrictInteger(
        data_key="slotMinutes",
        load_default=30,
        validate=ma.validate.Range(min=1, max=1440),
        metadata={"description": "Length of a slot; appointments start on slot boundaries."},
    )
    capacity = StrictInteger(
        load_default=1,
        validate=ma.validate.Range(min=1, max=10_000),
        metadata={"description": "How many appointments may share one start time."},
    )


class Department(ma.Schema):
    id = ma.fields.Integer(required=True)
    name = ma.fields.String(required=True)
    timezone = ma.fields.String(required=True)
    slotMinutes = ma.fields.Integer(required=True)
    capacity = ma.fields.Integer(required=True)
    createdAt = ma.fields.String(required=True, metadata={"format": "date-time"})
    updatedAt = ma.fields.String(required=True, metadata={"format": "date-time"})


DepartmentPage = page_schema(Department, "DepartmentPage")
