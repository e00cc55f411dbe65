"""Request and response bodies of /api/v1/erasures."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from moncreneau.api import examples
from moncreneau.api.fields import Email, Id, Text
from moncreneau.api.web import page_args, page_schema
from moncreneau.erasures.service import COMPLETED, MAX_APPOINTMENT_IDS, PENDING, SELECTORS


class ErasureCreate(ma.Schema):
    """Exactly one selector; its value is used to find the appointments and never kept."""

    email = Email(
        validate=ma.validate.Length(max=254),
        metadata={"description": "Every appointment booked with this email (case ignored)."},
    )
    phone = Text(
        validate=ma.validate.Length(min=1, max=40),
        metadata={
            "description": "Every appointment booked with this phone number (spaces, dots, "
            "dashes and parentheses ignored)."
        },
    )
    appointment_ids = ma.fields.List(
        Id(),
        data_key="appointmentIds",
        validate=ma.validate.Length(min=1, max=MAX_APPOINTMENT_IDS),
        metadata={"description": f"At most {MAX_APPOINTMENT_IDS:,} appointment ids."},
    )

    @ma.validates_schema
    def _exactly_one(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if len(data) != 1:
            raise ma.ValidationError("Give exactly one of email, phone or appointmentIds.")


class Erasure(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": examples.ERASURE_ID})
    status = ma.fields.String(
        required=True,
        metadata={
            "enum": [PENDING, COMPLETED],
            "description": "`pending` until every appointment is erased, then `completed`.",
        },
    )
    selector = ma.fields.String(
        required=True,
        metadata={
            "enum": list(SELECTORS),
            "description": "What the appointments were chosen by (never its value); "
            "`retention` for MONCRENEAU_ERASE_AFTER_DAYS.",
        },
    )
    requestedBy = ma.fields.String(
        allow_none=True,
        metadata={"description": "The prefix of the API key that asked; null if automatic."},
    )
    appointmentIds = ma.fields.List(
        ma.fields.Integer(),
        required=True,
        metadata={"description": "The organization's appointments it erases (maybe none)."},
    )
    createdAt = ma.fields.String(required=True, metadata={"format": "date-time"})
    completedAt = ma.fields.String(allow_none=True, metadata={"format": "date-time"})


ErasureQuery = page_args("erasures")
ErasurePage = page_schema(Erasure, "ErasurePage")
