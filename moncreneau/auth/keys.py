"""API keys: `mck_<prefix>_<secret>`, shown once, kept only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from moncreneau.clock import iso_utc, utcnow
from moncreneau.domain.errors import Invalid, NotFound
from moncreneau.models import ApiKey, Organization

_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits


def _digest(key: str) -> str:
    # Keys carry 190 random bits, so a fast digest is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def prefix_of(key: str) -> str | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "mck" or not parts[1] or not parts[2]:
        return None
    return f"mck_{parts[1]}"


@dataclass(frozen=True)
class IssuedKey:
    id: int
    prefix: str
    key: str


def issue(session: Session, organization_id: int, name: str | None = None) -> IssuedKey:
    prefix = "mck_" + "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(8))
    key = f"{prefix}_{''.join(secrets.choice(_SECRET_ALPHABET) for _ in range(32))}"
    row = ApiKey(
        organization_id=organization_id,
        prefix=prefix,
        key_hash=_digest(key),
        name=name,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return IssuedKey(row.id, prefix, key)


def authenticate(session: Session, key: str) -> int | None:
    """The organization a live key belongs to, or None for an unknown or revoked key."""
    prefix = prefix_of(key)
    if prefix is None:
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, _digest(key)):
        return None
    return row.organization_id


class KeyCache:
    """Keys this process authenticated lately, so that most requests need no lookup.

    A key revoked elsewhere keeps working here for at most `ttl` seconds; 0 turns it off.
    Unknown and revoked keys are never remembered: a new key works at once.
    """

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self.ttl = ttl
        self._size = size
        self._known: dict[str, tuple[int, float]] = {}

    def authenticate(self, session: Session, key: str) -> int | None:
        if self.ttl <= 0:
            return authenticate(session, key)
        digest = _digest(key)
        now = time.monotonic()
        known = self._known.get(digest)
        if known is not None and known[1] > now:
            return known[0]
        organization_id = authenticate(session, key)
        if organization_id is None:
            self._known.pop(digest, None)
            return None
        if len(self._known) >= self._size:
            self._known.clear()
        self._known[digest] = (organization_id, now + self.ttl)
        return organization_id


def revoke(session: Session, prefix: str) -> dict[str, Any]:
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None:
        raise NotFound(f"No API key with prefix {prefix!r}.")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    session.flush()
    return describe(row)


def describe(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "organizationId": row.organization_id,
        "prefix": row.prefix,
        "name": row.name,
        "createdAt": iso_utc(row.created_at),
        "revokedAt": iso_utc(row.revoked_at) if row.revoked_at else None,
    }


def list_keys(session: Session, organization_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(ApiKey).where(ApiKey.organization_id == organization_id).order_by(ApiKey.id)
    )
    return [describe(r) for r in rows]


def create_organization(session: Session, name: str) -> dict[str, Any]:
    name = name.strip()
    if not name or len(name) > 200:
        raise Invalid.field("name", "An organization needs a name of 1 to 200 characters.")
    org = Organization(name=name, created_at=utcnow())
    session.add(org)
    session.flush()
    issued = issue(session, org.id, name="default")
    return {
        "id": org.id,
        "name": org.name,
        "createdAt": iso_utc(org.created_at),
        "apiKey": issued.key,
        "keyPrefix": issued.prefix,
    }


def require_organization(session: Session, organization_id: int) -> Organization:
    org = session.get(Organization, organization_id)
    if org is None:
        raise NotFound(f"No organization with id {organization_id}.")
    return org
