"""Request and response bodies of /api/v1/webhooks."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from moncreneau.api import examples
from moncreneau.api.fields import AwareDateTime, Pattern, StrictBoolean, Text
from moncreneau.api.web import page_args, page_schema
from moncreneau.delivery import urls
from moncreneau.delivery.store import (
    DEAD,
    ERASED,
    FAILED,
    ORDERINGS,
    PENDING,
    SUCCEEDED,
    UNORDERED,
)
from moncreneau.domain.events import EVENT_TYPES, SUBSCRIBABLE
from moncreneau.outbox import payloads

EVENTS_HELP = f'Event types to receive, or `["*"]` for all: {", ".join(SUBSCRIBABLE)}.'
VERSION_HELP = (
    f"Payload version, one of {', '.join(payloads.VERSIONS)} (default {payloads.LATEST})."
)
PAYLOAD_HELP = (
    "`full` (default) or `thin`: thin payloads carry ids, status, versions and times but no "
    "personal data (name, email, phone, notes, cancellation reason)."
)

ORDERING_HELP = (
    "`none` (default): deliveries go out as soon as they can, in any order. `appointment`: "
    "an appointment's deliveries to this webhook go out one at a time, in the order of its "
    "events; each waits until the one before has succeeded, is dead or was erased. A manual "
    "retry or replay of an older delivery holds back the newer ones still waiting."
)


class _Events(ma.fields.List):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(
            ma.fields.String(
                validate=ma.validate.OneOf(
                    ("*", *SUBSCRIBABLE), error="Unknown event type {input!r}; see the list."
                )
            ),
            validate=ma.validate.Length(min=1, max=50),
            metadata={"description": EVENTS_HELP, "example": ["appointment.created"]},
            **kwargs,  # type: ignore[arg-type]
        )


URL_HELP = (
    "`https` to a public address; `http` and private, loopback or link-local addresses only "
    "where the operator allows them. No credentials, no `#fragment`."
)


def _url(**kwargs: Any) -> Text:
    return Text(
        validate=[
            ma.validate.Length(min=1, max=urls.MAX_URL_LENGTH),
            Pattern(urls.URL_PATTERN, error="Not an http(s) URL this API can deliver to."),
        ],
        metadata={"description": URL_HELP, "example": "https://example.org/webhooks/moncreneau"},
        **kwargs,
    )


class WebhookCreate(ma.Schema):
    url = _url(required=True)
    events = _Events(required=True)
    description = Text(allow_none=True, validate=ma.validate.Length(max=500))
    version = ma.fields.String(
        load_default=payloads.LATEST,
        validate=ma.validate.OneOf(payloads.VERSIONS),
        metadata={"description": VERSION_HELP},
    )
    enabled = StrictBoolean(load_default=True)
    payload = ma.fields.String(
        load_default=payloads.FULL,
        validate=ma.validate.OneOf(payloads.STYLES),
        metadata={"description": PAYLOAD_HELP},
    )
    ordering = ma.fields.String(
        load_default=UNORDERED,
        validate=ma.validate.OneOf(ORDERINGS),
        metadata={"description": ORDERING_HELP},
    )


class WebhookChange(ma.Schema):
    url = _url()
    events = _Events()
    description = Text(allow_none=True, validate=ma.validate.Length(max=500))
    version = ma.fields.String(
        validate=ma.validate.OneOf(payloads.VERSIONS), metadata={"description": VERSION_HELP}
    )
    enabled = StrictBoolean(
        metadata={"description": "`true` re-enables a disabled webhook; pending deliveries resume."}
    )
    payload = ma.fields.String(
        validate=ma.validate.OneOf(payloads.STYLES), metadata={"description": PAYLOAD_HELP}
    )
    ordering = ma.fields.String(
        validate=ma.validate.OneOf(ORDERINGS), metadata={"description": ORDERING_HELP}
    )


class Webhook(ma.Schema):
    id = ma.fields.Integer(required=True)
    url = ma.fields.String(required=True)
    events = ma.fields.List(ma.fields.String(), required=True)
    description = ma.fields.String(allow_none=True)
    enabled = ma.fields.Boolean(required=True)
    version = ma.fields.String(required=True)
    payload = ma.fields.String(required=True, metadata={"enum": list(payloads.STYLES)})
    ordering = ma.fields.String(
        required=True, metadata={"enum": list(ORDERINGS), "description": ORDERING_HELP}
    )
    disabledReason = ma.fields.String(allow_none=True)
    pausedUntil = ma.fields.String(
        allow_none=True,
        metadata={
            "format": "date-time",
            "description": "While every attempt fails, deliveries wait until then (unsent, "
            "no attempt counted). A change, a test, a retry or a replay ends the pause.",
        },
    )
    previousSecretExpiresAt = ma.fields.String(
        allow_none=True,
        metadata={"format": "date-time", "description": "End of the old secret's grace period."},
    )
    createdAt = ma.fields.String(required=True, metadata={"format": "date-time"})
    updatedAt = ma.fields.String(required=True, metadata={"format": "date-time"})


class Health(ma.Schema):
    attempts24h = ma.fields.Integer(
        required=True, metadata={"description": "Attempts made in the last 24 hours."}
    )
    successRate24h = ma.fields.Float(
        required=True,
        allow_none=True,
        metadata={
            "description": "Share of those attempts that succeeded, 0 to 1; null without any.",
            "minimum": 0,
            "maximum": 1,
        },
    )
    lastSuccessAt = ma.fields.String(
        required=True, allow_none=True, metadata={"format": "date-time"}
    )
    lastFailureAt = ma.fields.String(
        required=True, allow_none=True, metadata={"format": "date-time"}
    )
    lastError = ma.fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "The error of the latest failed attempt."},
    )
    waiting = ma.fields.Integer(
        required=True,
        metadata={"description": "Deliveries not sent yet or being retried (`pending`, `failed`)."},
    )
    nextAttemptAt = ma.fields.String(
        required=True,
        allow_none=True,
        metadata={
            "format": "date-time",
            "description": "When the next waiting delivery is due (after a pause, if any); "
            "null when none waits or the webhook is disabled.",
        },
    )


class WebhookWithHealth(Webhook):
    health = ma.fields.Nested(Health, required=True)


class WebhookWithSecret(Webhook):
    secret = ma.fields.String(
        required=True,
        metadata={
            "description": "`whsec_...`: shown only in this response.",
            "example": examples.SECRET,
        },
    )


class TestSent(ma.Schema):
    deliveryId = ma.fields.String(required=True)
    eventId = ma.fields.String(required=True)
    webhookId = ma.fields.Integer(required=True)


STATUSES = (PENDING, SUCCEEDED, FAILED, DEAD, ERASED)


class Delivery(ma.Schema):
    id = ma.fields.String(required=True, metadata={"description": "Sent as X-Moncreneau-Delivery."})
    webhookId = ma.fields.Integer(required=True)
    eventId = ma.fields.String(required=True)
    eventType = ma.fields.String(required=True)
    version = ma.fields.String(required=True)
    status = ma.fields.String(required=True, metadata={"enum": list(STATUSES)})
    attemptCount = ma.fields.Integer(required=True)
    nextAttemptAt = ma.fields.String(allow_none=True, metadata={"format": "date-time"})
    lastStatusCode = ma.fields.Integer(allow_none=True)
    lastError = ma.fields.String(allow_none=True)
    createdAt = ma.fields.String(required=True, metadata={"format": "date-time"})
    updatedAt = ma.fields.String(required=True, metadata={"format": "date-time"})


class Attempt(ma.Schema):
    number = ma.fields.Integer(required=True)
    at = ma.fields.String(required=True, metadata={"format": "date-time"})
    statusCode = ma.fields.Integer(allow_none=True)
    durationMs = ma.fields.Integer(required=True)
    error = ma.fields.String(allow_none=True)
    responseBody = ma.fields.String(
        allow_none=True, metadata={"description": "The first 1024 bytes of the response."}
    )


class DeliveryDetail(Delivery):
    attempts = ma.fields.List(ma.fields.Nested(Attempt), required=True)
    payload = ma.fields.Dict(
        required=True,
        allow_none=True,
        metadata={
            "description": "The body sent, parsed; without personal data once its appointment "
            "is erased, and null once purged (MONCRENEAU_PAYLOAD_RETENTION_DAYS)."
        },
    )


class DeliveryQuery(page_args("deliveries")):  # type: ignore[misc]
    status = ma.fields.String(validate=ma.validate.OneOf(STATUSES))
    eventType = ma.fields.String(
        validate=ma.validate.OneOf(EVENT_TYPES),
        metadata={"description": "Only deliveries of this event type."},
    )


class ReplayRequest(ma.Schema):
    since = AwareDateTime(data_key="from", required=True)
    until = AwareDateTime(data_key="to", required=True)
    statuses = ma.fields.List(
        ma.fields.String(validate=ma.validate.OneOf((FAILED, DEAD))),
        load_default=[FAILED, DEAD],
        validate=ma.validate.Length(min=1),
    )


class ReplayResult(ma.Schema):
    count = ma.fields.Integer(required=True)
    deliveryIds = ma.fields.List(ma.fields.String(), required=True)
    hasMore = ma.fields.Boolean(
        required=True, metadata={"description": "More matched: call again for the next 1000."}
    )


WebhookPage = page_schema(Webhook, "WebhookPage")
DeliveryPage = page_schema(Delivery, "DeliveryPage")
