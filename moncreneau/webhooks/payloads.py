"""Event envelopes, one renderer per payload version."""

from __future__ import annotations

from typing import Any

from moncreneau.clock import iso_utc
from moncreneau.models import EventRecord

V1 = "1.0"


def envelope_v1(event: EventRecord) -> dict[str, Any]:
    """`{"id", "type", "created", "version": "1.0", "data": {"object", "previousAttributes"?}}`."""
    data: dict[str, Any] = {"object": event.object}
    if event.previous_attributes is not None:
        data["previousAttributes"] = event.previous_attributes
    return {
        "id": event.id,
        "type": event.type,
        "created": iso_utc(event.created_at),
        "version": V1,
        "data": data,
    }
