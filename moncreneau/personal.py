"""Personal data at rest: a data key per appointment, sealed event values, blind indexes.

An appointment's personal values (name, email, phone, notes, cancellation reason) are taken
out of each of its events and stored encrypted (AES-256-GCM) with the appointment's own data
key; that key is stored sealed with MONCRENEAU_SECRET_KEY in `personal_keys`. Erasing deletes
the key: the events stay where they are, with their ids, positions and sequences, and their
personal values read null from then on (crypto-shredding). Readers never fail on a missing key.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from moncreneau.models import AppointmentRow, EventRecord, PersonalKey
from moncreneau.outbox.payloads import PERSONAL_FIELDS
from moncreneau.secretbox import SecretBox

# Personal values inside an event: at the top of its domain facts, inside the facts'
# `changes` (old and new), and in the published object and previous attributes.
DATA_FIELDS = frozenset({"name", "email", "phone", "notes", "reason"})
CHANGE_FIELDS = frozenset({"name", "email", "phone", "notes"})
OBJECT_FIELDS = PERSONAL_FIELDS
# Opened data keys kept in memory per process: a page of events opens each key once.
KEYS_KEPT = 10_000
EMAIL, PHONE = "email", "phone"


def normalize(kind: str, value: str) -> str:
    """What two spellings of one email or phone number have in common."""
    if kind == EMAIL:
        return value.strip().lower()
    digits = "".join(ch for ch in value if ch.isdigit())
    return f"+{digits}" if value.strip().startswith("+") else digits


class Vault:
    """Data keys and blind indexes, derived from MONCRENEAU_SECRET_KEY (every key it lists)."""

    def __init__(self, secret_key: str) -> None:
        self.box = SecretBox(secret_key)
        keys = [part.strip() for part in secret_key.split(",") if part.strip()]
        self._index_keys = [
            hashlib.sha256(b"moncreneau blind index\x00" + k.encode()).digest() for k in keys
        ]
        self.unwrap = functools.lru_cache(maxsize=KEYS_KEPT)(self._unwrap)

    def new_key(self) -> tuple[bytes, str]:
        """A fresh data key, and the same sealed for storage."""
        raw = os.urandom(32)
        return raw, self.box.seal(base64.urlsafe_b64encode(raw).decode())

    def _unwrap(self, sealed: str) -> bytes:
        return base64.urlsafe_b64decode(self.box.open(sealed))

    def reseal(self, sealed: str) -> str:
        return self.box.reseal(sealed)

    def index(self, kind: str, value: str | None) -> str | None:
        """The blind index of a value, with the first key (what is stored)."""
        if value is None:
            return None
        return self._digest(self._index_keys[0], kind, value)

    def indexes(self, kind: str, value: str) -> list[str]:
        """The value's blind index under every configured key (a key change in progress)."""
        return [self._digest(key, kind, value) for key in self._index_keys]

    def fingerprints(self, text: str) -> list[str]:
        """Keyed digests of a request (Idempotency-Key), under every configured key.

        Keyed, because a request may carry personal values that a plain digest would let
        anyone holding a copy of the database confirm by guessing.
        """
        return [
            hmac.new(key, text.encode(), hashlib.sha256).hexdigest() for key in self._index_keys
        ]

    @staticmethod
    def _digest(key: bytes, kind: str, value: str) -> str:
        message = f"{kind}:{normalize(kind, value)}".encode()
        return hmac.new(key, message, hashlib.sha256).hexdigest()


def encrypt(key: bytes, event_id: str, values: dict[str, Any]) -> str:
    nonce = os.urandom(12)
    plain = json.dumps(values, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(
        nonce + AESGCM(key).encrypt(nonce, plain, event_id.encode())
    ).decode()


def decrypt(key: bytes, event_id: str, token: str) -> dict[str, Any] | None:
    """The sealed values, or None if they cannot be opened with this key."""
    raw = base64.urlsafe_b64decode(token)
    try:
        plain = AESGCM(key).decrypt(raw[:12], raw[12:], event_id.encode())
    except InvalidTag:
        return None
    values: dict[str, Any] = json.loads(plain)
    return values


@dataclass(frozen=True)
class Parts:
    data: dict[str, Any]
    object: dict[str, Any]
    previous_attributes: dict[str, Any] | None


def split(parts: Parts) -> tuple[Parts, dict[str, Any]]:
    """The parts with every personal value replaced by null, and those values apart."""
    taken: dict[str, Any] = {}
    data = dict(parts.data)
    found = {k: data[k] for k in DATA_FIELDS if data.get(k) is not None}
    if found:
        taken["d"] = found
        data.update(dict.fromkeys(found))
    if isinstance(data.get("changes"), dict):
        changes = dict(data["changes"])
        found = {k: changes[k] for k in CHANGE_FIELDS if k in changes}
        if found:
            taken["c"] = found
            changes.update({k: [None, None] for k in found})
            data["changes"] = changes
    obj = dict(parts.object)
    found = {k: obj[k] for k in OBJECT_FIELDS if obj.get(k) is not None}
    if found:
        taken["o"] = found
        obj.update(dict.fromkeys(found))
    previous = parts.previous_attributes
    if previous is not None:
        previous = dict(previous)
        found = {k: previous[k] for k in OBJECT_FIELDS if previous.get(k) is not None}
        if found:
            taken["p"] = found
            previous.update(dict.fromkeys(found))
    return Parts(data, obj, previous), taken


def merge(parts: Parts, taken: dict[str, Any]) -> Parts:
    """The inverse of `split`."""
    data = {**parts.data, **taken.get("d", {})}
    if "c" in taken:
        data["changes"] = {**data["changes"], **taken["c"]}
    obj = {**parts.object, **taken.get("o", {})}
    previous = parts.previous_attributes
    if previous is not None:
        previous = {**previous, **taken.get("p", {})}
    return Parts(data, obj, previous)


def seal(record: EventRecord, key: bytes) -> None:
    """Move the personal values of an event not yet inserted into `sealed`, encrypted."""
    clear, taken = split(Parts(record.data, record.object, record.previous_attributes))
    record.data, record.object = clear.data, clear.object
    record.previous_attributes = clear.previous_attributes
    record.sealed = encrypt(key, record.id, taken) if taken else None


@dataclass(frozen=True)
class Revealed:
    """An event as its readers see it: personal values opened, or null once erased."""

    txid: int
    position: int
    id: str
    organization_id: int
    type: str
    appointment_id: int | None
    sequence: int | None
    webhook_id: int | None
    created_at: datetime
    data: dict[str, Any]
    object: dict[str, Any]
    previous_attributes: dict[str, Any] | None


def open_event(record: EventRecord, key: bytes | None) -> Revealed:
    """Never fails: without its key (erased), an event shows null where the values were."""
    parts = Parts(record.data, record.object, record.previous_attributes)
    if record.sealed is not None and key is not None:
        taken = decrypt(key, record.id, record.sealed)
        if taken is not None:
            parts = merge(parts, taken)
    return Revealed(
        txid=record.txid,
        position=record.position,
        id=record.id,
        organization_id=record.organization_id,
        type=record.type,
        appointment_id=record.appointment_id,
        sequence=record.sequence,
        webhook_id=record.webhook_id,
        created_at=record.created_at,
        data=parts.data,
        object=parts.object,
        previous_attributes=parts.previous_attributes,
    )


def keys_of(
    session: Session, vault: Vault, appointment_ids: Iterable[int], lock: bool = False
) -> dict[int, bytes]:
    """The data keys of these appointments that still exist.

    `lock` holds them until commit (PostgreSQL), so that an erasure waits for a writer that
    copies opened values elsewhere (the relay rendering bodies), and such a writer that
    comes after an erasure finds no key.
    """
    ids = sorted(set(appointment_ids))
    if not ids:
        return {}
    query = select(PersonalKey.appointment_id, PersonalKey.key).where(
        PersonalKey.appointment_id.in_(ids)
    )
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    return {row.appointment_id: vault.unwrap(row.key) for row in session.execute(query)}


def reveal(
    session: Session, vault: Vault, records: Sequence[EventRecord], lock: bool = False
) -> list[Revealed]:
    """Open a batch of events with one look-up of their keys."""
    keys = keys_of(
        session,
        vault,
        (r.appointment_id for r in records if r.sealed is not None and r.appointment_id),
        lock,
    )
    return [open_event(r, keys.get(r.appointment_id or 0)) for r in records]


def issue(
    session: Session,
    vault: Vault,
    organization_id: int,
    appointment_id: int,
    email: str | None,
    phone: str | None,
    now: datetime,
) -> bytes:
    """A new appointment's data key, stored sealed with its blind indexes."""
    raw, sealed = vault.new_key()
    session.add(
        PersonalKey(
            appointment_id=appointment_id,
            organization_id=organization_id,
            key=sealed,
            email_index=vault.index(EMAIL, email),
            phone_index=vault.index(PHONE, phone),
            created_at=now,
        )
    )
    return raw


def reseal(session: Session, vault: Vault) -> int:
    """Seal every data key again, and compute every blind index again, with the first key
    of MONCRENEAU_SECRET_KEY (`moncreneau secrets reseal`); returns how many keys."""
    rows = session.execute(
        select(PersonalKey, AppointmentRow.email, AppointmentRow.phone).join(
            AppointmentRow, AppointmentRow.id == PersonalKey.appointment_id
        )
    )
    count = 0
    for stored, email, phone in rows:
        stored.key = vault.reseal(stored.key)
        stored.email_index = vault.index(EMAIL, email)
        stored.phone_index = vault.index(PHONE, phone)
        count += 1
    return count
