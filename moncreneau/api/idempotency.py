"""Idempotency-Key on POST: the first successful response is stored with its change and replayed."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Response, make_response, request
from sqlalchemy import delete, select

from moncreneau.api.errors import error_response
from moncreneau.api.web import organization_id, runtime, session
from moncreneau.clock import utcnow
from moncreneau.db import LockKind, try_lock
from moncreneau.models import IDEMPOTENCY_RETENTION, IdempotencyRecord

HEADER = "Idempotency-Key"
# Printable ASCII without surrounding spaces, which HTTP would strip on the way.
KEY_PATTERN = "^[!-~](?:[ -~]{0,253}[!-~])?$"
_KEY = re.compile(KEY_PATTERN.removeprefix("^").removesuffix("$"))
_REPLAYED_HEADERS = ("Content-Type", "ETag", "Location", "X-Next-Cursor")
DOC = {
    "parameters": [
        {
            "in": "header",
            "name": HEADER,
            "required": False,
            "schema": {
                "type": "string",
                "pattern": KEY_PATTERN,
                "maxLength": 255,
                "example": "2c8e4f0a-booking-123",
            },
            "description": (
                "Makes the POST safe to retry: the same key with the same body returns the "
                "first successful response again (with `Idempotent-Replayed: true`) and changes "
                "nothing; the same key with another body is a 422; while the first request is "
                "still running, a 409. Keys are kept 24 hours, per organization."
            ),
        }
    ]
}


def _fingerprints() -> list[str]:
    """The request's keyed digests: the first is stored, any of them matches."""
    raw = request.get_data(cache=True)
    try:
        body: Any = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    except (ValueError, RecursionError):
        body = raw.decode("latin-1")
    text = f"{request.method} {request.path}\n{body}"
    # the unkeyed digest of records stored before digests were keyed, kept 24 hours at most
    return [*runtime().vault.fingerprints(text), hashlib.sha256(text.encode()).hexdigest()]


def _replay(record: IdempotencyRecord) -> Response:
    # Sealed like webhook secrets: a stored answer may carry one (POST /webhooks).
    body = runtime().box.open(record.response_body)
    response = Response(body, status=record.response_status)
    for name, value in record.response_headers.items():
        response.headers[name] = value
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _appointment_shown(response: Response) -> int | None:
    """The appointment a response shows, whose personal fields an erasure must null."""
    if request.blueprint != "appointments":
        return None
    shown = (request.view_args or {}).get("appointment_id")
    if shown is None:
        body = response.get_json(silent=True)
        shown = body.get("id") if isinstance(body, dict) else None
    return shown if isinstance(shown, int) else None


def idempotent(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if _KEY.fullmatch(key) is None:
            return error_response(
                400,
                f"{HEADER} must be 1 to 255 printable ASCII characters, "
                "neither starting nor ending with a space.",
                {HEADER: ["Invalid."]},
            )
        db = session()
        org = organization_id()
        # Held until this request's transaction ends.
        if not try_lock(db, LockKind.IDEMPOTENCY_KEY, f"{org}:{key}"):
            return error_response(
                409, f"A request with this {HEADER} is still being processed; retry later."
            )
        fingerprints = _fingerprints()
        now = utcnow()
        record = db.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.organization_id == org, IdempotencyRecord.key == key
            )
        )
        if record is not None and record.created_at < now - IDEMPOTENCY_RETENTION:
            db.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == record.id))
            record = None
        if record is not None:
            if record.request_hash not in fingerprints:
                return error_response(
                    422,
                    f"This {HEADER} was already used with a different request.",
                    {HEADER: ["Already used with a different request body or path."]},
                )
            return _replay(record)
        response = make_response(view(*args, **kwargs))
        if 200 <= response.status_code < 300:
            db.add(
                IdempotencyRecord(
                    organization_id=org,
                    key=key,
                    request_hash=fingerprints[0],
                    response_status=response.status_code,
                    response_body=runtime().box.seal(response.get_data(as_text=True)),
                    response_headers={
                        h: response.headers[h] for h in _REPLAYED_HEADERS if h in response.headers
                    },
                    created_at=now,
                    appointment_id=_appointment_shown(response),
                )
            )
            db.flush()
        return response

    return wrapper
