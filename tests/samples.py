"""A sample delivery body shared by the receiver tests."""

from __future__ import annotations

import json
from typing import Any

EVENT: dict[str, Any] = {
    "id": "evt_01jd3k5q8c2v0t7m6x4yb9r1ze",
    "type": "appointment.created",
    "created": "2026-02-01T09:00:03Z",
    "version": "1.0",
    "data": {"object": {"id": 123, "status": "pending", "version": 1}},
}
BODY = json.dumps(EVENT).encode()
