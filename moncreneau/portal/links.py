"""Portal links: issued through the API, opened once, then a browser session until they expire."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from moncreneau.models import PortalLink

# Bounds of `expiresInMinutes`: a minute to a week.
MIN_MINUTES, MAX_MINUTES = 1, 7 * 24 * 60
# URL path under which a link opens the portal; the token follows it.
OPEN_PATH = "/portal/open/"


def _digest(token: str) -> str:
    # Tokens carry 256 random bits: a fast digest is enough, there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Issued:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class Visitor:
    """Who a portal session belongs to, and what it may do."""

    link_id: int
    organization_id: int
    read_only: bool
    expires_at: datetime
    csrf_token: str


def issue(
    session: Session, organization_id: int, minutes: int, read_only: bool, now: datetime
) -> Issued:
    if not MIN_MINUTES <= minutes <= MAX_MINUTES:
        raise ValueError(f"minutes must be {MIN_MINUTES} to {MAX_MINUTES}, got {minutes!r}")
    token = "mcp_" + secrets.token_urlsafe(32)
    expires_at = now + timedelta(minutes=minutes)
    session.add(
        PortalLink(
            organization_id=organization_id,
            token_hash=_digest(token),
            read_only=read_only,
            created_at=now,
            expires_at=expires_at,
        )
    )
    session.flush()
    return Issued(token, expires_at)


def usable(session: Session, token: str, now: datetime) -> bool:
    """Whether the link would open now (not opened yet, not expired), without opening it."""
    found = session.scalar(
        select(PortalLink.id).where(
            PortalLink.token_hash == _digest(token),
            PortalLink.opened_at.is_(None),
            PortalLink.expires_at > now,
        )
    )
    return found is not None


def open_link(session: Session, token: str, now: datetime) -> tuple[str, datetime] | None:
    """Spend the link: a new session token and its end, or None if it cannot open.

    One statement decides, so two browsers opening the link at once get one session.
    """
    session_token = "mcs_" + secrets.token_urlsafe(32)
    expires_at = session.scalar(
        update(PortalLink)
        .where(
            PortalLink.token_hash == _digest(token),
            PortalLink.opened_at.is_(None),
            PortalLink.expires_at > now,
        )
        .values(opened_at=now, session_hash=_digest(session_token))
        .returning(PortalLink.expires_at)
    )
    return (session_token, expires_at) if expires_at is not None else None


def visitor(session: Session, session_token: str, now: datetime) -> Visitor | None:
    """The session's organization and rights while it lasts; None once it has expired."""
    if not session_token:
        return None
    link = session.scalar(
        select(PortalLink).where(
            PortalLink.session_hash == _digest(session_token), PortalLink.expires_at > now
        )
    )
    if link is None:
        return None
    return Visitor(
        link.id, link.organization_id, link.read_only, link.expires_at, csrf_token(session_token)
    )


def close(session: Session, session_token: str, now: datetime) -> None:
    """End a session before its time (signing out)."""
    session.execute(
        update(PortalLink)
        .where(PortalLink.session_hash == _digest(session_token))
        .values(expires_at=now)
    )


def csrf_token(session_token: str) -> str:
    """The token every form of this session carries: derived, so nothing more is stored."""
    return hmac.new(session_token.encode(), b"portal-csrf", hashlib.sha256).hexdigest()


def csrf_matches(session_token: str, submitted: str) -> bool:
    return hmac.compare_digest(csrf_token(session_token), submitted or "")
