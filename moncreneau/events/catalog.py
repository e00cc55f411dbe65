"""The event catalog: each type, and per payload version a JSON Schema and a rendered example."""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any

import marshmallow as ma

from moncreneau.api import examples
from moncreneau.appointments.schemas import Appointment
from moncreneau.clock import iso_utc
from moncreneau.delivery.endpoints import represent
from moncreneau.domain.events import DISABLED_EVENT, EVENT_TYPES, SUBSCRIBABLE, TEST_EVENT
from moncreneau.models import EventRecord, WebhookSubscription
from moncreneau.outbox import payloads
from moncreneau.webhooks import service as webhooks
from moncreneau.webhooks.schemas import Webhook

DESCRIPTIONS = {
    "appointment.created": "An appointment was booked: `status` `pending`, `version` 1.",
    "appointment.updated": "An appointment was rescheduled or its contact details changed; "
    "the data names the changed fields and their old values (`previousAttributes` in 1.0, "
    "`changes` with old and new in 2.0).",
    "appointment.validated": "The clinic confirmed a pending appointment.",
    "appointment.completed": "A validated appointment took place.",
    "appointment.cancelled": "A pending or validated appointment was cancelled, "
    "with the reason given if any.",
    "appointment.erased": "The appointment's personal data was erased (on request, or after "
    "MONCRENEAU_ERASE_AFTER_DAYS): `name`, `email`, `phone`, `notes` and "
    "`cancellationReason` now read null everywhere and `erasedAt` says when; forget what "
    "you derived from them.",
    TEST_EVENT: "Sent on request to one endpoint only, to check that it receives "
    "and verifies deliveries; never sent otherwise.",
    DISABLED_EVENT: "A webhook of the organization was disabled after failing for "
    "too long (or answering 410 Gone); sent to the organization's other webhooks.",
}
# Fields of `appointment.updated` whose old values a payload may carry.
_CHANGEABLE = ("dateTime", "durationMinutes", "name", "email", "phone", "notes")
_JSON_TYPES: dict[type[ma.fields.Field], str] = {
    ma.fields.Integer: "integer",
    ma.fields.Float: "number",
    ma.fields.Boolean: "boolean",
    ma.fields.String: "string",
    ma.fields.List: "array",
}


def _property(field: ma.fields.Field) -> dict[str, Any]:
    kind = next(name for cls, name in _JSON_TYPES.items() if isinstance(field, cls))
    schema: dict[str, Any] = {"type": [kind, "null"] if field.allow_none else kind}
    if isinstance(field, ma.fields.List):
        schema["items"] = _property(field.inner)
    for key in ("enum", "format", "description"):
        if key in field.metadata:
            schema[key] = field.metadata[key]
    if "enum" in schema and field.allow_none:
        schema["enum"] = [*schema["enum"], None]
    return schema


def _object(resource: type[ma.Schema], optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The JSON Schema of a resource as the API answers it: every field, and no other."""
    fields = resource().fields
    return {
        "type": "object",
        "properties": {name: _property(field) for name, field in fields.items()},
        "required": [name for name in fields if name not in optional],
        "additionalProperties": False,
    }


def _appointment() -> dict[str, Any]:
    schema = _object(Appointment, payloads.PERSONAL_FIELDS)
    schema["description"] = (
        "The appointment right after the event. Thin payloads leave out the personal fields "
        f"({', '.join(sorted(payloads.PERSONAL_FIELDS))})."
    )
    return schema


_TEST_OBJECT = {
    "type": "object",
    "properties": {
        "webhookId": {"type": "integer"},
        "url": {"type": "string"},
        "message": {"type": "string"},
    },
    "required": ["webhookId", "url", "message"],
    "additionalProperties": False,
}


def _changed(appointment: dict[str, Any], version: str) -> dict[str, Any]:
    properties = appointment["properties"]
    if version == payloads.V1:
        values = {name: properties[name] for name in _CHANGEABLE}
        key = "previousAttributes"
        description = "The changed fields' old values."
    else:
        values = {
            name: {
                "type": "object",
                "properties": {"old": properties[name], "new": properties[name]},
                "required": ["old", "new"],
                "additionalProperties": False,
            }
            for name in _CHANGEABLE
        }
        key = "changes"
        description = "Each changed field with its old and new value."
    return {
        key: {
            "type": "object",
            "description": description,
            "properties": values,
            "additionalProperties": False,
            "minProperties": 1,
        }
    }


def schema(event_type: str, version: str) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a body of this type in this payload version."""
    appointment = event_type.startswith("appointment.")
    if appointment:
        obj = _appointment()
    elif event_type == TEST_EVENT:
        obj = _TEST_OBJECT
    else:
        obj = _object(Webhook)
    data: dict[str, Any] = {"object": obj}
    if event_type == "appointment.updated":
        data |= _changed(obj, version)
        data["changedFields"] = {
            "type": "array",
            "items": {"type": "string"},
            "description": "Thin payloads only: every changed field, personal ones included.",
        }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{event_type}, payload version {version}",
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^evt_[0-9a-z]+$"},
            "type": {"const": event_type},
            "created": {"type": "string", "format": "date-time"},
            "version": {"const": version},
            "data": {
                "type": "object",
                "properties": data,
                "required": [k for k in data if k != "changedFields"],
                "additionalProperties": False,
            },
        },
        "required": ["id", "type", "created", "version", "data"],
        "additionalProperties": False,
    }


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _disabled_webhook() -> WebhookSubscription:
    """The example webhook as `record_disabled` leaves it."""
    hook: dict[str, Any] = examples.WEBHOOK
    return WebhookSubscription(
        id=hook["id"],
        url=hook["url"],
        events=hook["events"],
        description=hook["description"],
        version=hook["version"],
        payload=hook["payload"],
        ordering=hook["ordering"],
        enabled=False,
        disabled_reason="Every delivery failed for 120 hours.",
        paused_until=None,
        previous_secret_expires_at=None,
        created_at=_at(hook["createdAt"]),
        updated_at=_at("2026-01-25T09:12:44Z"),
    )


def _example_event(event_type: str) -> EventRecord:
    """The examples' clinic: one appointment's story, a test send and a disabled webhook."""
    previous = None
    if event_type == TEST_EVENT:
        hook = _disabled_webhook()
        hook.enabled, hook.disabled_reason = True, None
        event_id, created = examples.TEST_EVENT_ID, "2026-01-15T10:02:11Z"
        obj = webhooks.test_object(hook)
    elif event_type == DISABLED_EVENT:
        hook = _disabled_webhook()
        event_id, created = examples.DISABLED_EVENT_ID, iso_utc(hook.updated_at)
        obj = represent(hook)
    else:
        event_id, obj = {
            "appointment.created": (examples.CREATED_EVENT_ID, examples.APPOINTMENT),
            "appointment.updated": (examples.UPDATED_EVENT_ID, examples.APPOINTMENT_RESCHEDULED),
            "appointment.validated": (
                examples.VALIDATED_EVENT_ID,
                examples.APPOINTMENT_VALIDATED,
            ),
            "appointment.completed": (
                examples.COMPLETED_EVENT_ID,
                examples.APPOINTMENT_COMPLETED,
            ),
            "appointment.cancelled": (
                examples.CANCELLED_EVENT_ID,
                examples.APPOINTMENT_CANCELLED,
            ),
            "appointment.erased": (examples.ERASED_EVENT_ID, examples.APPOINTMENT_ERASED),
        }[event_type]
        created = str(obj["updatedAt"])
        if event_type == "appointment.updated":
            previous = {"dateTime": examples.APPOINTMENT["dateTime"]}
    return EventRecord(
        id=event_id,
        type=event_type,
        object=obj,
        previous_attributes=previous,
        created_at=_at(created),
    )


def example(event_type: str, version: str) -> dict[str, Any]:
    """A body of this type in this version, exactly as a delivery would carry it."""
    rendered: dict[str, Any] = json.loads(payloads.render(_example_event(event_type), version))
    return rendered


@functools.cache
def catalog() -> list[dict[str, Any]]:
    """Every event type, in the order of `EVENT_TYPES`; the same for every caller."""
    return [
        {
            "type": event_type,
            "description": DESCRIPTIONS[event_type],
            "subscribable": event_type in SUBSCRIBABLE,
            "versions": [
                {
                    "version": version,
                    "schema": schema(event_type, version),
                    "example": example(event_type, version),
                }
                for version in payloads.VERSIONS
            ],
        }
        for event_type in EVENT_TYPES
    ]


def first_page_example() -> dict[str, Any]:
    """The list's documented example: its first type only, the rest being alike."""
    return {"data": catalog()[:1], "nextCursor": None, "hasMore": False}
