"""Sample bodies for the OpenAPI spec: one clinic's story, the same ids and times everywhere."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

DEPARTMENT_ID = 5
APPOINTMENT_ID = 123
WEBHOOK_ID = 7

TEST_EVENT_ID = "evt_01kf0hp0pa1tzr9pkksdd997vw"
CREATED_EVENT_ID = "evt_01kfd6nw6pegdb3bn7x9vd436j"
UPDATED_EVENT_ID = "evt_01kg01x552gvp8n9dw88najvhd"
VALIDATED_EVENT_ID = "evt_01kg1xkme9k0szpdyefszy539y"
CANCELLED_EVENT_ID = "evt_01kg7a2xw4t9m3qz8hv5rj6n0c"
COMPLETED_EVENT_ID = "evt_01kgf3tq2m8yv6h0c4rbn7wd5e"
DISABLED_EVENT_ID = "evt_01kg2c9d1s7b4e6yw0q3xfm8tj"
ERASED_EVENT_ID = "evt_01kjh2r7m4c9w0t6p8d3yq5zxb"
TEST_DELIVERY_ID = "msg_01kf0hp0pvjxgxejza328gjg39"
CREATED_DELIVERY_ID = "msg_01kfd6nw9dv1ayefvj6jvjs9dr"
UPDATED_DELIVERY_ID = "msg_01kg01x568esanqazb2fxj26kh"
ERASURE_ID = "ers_01kg3m2x7qz9v4c8d5e6f7g8h9"
SECRET = "whsec_4dpxfvSoIIXKP5oFbme1V5FRP7RaY05ck5r5R5im3yQ="
ROTATED_SECRET = "whsec_KXpI2kqUW5rk5e3Yd/GFCJ6pOVssD6NmPXnqW7CbBmk="


def _error(code: int, message: str, errors: dict[str, list[str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "status": HTTPStatus(code).phrase, "message": message}
    if errors:
        body["errors"] = errors
    return body


# Departments

DEPARTMENT_CREATE = {
    "name": "Radiologie",
    "timezone": "Europe/Paris",
    "slotMinutes": 30,
    "capacity": 1,
}
DEPARTMENT = {
    "id": DEPARTMENT_ID,
    **DEPARTMENT_CREATE,
    "createdAt": "2026-01-12T09:30:00Z",
    "updatedAt": "2026-01-12T09:30:00Z",
}
DEPARTMENT_PAGE = {"data": [DEPARTMENT], "nextCursor": None, "hasMore": False}

# Appointments: booked, rescheduled, validated, then completed or cancelled.

APPOINTMENT_CREATE = {
    "departmentId": DEPARTMENT_ID,
    "dateTime": "2026-02-01T10:00:00",
    "name": "Camille Martin",
    "email": "camille.martin@example.org",
    "phone": "+33 6 12 34 56 78",
    "notes": "Apporter les anciens clichés.",
}
APPOINTMENT = {
    "id": APPOINTMENT_ID,
    "departmentId": DEPARTMENT_ID,
    "dateTime": "2026-02-01T10:00:00+01:00",
    "durationMinutes": 30,
    "name": "Camille Martin",
    "email": "camille.martin@example.org",
    "phone": "+33 6 12 34 56 78",
    "notes": "Apporter les anciens clichés.",
    "status": "pending",
    "cancellationReason": None,
    "version": 1,
    "createdAt": "2026-01-20T08:00:00Z",
    "updatedAt": "2026-01-20T08:00:00Z",
    "erasedAt": None,
}
APPOINTMENT_CHANGE = {"dateTime": "2026-02-01T11:00:00"}
APPOINTMENT_RESCHEDULED = {
    **APPOINTMENT,
    "dateTime": "2026-02-01T11:00:00+01:00",
    "version": 2,
    "updatedAt": "2026-01-27T15:42:10Z",
}
APPOINTMENT_VALIDATED = {
    **APPOINTMENT_RESCHEDULED,
    "status": "validated",
    "version": 3,
    "updatedAt": "2026-01-28T09:05:32Z",
}
APPOINTMENT_COMPLETED = {
    **APPOINTMENT_VALIDATED,
    "status": "completed",
    "version": 4,
    "updatedAt": "2026-02-01T10:41:27Z",
}
CANCEL = {"reason": "The patient called to cancel."}
APPOINTMENT_CANCELLED = {
    **APPOINTMENT_VALIDATED,
    "status": "cancelled",
    "cancellationReason": CANCEL["reason"],
    "version": 4,
    "updatedAt": "2026-01-30T11:17:48Z",
}
APPOINTMENT_PAGE = {
    "data": [APPOINTMENT],
    "nextCursor": "eyJrIjoiYXBwb2ludG1lbnRzIiwiYSI6MTIzfQ",
    "hasMore": True,
}

SLOT_FULL = _error(
    409,
    "The slot at 2026-02-01T10:00:00+01:00 is full: "
    f"department {DEPARTMENT_ID} takes 1 appointment(s) per start time.",
)
RESCHEDULE_SLOT_FULL = _error(
    409,
    "The slot at 2026-02-01T11:00:00+01:00 is full: "
    f"department {DEPARTMENT_ID} takes 1 appointment(s) per start time.",
)
STALE_VERSION = _error(412, f'Appointment {APPOINTMENT_ID} is at version "2"; If-Match named "1".')
TRANSITION_CONFLICT = {
    "validate": _error(409, "cannot move an appointment from cancelled to validated"),
    "complete": _error(409, "cannot move an appointment from pending to completed"),
    "cancel": _error(409, "cannot move an appointment from completed to cancelled"),
}

# Events: the API serves envelopes in payload version 1.0.


def _envelope(
    event_id: str, type_: str, created: str, obj: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": type_,
        "created": created,
        "version": "1.0",
        "data": {"object": obj, **extra},
    }


CREATED_EVENT = _envelope(
    CREATED_EVENT_ID, "appointment.created", "2026-01-20T08:00:00Z", APPOINTMENT
)
UPDATED_EVENT = _envelope(
    UPDATED_EVENT_ID,
    "appointment.updated",
    "2026-01-27T15:42:10Z",
    APPOINTMENT_RESCHEDULED,
    previousAttributes={"dateTime": APPOINTMENT["dateTime"]},
)
VALIDATED_EVENT = _envelope(
    VALIDATED_EVENT_ID, "appointment.validated", "2026-01-28T09:05:32Z", APPOINTMENT_VALIDATED
)
EVENT_PAGE = {
    "data": [CREATED_EVENT, UPDATED_EVENT],
    "nextCursor": "events.2d1f8.1056",
    "hasMore": True,
}
APPOINTMENT_HISTORY = {
    "data": [CREATED_EVENT, UPDATED_EVENT, VALIDATED_EVENT],
    "nextCursor": None,
    "hasMore": False,
}

# Webhooks

WEBHOOK_URL = "https://example.org/webhooks/moncreneau"
WEBHOOK_CREATE = {
    "url": WEBHOOK_URL,
    "events": ["appointment.created"],
    "description": "Sync with the clinic's CRM",
}
WEBHOOK_CREATED = {
    "id": WEBHOOK_ID,
    **WEBHOOK_CREATE,
    "enabled": True,
    "version": "2.0",
    "payload": "full",
    "ordering": "none",
    "disabledReason": None,
    "pausedUntil": None,
    "previousSecretExpiresAt": None,
    "createdAt": "2026-01-15T10:00:00Z",
    "updatedAt": "2026-01-15T10:00:00Z",
    "secret": SECRET,
}
WEBHOOK_CHANGE = {"events": ["*"]}
WEBHOOK = {
    **{k: v for k, v in WEBHOOK_CREATED.items() if k != "secret"},
    "events": ["*"],
    "updatedAt": "2026-01-16T11:20:00Z",
}
WEBHOOK_WITH_HEALTH = {
    **WEBHOOK,
    "health": {
        "attempts24h": 48,
        "successRate24h": 0.9583,
        "lastSuccessAt": "2026-01-27T15:40:02Z",
        "lastFailureAt": "2026-01-27T15:43:21Z",
        "lastError": "HTTP 502",
        "waiting": 1,
        "nextAttemptAt": "2026-01-27T15:48:26Z",
    },
}
WEBHOOK_PAGE = {"data": [WEBHOOK], "nextCursor": None, "hasMore": False}
WEBHOOK_ROTATED = {
    **WEBHOOK,
    "previousSecretExpiresAt": "2026-01-31T09:00:00Z",
    "updatedAt": "2026-01-30T09:00:00Z",
    "secret": ROTATED_SECRET,
}
TEST_SENT = {"deliveryId": TEST_DELIVERY_ID, "eventId": TEST_EVENT_ID, "webhookId": WEBHOOK_ID}

# Deliveries to webhook 7 (payload version 2.0): one that succeeded on its second attempt,
# one still being retried.

CREATED_DELIVERY = {
    "id": CREATED_DELIVERY_ID,
    "webhookId": WEBHOOK_ID,
    "eventId": CREATED_EVENT_ID,
    "eventType": "appointment.created",
    "version": "2.0",
    "status": "succeeded",
    "attemptCount": 2,
    "nextAttemptAt": None,
    "lastStatusCode": 200,
    "lastError": None,
    "createdAt": "2026-01-20T08:00:00Z",
    "updatedAt": "2026-01-20T08:00:05Z",
}
UPDATED_DELIVERY = {
    "id": UPDATED_DELIVERY_ID,
    "webhookId": WEBHOOK_ID,
    "eventId": UPDATED_EVENT_ID,
    "eventType": "appointment.updated",
    "version": "2.0",
    "status": "failed",
    "attemptCount": 3,
    "nextAttemptAt": "2026-01-27T15:48:26Z",
    "lastStatusCode": 502,
    "lastError": "HTTP 502",
    "createdAt": "2026-01-27T15:42:10Z",
    "updatedAt": "2026-01-27T15:43:21Z",
}
DELIVERY_PAGE = {
    "data": [UPDATED_DELIVERY, CREATED_DELIVERY],
    "nextCursor": None,
    "hasMore": False,
}
CREATED_DELIVERY_DETAIL = {
    **CREATED_DELIVERY,
    "attempts": [
        {
            "number": 1,
            "at": "2026-01-20T08:00:00.348Z",
            "statusCode": 503,
            "durationMs": 212,
            "error": "HTTP 503",
            "responseBody": '{"error":"maintenance"}',
        },
        {
            "number": 2,
            "at": "2026-01-20T08:00:05.391Z",
            "statusCode": 200,
            "durationMs": 87,
            "error": None,
            "responseBody": '{"received":true}',
        },
    ],
    "payload": {**CREATED_EVENT, "version": "2.0"},
}
RETRIED_DELIVERY_DETAIL = {
    **UPDATED_DELIVERY,
    "nextAttemptAt": "2026-01-27T15:45:02Z",
    "updatedAt": "2026-01-27T15:45:02Z",
    "attempts": [
        {
            "number": 1,
            "at": "2026-01-27T15:42:10.164Z",
            "statusCode": None,
            "durationMs": 5004,
            "error": "connection timed out",
            "responseBody": None,
        },
        {
            "number": 2,
            "at": "2026-01-27T15:42:16.021Z",
            "statusCode": 502,
            "durationMs": 31,
            "error": "HTTP 502",
            "responseBody": "<html><body><h1>502 Bad Gateway</h1></body></html>",
        },
        {
            "number": 3,
            "at": "2026-01-27T15:43:21.730Z",
            "statusCode": 502,
            "durationMs": 28,
            "error": "HTTP 502",
            "responseBody": "<html><body><h1>502 Bad Gateway</h1></body></html>",
        },
    ],
    "payload": {
        **UPDATED_EVENT,
        "version": "2.0",
        "data": {
            "object": APPOINTMENT_RESCHEDULED,
            "changes": {
                "dateTime": {
                    "old": APPOINTMENT["dateTime"],
                    "new": APPOINTMENT_RESCHEDULED["dateTime"],
                }
            },
        },
    },
}
WEBHOOK_LIMIT = _error(
    409,
    "This organization has 100 webhooks, the most it may have (100); "
    "delete one before adding another.",
)
DELIVERY_BUSY = _error(
    409, f"Delivery {UPDATED_DELIVERY_ID} is being sent right now; retry once it settles."
)
REPLAY = {
    "from": "2026-01-27T00:00:00Z",
    "to": "2026-01-28T00:00:00Z",
    "statuses": ["failed", "dead"],
}
REPLAY_RESULT = {"count": 1, "deliveryIds": [UPDATED_DELIVERY_ID], "hasMore": False}

# Erasures: Camille Martin asked to be forgotten.

ERASURE_CREATE = {"email": APPOINTMENT_CREATE["email"]}
ERASURE_PENDING = {
    "id": ERASURE_ID,
    "status": "pending",
    "selector": "email",
    "requestedBy": "mck_7f3k2q9d",
    "appointmentIds": [APPOINTMENT_ID],
    "createdAt": "2026-03-02T09:00:00Z",
    "completedAt": None,
}
ERASURE_COMPLETED = {
    **ERASURE_PENDING,
    "status": "completed",
    "completedAt": "2026-03-02T09:00:01Z",
}
ERASURE_PAGE = {"data": [ERASURE_COMPLETED], "nextCursor": None, "hasMore": False}
APPOINTMENT_ERASED = {
    **APPOINTMENT_COMPLETED,
    **{field: None for field in ("name", "email", "phone", "notes", "cancellationReason")},
    "version": 5,
    "updatedAt": ERASURE_COMPLETED["completedAt"],
    "erasedAt": ERASURE_COMPLETED["completedAt"],
}

# Errors every operation may answer, by status; 404 by the resource the path names last.

ERRORS = {
    "400": _error(
        400,
        "Idempotency-Key must be 1 to 255 printable ASCII characters, "
        "neither starting nor ending with a space.",
        {"Idempotency-Key": ["Invalid."]},
    ),
    "401": _error(401, "Unknown or revoked API key."),
    "413": _error(413, "The request body is too large."),
    "415": _error(
        415,
        "The request body must be JSON sent with Content-Type: application/json "
        "(got 'application/x-www-form-urlencoded').",
    ),
    "409": _error(
        409, "A request with this Idempotency-Key is still being processed; retry later."
    ),
    "422": _error(
        422,
        "This Idempotency-Key was already used with a different request.",
        {"Idempotency-Key": ["Already used with a different request body or path."]},
    ),
    "429": _error(429, "Too many requests; retry after Retry-After seconds."),
    "default": _error(500, "Internal server error."),
}
NOT_FOUND = {
    "department_id": _error(404, f"No department with id {DEPARTMENT_ID}."),
    "appointment_id": _error(404, f"No appointment with id {APPOINTMENT_ID}."),
    "event_id": _error(404, f"No event with id '{CREATED_EVENT_ID}'."),
    "webhook_id": _error(404, f"No webhook with id {WEBHOOK_ID}."),
    "delivery_id": _error(404, f"No delivery '{UPDATED_DELIVERY_ID}' for webhook {WEBHOOK_ID}."),
    "erasure_id": _error(404, f"No erasure with id '{ERASURE_ID}'."),
}
INVALID = {
    "body": {
        "summary": "Body fields are missing or invalid",
        "value": _error(
            422,
            "The request has invalid fields; see errors.",
            {"name": ["Missing data for required field."], "email": ["Not a valid email address."]},
        ),
    },
    "query": {
        "summary": "A query parameter is invalid",
        "value": _error(
            422,
            "The request has invalid fields; see errors.",
            {"limit": ["Must be greater than or equal to 1 and less than or equal to 200."]},
        ),
    },
}
