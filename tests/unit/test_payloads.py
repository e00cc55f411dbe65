"""Payload versions and thin payloads, rendered from one stored event."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from moncreneau.models import EventRecord
from moncreneau.outbox import payloads

OBJECT = {
    "id": 12,
    "departmentId": 3,
    "dateTime": "2026-02-01T11:00:00+01:00",
    "durationMinutes": 30,
    "name": "Jeanne Martin",
    "email": "jeanne@example.org",
    "phone": "+33 6 12 34 56 78",
    "notes": "allergic",
    "status": "pending",
    "cancellationReason": None,
    "version": 2,
    "createdAt": "2026-01-20T08:00:00Z",
    "updatedAt": "2026-01-21T08:00:00Z",
}
UPDATED = EventRecord(
    id="evt_01m84hjxsspb63g4effsmbahra",
    type="appointment.updated",
    created_at=datetime(2026, 1, 21, 8, 0, tzinfo=UTC),
    object=OBJECT,
    previous_attributes={"dateTime": "2026-02-01T10:00:00+01:00", "name": "Jeanne"},
)


def test_version_1_carries_previous_attributes() -> None:
    body = json.loads(payloads.render(UPDATED, "1.0"))
    assert body["version"] == "1.0"
    assert body["data"] == {
        "object": OBJECT,
        "previousAttributes": {"dateTime": "2026-02-01T10:00:00+01:00", "name": "Jeanne"},
    }


def test_version_2_carries_old_and_new_values_of_each_change() -> None:
    body = json.loads(payloads.render(UPDATED, "2.0"))
    assert body["version"] == "2.0"
    assert body["data"]["changes"] == {
        "dateTime": {"old": "2026-02-01T10:00:00+01:00", "new": "2026-02-01T11:00:00+01:00"},
        "name": {"old": "Jeanne", "new": "Jeanne Martin"},
    }
    assert "previousAttributes" not in body["data"]


def test_a_thin_payload_carries_no_personal_data_in_any_version() -> None:
    for version in payloads.VERSIONS:
        raw = payloads.render(UPDATED, version, payloads.THIN)
        for secret in ("Jeanne", "jeanne@example.org", "+33 6 12", "allergic"):
            assert secret not in raw, (version, secret)
        data = json.loads(raw)["data"]
        assert data["object"]["id"] == 12
        assert data["object"]["version"] == 2
        assert data["object"]["status"] == "pending"
        assert data["changedFields"] == ["dateTime", "name"]


def test_rendering_is_byte_stable() -> None:
    assert payloads.render(UPDATED, "2.0") == payloads.render(UPDATED, "2.0")
    assert payloads.render(UPDATED, "2.0", payloads.THIN) == payloads.render(
        UPDATED, "2.0", payloads.THIN
    )
