"""Request plumbing shared by the blueprints: the session, the caller's organization, paging."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import marshmallow as ma
from flask import Flask, Response, current_app, g, request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import RequestEntityTooLarge

from moncreneau.api import ratelimit
from moncreneau.api.errors import database_error_response, error_response
from moncreneau.api.fields import Pattern
from moncreneau.auth import keys
from moncreneau.config import Settings
from moncreneau.db import write_session
from moncreneau.delivery.queueing import DeliveryQueue, make_queue
from moncreneau.domain.errors import Invalid
from moncreneau.ops import logs, metrics
from moncreneau.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, cursor_pattern
from moncreneau.personal import Vault
from moncreneau.secretbox import SecretBox, resolve_key

log = logging.getLogger(__name__)
access_log = logging.getLogger("moncreneau.access")

API_PREFIX = "/api/v1"
PUBLIC_PATHS = (f"{API_PREFIX}/openapi.json", f"{API_PREFIX}/docs")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_JSON_TYPE = re.compile(r"^application/([a-z0-9.+-]+\+)?json$")
_TAG = r'(?:W/)?"[!#-~]*"'
IF_MATCH_PATTERN = rf"^[ \t]*(?:\*|{_TAG}(?:[ \t]*,[ \t]*{_TAG})*)[ \t]*$"
_IF_MATCH = re.compile(IF_MATCH_PATTERN.removeprefix("^").removesuffix("$"))
_ENTITY_TAG = re.compile(r'(W/)?"([^"]*)"')
# Python reads no integer of more than this many digits (a ValueError, which the schema's
# JSON parser lets through): only a body with such a run of digits is worth reading twice.
_MAX_DIGITS = sys.get_int_max_str_digits()
_LONG_DIGITS = re.compile(rb"[0-9]{%d}" % (_MAX_DIGITS + 1))
# A caller's X-Request-Id is kept when it is this tame; otherwise the API makes one.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


@dataclass
class Runtime:
    """What the app shares between requests; built by `create_app`, never at import."""

    settings: Settings
    sessions: sessionmaker[Session]
    keys: keys.KeyCache
    api: Any = None
    limits: ratelimit.RateLimits | None = None
    _box: SecretBox | None = None
    _vault: Vault | None = None
    _queue: DeliveryQueue | None = None

    @property
    def box(self) -> SecretBox:
        # Built on first use: in embedded mode it may create the key file.
        if self._box is None:
            self._box = SecretBox(resolve_key(self.settings))
        return self._box

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            self._vault = Vault(resolve_key(self.settings))
        return self._vault

    @property
    def queue(self) -> DeliveryQueue:
        if self._queue is None:
            self._queue = make_queue(self.settings)
        return self._queue

    @queue.setter
    def queue(self, queue: DeliveryQueue) -> None:
        self._queue = queue


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["moncreneau"]
    return rt


def session() -> Session:
    """The request's session; a write request's transaction takes the write lock at BEGIN."""
    if "db" not in g:
        factory = runtime().sessions
        g.db = factory() if request.method in SAFE_METHODS else write_session(factory)
    db: Session = g.db
    return db


def after_commit(callback: Callable[[], None]) -> None:
    """Run `callback` once this request's transaction has committed (never if it rolls back)."""
    g.setdefault("after_commit", []).append(callback)


def enqueue_after_commit(delivery_ids: list[str]) -> None:
    """Queue deliveries once they are visible to workers; the sweeper is the safety net."""
    queue = runtime().queue

    def _enqueue() -> None:
        try:
            queue.enqueue(delivery_ids)
        except Exception:
            log.warning("could not queue %d deliveries; the sweeper will", len(delivery_ids))

    after_commit(_enqueue)


def organization_id() -> int:
    org: int = g.organization_id
    return org


def expected_versions() -> frozenset[int] | None:
    """The versions If-Match accepts (RFC 9110: any listed strong tag); None for no condition.

    A weak tag (`W/"3"`) matches nothing; a value that is no list of tags is a 422.
    """
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    if _IF_MATCH.fullmatch(raw) is None:
        raise Invalid.field("If-Match", 'Must be * or a list of entity tags such as "3".')
    if raw.strip() == "*":
        return None
    return frozenset(
        int(tag)
        for weak, tag in _ENTITY_TAG.findall(raw)
        if not weak and tag.isdigit() and len(tag) < 10
    )


def etag(resource: dict[str, Any]) -> dict[str, str]:
    return {"ETag": f'"{resource["version"]}"'}


def page_response(page: Page[Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    headers = {"X-Next-Cursor": page.next_cursor} if page.next_cursor else {}
    body = {"data": page.items, "nextCursor": page.next_cursor, "hasMore": bool(page.next_cursor)}
    return body, 200, headers


def _identify() -> None:
    """Who calls (an organization's key, or nobody), and so whose budget the call spends.

    A request without a valid key spends its address's budget, whatever key it claims; an
    address with none left is refused before a key this process does not know costs a
    database lookup.
    """
    path = request.path
    if not path.startswith(API_PREFIX) or path.startswith(PUBLIC_PATHS):
        return
    rt = runtime()
    key = request.headers.get("X-API-Key", "")
    address = ratelimit.address_bucket()
    org = rt.keys.known(key) if key else None
    if key and org is None:
        if rt.limits and rt.limits.exhausted(address):
            # The limiter's check, next, answers 429; this is for a window freed meanwhile.
            g.refusal = error_response(
                429,
                "Too many requests without a valid key from this address; retry later.",
                headers={"Retry-After": "1"},
            )
            ratelimit.spend(address)
            return
        org = rt.keys.authenticate(session(), key)
    if org is None:
        message = "Unknown or revoked API key." if key else "Missing X-API-Key header."
        g.refusal = error_response(401, message)
        ratelimit.spend(address)
        return
    g.organization_id = org
    logs.organization_id.set(org)
    ratelimit.spend(ratelimit.key_bucket(keys.prefix_of(key) or ""))


def _authenticate() -> Response | None:
    refusal: Response | None = g.pop("refusal", None)
    return refusal


def _require_json() -> Response | None:
    if request.method in SAFE_METHODS or request.method == "DELETE":
        return None
    if not request.path.startswith(API_PREFIX):
        return None  # the portal's HTML forms
    has_body = (
        bool(request.content_length)
        or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    )
    if has_body and not _JSON_TYPE.match(request.mimetype or ""):
        return error_response(
            415,
            "The request body must be JSON sent with Content-Type: application/json "
            f"(got {request.mimetype or 'no Content-Type'!r}).",
        )
    if has_body and request.content_length is None:
        # A chunked body has no Content-Length to refuse up front, and Werkzeug cuts it
        # silently at the limit: read one byte more, and refuse if it is there.
        limit = runtime().settings.max_body_bytes
        request.max_content_length = limit + 1
        try:
            too_large = len(request.get_data(cache=True)) > limit
        except RequestEntityTooLarge:
            too_large = True
        if too_large:
            return error_response(413)
    if has_body and _LONG_DIGITS.search(request.get_data(cache=True)):
        try:
            json.loads(request.get_data(cache=True))
        except json.JSONDecodeError:
            return error_response(400, "The request body is not valid JSON.")
        except ValueError:
            return error_response(
                400,
                f"The request body holds a number of more than {_MAX_DIGITS:,} digits.",
            )
    return None


def _commit(response: Response) -> Response:
    db: Session | None = g.pop("db", None)
    if db is None:
        return response
    try:
        if response.status_code < 400:
            db.commit()
        else:
            db.rollback()
    except DBAPIError as error:
        db.rollback()
        return database_error_response(error)
    finally:
        db.close()
    if response.status_code < 400:
        for callback in g.pop("after_commit", []):
            callback()
    return response


def _close(_error: BaseException | None) -> None:
    db: Session | None = g.pop("db", None)
    if db is not None:
        db.rollback()
        db.close()


def _begin() -> None:
    g.started = time.perf_counter()
    supplied = request.headers.get("X-Request-Id", "")
    g.request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex
    logs.request_id.set(g.request_id)
    logs.organization_id.set(None)


def _finish(response: Response) -> Response:
    """Count and log the request as answered, after everything else had its say."""
    method, status = request.method, response.status_code
    route = request.url_rule.rule if request.url_rule else "unmatched"
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
    metrics.HTTP_SECONDS.labels(method, route).observe(elapsed)
    response.headers["X-Request-Id"] = g.get("request_id", "")
    # Probes and scrapes come every few seconds: worth a line only when debugging.
    level = logging.INFO if request.path.startswith(API_PREFIX) else logging.DEBUG
    access_log.log(
        level,
        "%s %s %s",
        method,
        request.path,
        status,
        extra={
            "method": method,
            "path": request.path,
            "route": route,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
        },
    )
    return response


def _forget(_error: BaseException | None) -> None:
    logs.request_id.set(None)
    logs.organization_id.set(None)


def trace(app: Flask) -> None:
    """Request ids, the access log and request metrics; installed first, so it sees all."""
    app.before_request(_begin)
    app.after_request(_finish)
    app.teardown_request(_forget)


def identify(app: Flask) -> None:
    """Install before the rate limiter, which charges the bucket this names."""
    app.before_request(_identify)


def install(app: Flask) -> None:
    app.before_request(_authenticate)
    app.before_request(_require_json)
    app.after_request(_commit)
    app.teardown_request(_close)


class PageArgs(ma.Schema):
    limit = ma.fields.Integer(
        load_default=DEFAULT_PAGE_SIZE,
        validate=ma.validate.Range(min=1, max=MAX_PAGE_SIZE),
        metadata={"description": f"Page size, 1 to {MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE})."},
    )


def page_args(kind: str, parts: int = 1) -> type[PageArgs]:
    """The query of the `kind` list: `limit`, and a `cursor` that only this list gives out."""
    cursor = ma.fields.String(
        load_default=None,
        validate=Pattern(cursor_pattern(kind, parts), error="Not a valid cursor for this list."),
        metadata={"description": "The `nextCursor` of the previous page."},
    )
    return type(f"{kind.title()}PageArgs", (PageArgs,), {"cursor": cursor})


def page_schema(item: type[ma.Schema], name: str) -> type[ma.Schema]:
    """A list response: `{"data": [...], "nextCursor": str | null, "hasMore": bool}`."""
    return ma.Schema.from_dict(
        {
            "data": ma.fields.List(ma.fields.Nested(item), required=True),
            "nextCursor": ma.fields.String(
                allow_none=True,
                metadata={"description": "Pass as `cursor` for the next page; null at the end."},
            ),
            "hasMore": ma.fields.Boolean(),
        },
        name=name,
    )
