"""A Python client for the MonCréneau REST API, on `requests` (no Flask, no database driver)."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import requests

from moncreneau.retry_after import parse_retry_after

__all__ = [
    "ApiError",
    "Appointment",
    "Attempt",
    "Client",
    "Delivery",
    "Department",
    "Erasure",
    "Event",
    "EventType",
    "Replay",
    "TestSent",
    "Webhook",
    "WebhookHealth",
]

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 3
# The API's maximum page size: the fewest round trips for a whole list.
DEFAULT_PAGE_SIZE = 200
# A longer Retry-After is cut to this: a caller should not hang for an hour on one call.
MAX_RETRY_AFTER = 60.0
BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0
# 429: the request was refused before it ran. 503: the API rolled it back (or never saw it).
RETRY_STATUSES: Final = frozenset({429, 503})
# Nothing (or only part of an answer) came back: the call may or may not have run.
NETWORK_ERRORS: Final = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
# A POST is safe to send again because it carries the same Idempotency-Key.
RETRIED_METHODS: Final = frozenset({"GET", "POST", "DELETE"})

T = TypeVar("T")
Json = dict[str, Any]


class _Unset:
    """Marks a keyword that was not given, as opposed to None, which sends `null`."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


class ApiError(Exception):
    """The API answered with an error.

    `status` is the HTTP status (an int), `code` the error body's `code` (the same number
    for this API), `message` its message, `errors` its per-field messages (empty when
    there are none), `body` the whole error body and `request_id` the `X-Request-Id` to
    quote when reporting a problem.
    """

    def __init__(
        self,
        status: int,
        message: str,
        errors: Mapping[str, Any] | None = None,
        *,
        code: int | None = None,
        body: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.code = status if code is None else code
        self.message = message
        self.errors: dict[str, Any] = dict(errors or {})
        self.body: dict[str, Any] = dict(body or {})
        self.request_id = request_id

    def __str__(self) -> str:
        text = f"{self.status} {self.message}"
        return f"{text} {self.errors}" if self.errors else text

    @classmethod
    def from_response(cls, response: requests.Response) -> ApiError:
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        request_id = response.headers.get("X-Request-Id")
        if not isinstance(body, dict):
            # Not the API's error shape: a proxy or load balancer in between answered.
            message = response.text.strip()[:500] or response.reason or "HTTP error"
            return cls(response.status_code, message, request_id=request_id)
        errors = body.get("errors")
        code = body.get("code")
        return cls(
            response.status_code,
            str(body.get("message") or response.reason or "HTTP error"),
            errors if isinstance(errors, dict) else None,
            code=code if isinstance(code, int) else None,
            body=body,
            request_id=request_id,
        )


def _time(raw: Mapping[str, Any], key: str) -> datetime | None:
    value = raw.get(key)
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _required_time(raw: Mapping[str, Any], key: str) -> datetime:
    return datetime.fromisoformat(raw[key])


@dataclass(frozen=True)
class Department:
    id: int
    name: str
    timezone: str
    slot_minutes: int
    capacity: int
    created_at: datetime
    updated_at: datetime
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Json) -> Department:
        return cls(
            id=raw["id"],
            name=raw["name"],
            timezone=raw["timezone"],
            slot_minutes=raw["slotMinutes"],
            capacity=raw["capacity"],
            created_at=_required_time(raw, "createdAt"),
            updated_at=_required_time(raw, "updatedAt"),
            raw=raw,
        )


@dataclass(frozen=True)
class Appointment:
    """`date_time` carries the department's offset; `version` counts the appointment's events."""

    id: int
    department_id: int
    date_time: datetime
    duration_minutes: int
    name: str | None
    email: str | None
    phone: str | None
    notes: str | None
    status: str
    cancellation_reason: str | None
    version: int
    created_at: datetime
    updated_at: datetime
    erased_at: datetime | None
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Json) -> Appointment:
        return cls(
            id=raw["id"],
            department_id=raw["departmentId"],
            date_time=_required_time(raw, "dateTime"),
            duration_minutes=raw["durationMinutes"],
            name=raw.get("name"),
            email=raw.get("email"),
            phone=raw.get("phone"),
            notes=raw.get("notes"),
            status=raw["status"],
            cancellation_reason=raw.get("cancellationReason"),
            version=raw["version"],
            created_at=_required_time(raw, "createdAt"),
            updated_at=_required_time(raw, "updatedAt"),
            erased_at=_time(raw, "erasedAt"),
            raw=raw,
        )


@dataclass(frozen=True)
class Event:
    """An event envelope; `data` is as sent (`object`, and `previousAttributes` on updates)."""

    id: str
    type: str
    created: datetime
    version: str
    data: Json
    raw: Json = field(repr=False, compare=False)

    @property
    def object(self) -> Json:
        obj: Json = self.data.get("object", {})
        return obj

    @classmethod
    def from_json(cls, raw: Json) -> Event:
        return cls(
            id=raw["id"],
            type=raw["type"],
            created=_required_time(raw, "created"),
            version=raw["version"],
            data=raw.get("data", {}),
            raw=raw,
        )


@dataclass(frozen=True)
class WebhookHealth:
    attempts_24h: int | None
    success_rate_24h: float | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    waiting: int | None
    next_attempt_at: datetime | None
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Json) -> WebhookHealth:
        return cls(
            attempts_24h=raw.get("attempts24h"),
            success_rate_24h=raw.get("successRate24h"),
            last_success_at=_time(raw, "lastSuccessAt"),
            last_failure_at=_time(raw, "lastFailureAt"),
            last_error=raw.get("lastError"),
            waiting=raw.get("waiting"),
            next_attempt_at=_time(raw, "nextAttemptAt"),
            raw=raw,
        )


@dataclass(frozen=True)
class Webhook:
    """`secret` is set by `create` and `rotate_secret` only; `health` where the API sends it."""

    id: int
    url: str
    events: tuple[str, ...]
    description: str | None
    enabled: bool
    version: str
    payload: str | None
    # "none" or "appointment"; None from a server that predates ordering
    ordering: str | None
    disabled_reason: str | None
    paused_until: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    secret: str | None
    health: WebhookHealth | None
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Json) -> Webhook:
        health = raw.get("health")
        return cls(
            id=raw["id"],
            url=raw["url"],
            events=tuple(raw["events"]),
            description=raw.get("description"),
            enabled=raw["enabled"],
            version=raw["version"],
            payload=raw.get("payload"),
            ordering=raw.get("ordering"),
            disabled_reason=raw.get("disabledReason"),
            paused_until=_time(raw, "pausedUntil"),
            previous_secret_expires_at=_time(raw, "previousSecretExpiresAt"),
            created_at=_required_time(raw, "createdAt"),
            updated_at=_required_time(raw, "updatedAt"),
            secret=raw.get("secret"),
            health=WebhookHealth.from_json(health) if isinstance(health, dict) else None,
            raw=raw,
        )


@dataclass(frozen=True)
class TestSent:
    # Not a test case, though a test module that imports it would have pytest think so.
    __test__ = False

    delivery_id: str
    event_id: str
    webhook_id: int
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Json) -> TestSent:
        return cls(
            delivery_id=raw["deliveryId"],
            event_id=raw["eventId"],
            webhook_id=raw["webhookId"],
            raw=raw,
        )


@dataclass(frozen=True)
class Attempt:
    number: int
    at: datetime
    status_code: int | None
    duration_ms: int
    error: str | None
    response_body: str | None
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Json) -> Attempt:
        return cls(
            number=raw["number"],
            at=_required_time(raw, "at"),
            status_code=raw.get("statusCode"),
            duration_ms=raw["durationMs"],
            error=raw.get("error"),
            response_body=raw.get("responseBody"),
            raw=raw,
        )


@dataclass(frozen=True)
class Delivery:
    """A delivery; `attempts` and `payload` are filled by `get` and `retry`, not by `list`."""

    id: str
    webhook_id: int
    event_id: str
    event_type: str
    version: str
    status: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    attempts: tuple[Attempt, ...]
    payload: Json | None
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Json) -> Delivery:
        return cls(
            id=raw["id"],
            webhook_id=raw["webhookId"],
            event_id=raw["eventId"],
            event_type=raw["eventType"],
            version=raw["version"],
            status=raw["status"],
            attempt_count=raw["attemptCount"],
            next_attempt_at=_time(raw, "nextAttemptAt"),
            last_status_code=raw.get("lastStatusCode"),
            last_error=raw.get("lastError"),
            created_at=_required_time(raw, "createdAt"),
            updated_at=_required_time(raw, "updatedAt"),
            attempts=tuple(Attempt.from_json(a) for a in raw.get("attempts", ())),
            payload=raw.get("payload"),
            raw=raw,
        )


@dataclass(frozen=True)
class Replay:
    """What a replay call queued; call again while `has_more`."""

    count: int
    delivery_ids: tuple[str, ...]
    has_more: bool
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Json) -> Replay:
        return cls(
            count=raw["count"],
            delivery_ids=tuple(raw["deliveryIds"]),
            has_more=raw["hasMore"],
            raw=raw,
        )


@dataclass(frozen=True)
class Erasure:
    id: str
    status: str
    appointment_ids: tuple[int, ...]
    created_at: datetime | None
    completed_at: datetime | None
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Json) -> Erasure:
        return cls(
            id=raw["id"],
            status=raw["status"],
            appointment_ids=tuple(raw.get("appointmentIds") or ()),
            created_at=_time(raw, "createdAt"),
            completed_at=_time(raw, "completedAt"),
            raw=raw,
        )


@dataclass(frozen=True)
class EventType:
    """An entry of the event catalog; `raw` holds its schemas and examples per payload version."""

    type: str
    description: str | None
    raw: Json = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Json) -> EventType:
        return cls(
            type=raw.get("type") or raw.get("name") or "",
            description=raw.get("description"),
            raw=raw,
        )


def _timestamp(value: datetime | str) -> str:
    """A datetime as the API reads it; a naive one stays naive (the department's local time)."""
    return value.isoformat() if isinstance(value, datetime) else value


def _version_tag(version: int | str) -> str:
    return f'"{version}"'


def _given(**fields: Any) -> Json:
    """The fields that were passed, `None` (sent as `null`) included."""
    return {name: value for name, value in fields.items() if value is not UNSET}


def retry_after(value: str | None, now: Callable[[], datetime] | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date), or None."""
    return parse_retry_after(value, now() if now else datetime.now(UTC))


class Client:
    """The whole API: `client.appointments.create(...)`, `client.webhooks.list()`, ...

    Every POST carries an `Idempotency-Key` made up here (or given), and the same key on
    every retry. A POST, GET or DELETE is retried up to `max_retries` times after a
    connection error or timeout, a `429` or a `503`, waiting as `Retry-After` says (at most
    `max_retry_after` seconds) or else backing off exponentially; a PATCH only after a
    `429`, which the API answers before doing anything. Any other error raises `ApiError`
    at once; a connection error that outlasts the retries raises as `requests` raised it.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_after: float = MAX_RETRY_AFTER,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries!r}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_after = max_retry_after
        self._own_session = session is None
        self.session = session if session is not None else requests.Session()
        self.sleep = sleep
        self.departments = Departments(self)
        self.appointments = Appointments(self)
        self.events = Events(self)
        self.webhooks = Webhooks(self)
        self.deliveries = Deliveries(self)
        self.erasures = Erasures(self)

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def event_types(self) -> Iterator[EventType]:
        """Every event type, its description, and per payload version a schema and example."""
        return self.paginate("/event-types", EventType.from_json)

    # Transport

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> requests.Response:
        """Send one call, retrying as the class says; the answer of a success, else ApiError."""
        method = method.upper()
        sent = {"X-API-Key": self.api_key, "Accept": "application/json", **(headers or {})}
        if method == "POST":
            sent["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        url = f"{self.base_url}{API_PREFIX}{path}"
        retries = 0
        answer_lost = False
        while True:
            try:
                response = self.session.request(
                    method, url, params=params, json=json, headers=sent, timeout=self.timeout
                )
            except NETWORK_ERRORS:
                if method not in RETRIED_METHODS or retries >= self.max_retries:
                    raise
                answer_lost = True
                delay = self._backoff(retries)
            else:
                status = response.status_code
                if response.ok:
                    return response
                if method == "DELETE" and status == 404 and answer_lost:
                    # An earlier DELETE went through and its answer was lost on the way.
                    return response
                may_retry = method in RETRIED_METHODS or status == 429
                if status not in RETRY_STATUSES or not may_retry or retries >= self.max_retries:
                    raise ApiError.from_response(response)
                wait = retry_after(response.headers.get("Retry-After"))
                response.close()
                delay = self._backoff(retries) if wait is None else min(wait, self.max_retry_after)
            retries += 1
            self.sleep(delay)

    def _backoff(self, retries: int) -> float:
        delay: float = min(BACKOFF_MAX, BACKOFF_BASE * 2**retries)
        return delay * random.uniform(0.8, 1.2)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON body of a call (None for an empty one)."""
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    def paginate(
        self,
        path: str,
        build: Callable[[Json], T],
        params: Mapping[str, Any] | None = None,
        page_size: int | None = None,
    ) -> Iterator[T]:
        """Every item of a list, page after page, following `nextCursor` to the end."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if page_size is not None:
            query["limit"] = page_size
        while True:
            response = self.request("GET", path, params=query)
            body = response.json()
            if isinstance(body, list):
                yield from (build(item) for item in body)
                return
            for item in body["data"]:
                yield build(item)
            cursor = body.get("nextCursor") or response.headers.get("X-Next-Cursor")
            if not cursor:
                return
            query["cursor"] = cursor


class _Resource:
    def __init__(self, client: Client) -> None:
        self._client = client


class Departments(_Resource):
    def create(
        self,
        name: str,
        timezone: str,
        *,
        slot_minutes: int | None = None,
        capacity: int | None = None,
        idempotency_key: str | None = None,
    ) -> Department:
        body: Json = {"name": name, "timezone": timezone}
        if slot_minutes is not None:
            body["slotMinutes"] = slot_minutes
        if capacity is not None:
            body["capacity"] = capacity
        raw = self._client.call("POST", "/departments", json=body, idempotency_key=idempotency_key)
        return Department.from_json(raw)

    def list(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[Department]:
        return self._client.paginate("/departments", Department.from_json, page_size=page_size)

    def get(self, department_id: int) -> Department:
        return Department.from_json(self._client.call("GET", f"/departments/{department_id}"))


class Appointments(_Resource):
    def create(
        self,
        department_id: int,
        date_time: datetime | str,
        name: str,
        *,
        email: str | None = None,
        phone: str | None = None,
        notes: str | None = None,
        duration_minutes: int | None = None,
        idempotency_key: str | None = None,
    ) -> Appointment:
        """Book; a naive `date_time` is local time of the department's time zone."""
        optional = {
            "email": email,
            "phone": phone,
            "notes": notes,
            "durationMinutes": duration_minutes,
        }
        body = {
            "departmentId": department_id,
            "dateTime": _timestamp(date_time),
            "name": name,
            **{k: v for k, v in optional.items() if v is not None},
        }
        raw = self._client.call("POST", "/appointments", json=body, idempotency_key=idempotency_key)
        return Appointment.from_json(raw)

    def list(
        self,
        *,
        status: str | None = None,
        department_id: int | None = None,
        from_: datetime | str | None = None,
        to: datetime | str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[Appointment]:
        """Appointments starting in [`from_`, `to`); a naive bound is UTC."""
        params = {
            "status": status,
            "departmentId": department_id,
            "from": None if from_ is None else _timestamp(from_),
            "to": None if to is None else _timestamp(to),
        }
        return self._client.paginate("/appointments", Appointment.from_json, params, page_size)

    def get(self, appointment_id: int) -> Appointment:
        return Appointment.from_json(self._client.call("GET", f"/appointments/{appointment_id}"))

    def update(
        self,
        appointment_id: int,
        *,
        date_time: datetime | str | _Unset = UNSET,
        duration_minutes: int | _Unset = UNSET,
        name: str | _Unset = UNSET,
        email: str | _Unset | None = UNSET,
        phone: str | _Unset | None = UNSET,
        notes: str | _Unset | None = UNSET,
        if_match: int | str | None = None,
    ) -> Appointment:
        """Change what is given (`None` clears email, phone or notes).

        With `if_match` (a version), a change made meanwhile makes this a 412.
        """
        body = _given(
            dateTime=date_time if isinstance(date_time, _Unset) else _timestamp(date_time),
            durationMinutes=duration_minutes,
            name=name,
            email=email,
            phone=phone,
            notes=notes,
        )
        headers = {} if if_match is None else {"If-Match": _version_tag(if_match)}
        raw = self._client.call(
            "PATCH", f"/appointments/{appointment_id}", json=body, headers=headers
        )
        return Appointment.from_json(raw)

    def reschedule(
        self,
        appointment_id: int,
        date_time: datetime | str,
        *,
        duration_minutes: int | _Unset = UNSET,
        if_match: int | str | None = None,
    ) -> Appointment:
        return self.update(
            appointment_id,
            date_time=date_time,
            duration_minutes=duration_minutes,
            if_match=if_match,
        )

    def _transition(
        self,
        appointment_id: int,
        action: str,
        body: Json,
        if_match: int | str | None,
        idempotency_key: str | None,
    ) -> Appointment:
        headers = {} if if_match is None else {"If-Match": _version_tag(if_match)}
        raw = self._client.call(
            "POST",
            f"/appointments/{appointment_id}/{action}",
            json=body,
            headers=headers,
            idempotency_key=idempotency_key,
        )
        return Appointment.from_json(raw)

    def validate(
        self,
        appointment_id: int,
        *,
        if_match: int | str | None = None,
        idempotency_key: str | None = None,
    ) -> Appointment:
        return self._transition(appointment_id, "validate", {}, if_match, idempotency_key)

    def complete(
        self,
        appointment_id: int,
        *,
        if_match: int | str | None = None,
        idempotency_key: str | None = None,
    ) -> Appointment:
        return self._transition(appointment_id, "complete", {}, if_match, idempotency_key)

    def cancel(
        self,
        appointment_id: int,
        reason: str | None = None,
        *,
        if_match: int | str | None = None,
        idempotency_key: str | None = None,
    ) -> Appointment:
        body = {} if reason is None else {"reason": reason}
        return self._transition(appointment_id, "cancel", body, if_match, idempotency_key)

    def events(self, appointment_id: int) -> Iterator[Event]:
        """The appointment's whole history, oldest first."""
        return self._client.paginate(f"/appointments/{appointment_id}/events", Event.from_json)


class Events(_Resource):
    def list(
        self, *, type: str | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> Iterator[Event]:
        """The organization's events in commit order."""
        return self._client.paginate("/events", Event.from_json, {"type": type}, page_size)

    def get(self, event_id: str) -> Event:
        return Event.from_json(self._client.call("GET", f"/events/{event_id}"))


class Webhooks(_Resource):
    def create(
        self,
        url: str,
        events: Iterable[str],
        *,
        description: str | None = None,
        version: str | None = None,
        payload: str | None = None,
        enabled: bool | None = None,
        ordering: str | None = None,
        idempotency_key: str | None = None,
    ) -> Webhook:
        """Subscribe an endpoint; the answer's `secret` is the only time it is shown.

        `ordering="appointment"`: an appointment's events arrive one at a time, in order.
        """
        optional = {
            "description": description,
            "version": version,
            "payload": payload,
            "enabled": enabled,
            "ordering": ordering,
        }
        body = {
            "url": url,
            "events": list(events),
            **{k: v for k, v in optional.items() if v is not None},
        }
        raw = self._client.call("POST", "/webhooks", json=body, idempotency_key=idempotency_key)
        return Webhook.from_json(raw)

    def list(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[Webhook]:
        return self._client.paginate("/webhooks", Webhook.from_json, page_size=page_size)

    def get(self, webhook_id: int) -> Webhook:
        return Webhook.from_json(self._client.call("GET", f"/webhooks/{webhook_id}"))

    def update(
        self,
        webhook_id: int,
        *,
        url: str | _Unset = UNSET,
        events: Iterable[str] | _Unset = UNSET,
        enabled: bool | _Unset = UNSET,
        description: str | _Unset | None = UNSET,
        version: str | _Unset = UNSET,
        payload: str | _Unset = UNSET,
        ordering: str | _Unset = UNSET,
    ) -> Webhook:
        body = _given(
            url=url,
            events=events if isinstance(events, _Unset) else list(events),
            enabled=enabled,
            description=description,
            version=version,
            payload=payload,
            ordering=ordering,
        )
        return Webhook.from_json(self._client.call("PATCH", f"/webhooks/{webhook_id}", json=body))

    def delete(self, webhook_id: int) -> None:
        self._client.request("DELETE", f"/webhooks/{webhook_id}")

    def test(self, webhook_id: int, *, idempotency_key: str | None = None) -> TestSent:
        """Send a `webhook.test` event to this endpoint only."""
        raw = self._client.call(
            "POST", f"/webhooks/{webhook_id}/test", idempotency_key=idempotency_key
        )
        return TestSent.from_json(raw)

    def rotate_secret(self, webhook_id: int, *, idempotency_key: str | None = None) -> Webhook:
        """A new `secret`; the old one keeps signing until `previous_secret_expires_at`."""
        raw = self._client.call(
            "POST", f"/webhooks/{webhook_id}/rotate-secret", idempotency_key=idempotency_key
        )
        return Webhook.from_json(raw)


class Deliveries(_Resource):
    def list(
        self, webhook_id: int, *, status: str | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> Iterator[Delivery]:
        """A webhook's deliveries, newest first."""
        return self._client.paginate(
            f"/webhooks/{webhook_id}/deliveries", Delivery.from_json, {"status": status}, page_size
        )

    def get(self, webhook_id: int, delivery_id: str) -> Delivery:
        raw = self._client.call("GET", f"/webhooks/{webhook_id}/deliveries/{delivery_id}")
        return Delivery.from_json(raw)

    def retry(
        self, webhook_id: int, delivery_id: str, *, idempotency_key: str | None = None
    ) -> Delivery:
        """Send it again now: same delivery id, same bytes."""
        raw = self._client.call(
            "POST",
            f"/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
            idempotency_key=idempotency_key,
        )
        return Delivery.from_json(raw)

    def replay(
        self,
        webhook_id: int,
        from_: datetime | str,
        to: datetime | str,
        *,
        statuses: Iterable[str] | None = None,
        idempotency_key: str | None = None,
    ) -> Replay:
        """One more attempt for failed or dead deliveries created in [`from_`, `to`).

        Bounds need an offset. At most 1000 a call: call again while `has_more`.
        """
        body: Json = {"from": _timestamp(from_), "to": _timestamp(to)}
        if statuses is not None:
            body["statuses"] = list(statuses)
        raw = self._client.call(
            "POST", f"/webhooks/{webhook_id}/replay", json=body, idempotency_key=idempotency_key
        )
        return Replay.from_json(raw)


class Erasures(_Resource):
    def create(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        appointment_ids: Iterable[int] | None = None,
        idempotency_key: str | None = None,
    ) -> Erasure:
        """Erase a patient's personal data; give exactly one selector."""
        body: Json = {}
        if email is not None:
            body["email"] = email
        if phone is not None:
            body["phone"] = phone
        if appointment_ids is not None:
            body["appointmentIds"] = list(appointment_ids)
        raw = self._client.call("POST", "/erasures", json=body, idempotency_key=idempotency_key)
        return Erasure.from_json(raw)

    def list(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[Erasure]:
        return self._client.paginate("/erasures", Erasure.from_json, page_size=page_size)

    def get(self, erasure_id: str) -> Erasure:
        return Erasure.from_json(self._client.call("GET", f"/erasures/{erasure_id}"))
