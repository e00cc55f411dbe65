"""Event envelopes as the API returns them."""

from __future__ import annotations

import marshmallow as ma

from moncreneau.api import examples
from moncreneau.api.web import page_args, page_schema
from moncreneau.domain.events import EVENT_TYPES


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


class EventTypeVersion(ma.Schema):
    version = ma.fields.String(required=True, metadata={"example": "2.0"})
    json_schema = ma.fields.Dict(
        attribute="schema",
        data_key="schema",
        required=True,
        metadata={"description": "The JSON Schema (2020-12) of a body in this version."},
    )
    example = ma.fields.Dict(
        required=True, metadata={"description": "A body as a delivery carries it."}
    )


class EventType(ma.Schema):
    type = ma.fields.String(required=True, metadata={"enum": list(EVENT_TYPES)})
    description = ma.fields.String(required=True)
    subscribable = ma.fields.Boolean(
        required=True,
        metadata={"description": "Whether a webhook may list it in `events` (not `webhook.test`)."},
    )
    versions = ma.fields.List(ma.fields.Nested(EventTypeVersion), required=True)


EventTypePage = page_schema(EventType, "EventTypePage")
