"""Event envelopes as the API returns them."""

from __future__ import annotations

import marshmallow as ma

from moncreneau import examples
from moncreneau.domain.events import APPOINTMENT_EVENT_TYPES
from moncreneau.web import page_args, page_schema

EVENT_TYPES = (*APPOINTMENT_EVENT_TYPES, "webhook.test", "webhook.disabled")


class EventData(ma.Schema):
    object = ma.fields.Dict(
        required=True, metadata={"description": "The appointment as it was after this event."}
    )
    previousAttributes = ma.fields.Dict(
        metadata={"description": "`appointment.updated` only: the changed fields' old values."}
    )


class Event(ma.Schema):
    id = ma.fields.String(required=True, metadata={"example": examples.CREATED_EVENT_ID})
    type = ma.fields.String(required=True, metadata={"enum": list(EVENT_TYPES)})
    created = ma.fields.String(required=True, metadata={"format": "date-time"})
    version = ma.fields.String(required=True, metadata={"example": "1.0"})
    data = ma.fields.Nested(EventData, required=True)


# Keyed by (transaction, position); a cursor of a position alone is from before.
class EventQuery(page_args("events", parts=2)):  # type: ignore[misc]
    type = ma.fields.String(validate=ma.validate.OneOf(EVENT_TYPES))


EventPage = page_schema(Event, "EventPage")
