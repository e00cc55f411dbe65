"""Event envelopes, one renderer per payload version; every version stays deliverable.

- `1.0`: `data.object` is the resource after the event; `appointment.updated` adds
  `data.previousAttributes`, the changed fields' old values.
- `2.0`: as `1.0`, but `appointment.updated` carries `data.changes` instead, each changed
  field with both values: `{"dateTime": {"old": "...", "new": "..."}}`.

Either version can be `thin`: no personal data (name, email, phone, notes, cancellation
reason) in `data.object` nor among the old values; `data.changedFields` still names every
changed field, and the receiver fetches the rest with its key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from moncreneau.clock import iso_utc


class Publishable(Protocol):
    """An event as stored, or as opened by `moncreneau.personal.reveal`."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def object(self) -> dict[str, Any]: ...
    @property
    def previous_attributes(self) -> dict[str, Any] | None: ...


V1 = "1.0"
V2 = "2.0"


def _base(event: Publishable, version: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "created": iso_utc(event.created_at),
        "version": version,
        "data": data,
    }


def envelope_v1(event: Publishable) -> dict[str, Any]:
    """`{"id", "type", "created", "version": "1.0", "data": {"object", "previousAttributes"?}}`."""
    data: dict[str, Any] = {"object": event.object}
    if event.previous_attributes is not None:
        data["previousAttributes"] = event.previous_attributes
    return _base(event, V1, data)


def envelope_v2(event: Publishable) -> dict[str, Any]:
    data: dict[str, Any] = {"object": event.object}
    if event.previous_attributes is not None:
        data["changes"] = {
            name: {"old": old, "new": event.object.get(name)}
            for name, old in event.previous_attributes.items()
        }
    return _base(event, V2, data)


RENDERERS: dict[str, Callable[[Publishable], dict[str, Any]]] = {V1: envelope_v1, V2: envelope_v2}
VERSIONS = tuple(RENDERERS)
LATEST = V2


FULL = "full"
THIN = "thin"
STYLES = (FULL, THIN)
PERSONAL_FIELDS = frozenset({"name", "email", "phone", "notes", "cancellationReason"})


def thin(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope without personal data; ids, status, versions and times stay."""
    data = envelope["data"]
    slim: dict[str, Any] = {
        "object": {k: v for k, v in data["object"].items() if k not in PERSONAL_FIELDS}
    }
    for key in ("previousAttributes", "changes"):
        if key in data:
            slim[key] = {k: v for k, v in data[key].items() if k not in PERSONAL_FIELDS}
            slim["changedFields"] = sorted(data[key])
    return {**envelope, "data": slim}


def render(event: Publishable, version: str, style: str = FULL) -> str:
    """The exact body sent for this event in this version (compact JSON, UTF-8 text)."""
    envelope = RENDERERS[version](event)
    if style == THIN:
        envelope = thin(envelope)
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
