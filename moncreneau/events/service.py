"""Reading the organization's event log: pages in commit order, and single events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from moncreneau.domain.errors import NotFound
from moncreneau.fields import is_public_id
from moncreneau.models import EventRecord
from moncreneau.pagination import Page, keyset_page
from moncreneau.personal import Vault, reveal
from moncreneau.webhooks.payloads import envelope_v1


def list_page(
    session: Session,
    organization_id: int,
    limit: int,
    cursor: str | None,
    event_type: str | None = None,
    *,
    vault: Vault,
) -> Page[dict[str, Any]]:
    """Oldest first; positions commit in order, so a later page misses nothing."""
    query = select(EventRecord).where(EventRecord.organization_id == organization_id)
    if event_type:
        query = query.where(EventRecord.type == event_type)
    return keyset_page(
        session,
        query,
        EventRecord.position,
        "events",
        limit,
        cursor,
        lambda rows: [envelope_v1(r) for r in reveal(session, vault, rows)],
        maximum=2**63 - 1,
    )


def get(session: Session, organization_id: int, event_id: str, *, vault: Vault) -> dict[str, Any]:
    record = is_public_id(event_id, "evt") and session.scalar(
        select(EventRecord).where(
            EventRecord.id == event_id, EventRecord.organization_id == organization_id
        )
    )
    if not record:
        raise NotFound(f"No event with id {event_id!r}.")
    return envelope_v1(reveal(session, vault, [record])[0])
