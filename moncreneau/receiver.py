"""For integrators: verify a MonCréneau delivery and process each event once (stdlib only)."""

from __future__ import annotations

import binascii
import hmac
import json
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, TypeVar

from moncreneau.delivery.signing import DEFAULT_TOLERANCE, moncreneau_signature, standard_signature

__all__ = [
    "Deduplicator",
    "MemoryStore",
    "SqlStore",
    "Store",
    "WebhookVerificationError",
    "verify",
]

E = TypeVar("E", bound=Mapping[str, Any])


class WebhookVerificationError(ValueError):
    """A delivery does not verify; the message says why.

    `bad_payload` is True when every signature held but the body is not a JSON event: the
    sender is genuine and the content is wrong (answer 400), not unauthenticated (answer 401).
    """

    def __init__(self, message: str, *, bad_payload: bool = False) -> None:
        super().__init__(message)
        self.bad_payload = bad_payload


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secret: str | Iterable[str],
    tolerance: int = DEFAULT_TOLERANCE,
    now: int | None = None,
) -> dict[str, Any]:
    """Check a delivery's signatures and timestamps, then return its event.

    `body` is the raw request body, before any JSON parsing; header names match whatever
    their case. `secret` is the endpoint's `whsec_...` secret, or several while you rotate it:
    a signature made with any of them is accepted. Every scheme present must verify, and at
    least one must be: the Standard Webhooks headers (`webhook-id`, `webhook-timestamp`,
    `webhook-signature`) and `X-Moncreneau-Signature` (with `X-Moncreneau-Timestamp`). Each
    timestamp must lie within `tolerance` seconds of `now` (default: the current time).

    `X-Moncreneau-Timestamp` is not signed, so a captured delivery can be replayed with a
    fresh one and its `webhook-*` headers removed; de-duplicating on the event id (see
    `Deduplicator`) is what makes a replay harmless.

    Raises `WebhookVerificationError` saying why; `ValueError` if no usable secret is given.
    """
    keys = [secret] if isinstance(secret, str) else list(secret)
    if not keys or not all(isinstance(key, str) and key for key in keys):
        raise ValueError("verify needs at least one secret, and no empty one")
    lowered = {name.lower(): value for name, value in headers.items()}
    moment = int(time.time()) if now is None else now
    if "webhook-signature" not in lowered and "x-moncreneau-signature" not in lowered:
        raise WebhookVerificationError(
            "missing header: neither webhook-signature nor X-Moncreneau-Signature is present"
        )
    if "webhook-signature" in lowered:
        msg_id = _header(lowered, "webhook-id")
        timestamp = _timestamp(lowered, "webhook-timestamp", moment, tolerance)
        try:
            expected = [standard_signature(key, msg_id, timestamp, body) for key in keys]
        except binascii.Error:
            raise ValueError(
                "a secret is not whsec_ followed by base64, as webhook-signature needs"
            ) from None
        _match(expected, lowered["webhook-signature"].split(), "webhook-signature")
    if "x-moncreneau-signature" in lowered:
        _timestamp(lowered, "x-moncreneau-timestamp", moment, tolerance)
        expected = [moncreneau_signature(key, body) for key in keys]
        offered = [part.strip() for part in lowered["x-moncreneau-signature"].split(",")]
        _match(expected, offered, "X-Moncreneau-Signature")
    return _event(body)


def _header(lowered: Mapping[str, str], name: str) -> str:
    value = lowered.get(name, "")
    if not value:
        raise WebhookVerificationError(f"missing header: {name}")
    return value


_TIMESTAMP_DIGITS = 12


def _timestamp(lowered: Mapping[str, str], name: str, now: int, tolerance: int) -> int:
    raw = _header(lowered, name)
    # int() alone would take " 12", "1_2" or non-ASCII digits, none of which a sender writes,
    # and raise ValueError past 4,300 digits; Unix seconds have 10 digits until 2286.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= _TIMESTAMP_DIGITS):
        shown = repr(raw) if len(raw) <= 40 else f"{len(raw):,} characters long"
        raise WebhookVerificationError(f"bad timestamp: {name} is {shown}, not Unix seconds")
    timestamp = int(raw)
    if now - timestamp > tolerance:
        raise WebhookVerificationError(
            f"too old: {name} {timestamp} is {now - timestamp}s before now,"
            f" beyond the {tolerance}s tolerance"
        )
    if timestamp - now > tolerance:
        raise WebhookVerificationError(
            f"too far in the future: {name} {timestamp} is {timestamp - now}s after now,"
            f" beyond the {tolerance}s tolerance"
        )
    return timestamp


def _match(expected: list[str], offered: list[str], header: str) -> None:
    matched = False
    # Every pair is compared, so the time taken tells nothing about which secret matched;
    # bytes, because compare_digest refuses str with non-ASCII characters.
    for mine in expected:
        for theirs in offered:
            matched |= hmac.compare_digest(mine.encode(), theirs.encode("utf-8", "replace"))
    if not matched:
        raise WebhookVerificationError(
            f"no signature matches: nothing in {header} was made with the secret(s) given"
        )


def _event(body: bytes) -> dict[str, Any]:
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookVerificationError("body is not JSON", bad_payload=True) from None
    if not isinstance(event, dict):
        raise WebhookVerificationError("body is not a JSON object", bad_payload=True)
    for field in ("id", "type"):
        if not isinstance(event.get(field), str) or not event[field]:
            raise WebhookVerificationError(
                f"body is not an event: no string {field!r}", bad_payload=True
            )
    return event


class Store(Protocol):
    """Remembers which event ids were processed, for `Deduplicator`."""

    def claim(self, event_id: str, event_type: str) -> AbstractContextManager[bool]:
        """Enter with True if this caller must process the event, False if it was done.

        While a claim is held, another claim of the same id waits for its outcome. Leaving
        normally records the id as processed; leaving by an exception releases it.
        """
        ...


class Deduplicator:
    """Runs a handler at most once per event `id`, however often the event is delivered.

    >>> once = Deduplicator(MemoryStore())
    >>> once.process({"id": "evt_1", "type": "appointment.created"}, print)
    {'id': 'evt_1', 'type': 'appointment.created'}
    True
    >>> once.process({"id": "evt_1", "type": "appointment.created"}, print)
    False
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def process(self, event: E, handler: Callable[[E], object]) -> bool:
        """Run `handler(event)` unless this event id was processed; True if it ran.

        If the handler raises, the exception propagates and the event stays unprocessed, so
        a redelivery (or a retried job) runs it again. Raises `ValueError` for an event
        without a string `id` and `type`.
        """
        event_id, event_type = event.get("id"), event.get("type")
        if not isinstance(event_id, str) or not event_id:
            raise ValueError(f"an event needs a string 'id', got {event_id!r}")
        if not isinstance(event_type, str) or not event_type:
            raise ValueError(f"an event needs a string 'type', got {event_type!r}")
        with self.store.claim(event_id, event_type) as claimed:
            if claimed:
                handler(event)
        return claimed


class MemoryStore:
    """Processed ids in this process's memory: for tests, or one long-lived consumer.

    Thread-safe. With `max_size`, only the most recently processed ids are kept, so an
    event older than that many others would be processed again if it came back.
    """

    def __init__(self, max_size: int | None = None) -> None:
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be at least 1 or None, got {max_size!r}")
        self.max_size = max_size
        self._done: OrderedDict[str, str] = OrderedDict()
        self._busy: set[str] = set()
        self._changed = threading.Condition()

    def __contains__(self, event_id: object) -> bool:
        with self._changed:
            return event_id in self._done

    def __len__(self) -> int:
        with self._changed:
            return len(self._done)

    @contextmanager
    def claim(self, event_id: str, event_type: str) -> Iterator[bool]:
        with self._changed:
            # Waiting, rather than skipping, a claim in progress: if it fails, this one
            # must still process the event instead of having answered "already done".
            self._changed.wait_for(lambda: event_id not in self._busy)
            if event_id in self._done:
                claimed = False
            else:
                claimed = True
                self._busy.add(event_id)
        if not claimed:
            yield False
            return
        succeeded = False
        try:
            yield True
            succeeded = True
        finally:
            with self._changed:
                self._busy.discard(event_id)
                if succeeded:
                    self._done[event_id] = event_type
                    if self.max_size is not None and len(self._done) > self.max_size:
                        self._done.popitem(last=False)
                self._changed.notify_all()


class Connection(Protocol):
    """The part of a DB-API 2.0 connection that `SqlStore` uses."""

    def cursor(self) -> Any: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
_CREATE = (
    "CREATE TABLE IF NOT EXISTS webhook_events ("
    " id VARCHAR(255) PRIMARY KEY,"
    " event_type VARCHAR(100) NOT NULL,"
    " processed_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
)


class SqlStore:
    """Processed ids in a `webhook_events` table, through a DB-API 2.0 connection.

    Works with `sqlite3` and `psycopg` (SQLite 3.24+, PostgreSQL 9.5+). The table
    `webhook_events(id PRIMARY KEY, event_type, processed_at)` is created if missing, and
    that is committed. Give each thread or process its own connection, not in autocommit
    mode: a claim is an `INSERT ... ON CONFLICT DO NOTHING` in a transaction that stays
    open while the handler runs, committed when it returns and rolled back when it raises.
    So the handler's own writes on the same connection commit together with the claim,
    a consumer that dies midway leaves the event unprocessed, and a second consumer of the
    same id waits on the unique key for the first's outcome (on SQLite, connect with a
    `timeout` longer than your slowest handler). The handler must not commit or roll back.

    `paramstyle` is read from the driver's module unless given.
    """

    def __init__(self, connection: Connection, *, paramstyle: str | None = None) -> None:
        if _autocommits(connection):
            raise ValueError(
                "SqlStore needs a connection that opens transactions, got one in autocommit mode"
            )
        style = paramstyle or _paramstyle(connection)
        if style not in _PLACEHOLDERS:
            raise ValueError(f"paramstyle must be one of {sorted(_PLACEHOLDERS)}, got {style!r}")
        mark = _PLACEHOLDERS[style]
        self.connection = connection
        self._insert = (
            f"INSERT INTO webhook_events (id, event_type) VALUES ({mark}, {mark})"
            " ON CONFLICT (id) DO NOTHING"
        )
        self._create_table()

    def _create_table(self) -> None:
        cursor = self.connection.cursor()
        try:
            cursor.execute(_CREATE)
            self.connection.commit()
        except Exception as error:
            # Consumers starting together can race to create the table, and on PostgreSQL
            # the loser fails; that is harmless if the table is there now.
            self.connection.rollback()
            try:
                cursor.execute("SELECT 1 FROM webhook_events WHERE 1 = 0")
                cursor.fetchall()
                self.connection.rollback()
            except Exception:
                self.connection.rollback()
                raise error from None
        finally:
            cursor.close()

    @contextmanager
    def claim(self, event_id: str, event_type: str) -> Iterator[bool]:
        cursor = self.connection.cursor()
        try:
            cursor.execute(self._insert, (event_id, event_type))
            claimed = cursor.rowcount == 1
        except BaseException:
            self.connection.rollback()
            raise
        finally:
            cursor.close()
        if not claimed:
            self.connection.rollback()
            yield False
            return
        try:
            yield True
        except BaseException:
            self.connection.rollback()
            raise
        self.connection.commit()


def _paramstyle(connection: object) -> str:
    module = sys.modules.get(type(connection).__module__.partition(".")[0])
    style = getattr(module, "paramstyle", None)
    if not isinstance(style, str):
        raise ValueError(
            f"cannot tell the paramstyle of {type(connection).__qualname__}; pass paramstyle="
        )
    return style


def _autocommits(connection: object) -> bool:
    if getattr(connection, "autocommit", False) is True:
        return True
    # sqlite3 (before Python 3.12's `autocommit`) says "autocommit" with isolation_level None.
    return type(connection).__module__ == "sqlite3" and (
        getattr(connection, "isolation_level", "") is None
    )
