"""Reading the organization's event log: pages in commit order, and single events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from moncreneau.api.fields import is_public_id
from moncreneau.domain.errors import NotFound
from moncreneau.models import EventRecord
from moncreneau.outbox import store
from moncreneau.outbox.payloads import envelope_v1
from moncreneau.pagination import Page, keyset_page
from moncreneau.personal import Vault, reveal


def list_page(
    session: Session,
    organization_id: int,
    limit: int,
    cursor: str | None,
    event_type: str | None = None,
    *,
    vault: Vault,
) -> Page[dict[str, Any]]:
    """Oldest first, in the log's order: a later page misses nothing committed meanwhile.

    Events that committed before the request are on it (unless a transaction open for
    longer holds them back; they follow on a later page).
    """
    where = [EventRecord.organization_id == organization_id]
    if event_type:
        where.append(EventRecord.type == event_type)
    store.wait_until_readable(session, *where)
    return keyset_page(
        session,
        select(EventRecord).where(*where, store.readable()),
        store.ORDER,
        "events",
        limit,
        cursor,
        lambda rows: [envelope_v1(r) for r in reveal(session, vault, rows)],
        maximum=2**63 - 1,
        widen=store.legacy_position,
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
