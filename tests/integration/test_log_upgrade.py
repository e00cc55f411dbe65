"""Upgrading a log with events to the order by transaction: nothing skipped or repeated."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, insert, select
from sqlalchemy.engine import Engine

from moncreneau.app import create_app
from moncreneau.auth import keys
from moncreneau.db import make_engine, make_session_factory
from moncreneau.models import Delivery, EventRecord, RelayState
from moncreneau.ops.migrate import upgrade
from moncreneau.outbox import relay, store
from tests import services
from tests.conftest import BACKENDS, Api, make_settings

# The revision before events recorded their transaction.
BEFORE = "0005"
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own, migrated up to `BEFORE` only."""
    with services.database_at(request.param, tmp_path, BEFORE) as url:
        yield url


def fill_before_upgrade(engine: Engine, events: int, relayed: int) -> int:
    """An organization, `events` events and a relay that has read `relayed` of them."""
    with engine.begin() as conn:
        tables = MetaData()
        organizations, log, state = (
            Table(name, tables, autoload_with=conn)
            for name in ("organizations", "events", "relay_state")
        )
        org = conn.execute(
            insert(organizations)
            .values(name="Clinique", created_at=NOW)
            .returning(organizations.c.id)
        ).scalar_one()
        for n in range(1, events + 1):
            conn.execute(
                insert(log).values(
                    id=f"evt_before{n:02d}",
                    organization_id=org,
                    type="appointment.created",
                    data={"n": n},
                    object={"n": n},
                    created_at=NOW,
                )
            )
        conn.execute(insert(state).values(name=relay.RELAY, position=relayed, updated_at=NOW))
    return int(org)


def append(engine: Engine, organization_id: int, label: str) -> None:
    with make_session_factory(engine)() as session:
        store.append(
            session,
            organization_id=organization_id,
            type="appointment.created",
            occurred_at=NOW,
            data={"label": label},
            object={"label": label},
        )
        session.commit()


def test_an_upgraded_log_is_read_on_from_stored_positions_and_old_cursors(
    old_database: str,
) -> None:
    engine = make_engine(old_database)
    org = fill_before_upgrade(engine, events=5, relayed=3)
    upgrade(engine)
    append(engine, org, "after-1")
    append(engine, org, "after-2")
    settings = make_settings(old_database)
    app = create_app(settings)
    sessions = make_session_factory(engine)
    try:
        with sessions() as db:
            key = keys.issue(db, org).key
            db.commit()
        api = Api(app.test_client(), key)
        webhook = api.post("/webhooks", {"url": "https://hooks.example.com/in", "events": ["*"]})
        assert webhook.status_code == 201, webhook.json
        expected = ["evt_before04", "evt_before05"]

        # The relay's stored position: the two events it had not read, then the new ones.
        while relay.relay_once(sessions, settings)[0]:
            pass
        relay.relay_once(sessions, settings)
        with sessions() as db:
            delivered = db.scalars(select(Delivery.event_id).order_by(Delivery.seq)).all()
            state = db.scalar(select(RelayState))
            last = db.scalar(select(EventRecord).order_by(*store.ORDER).offset(6))
        assert delivered[:2] == expected
        assert len(delivered) == 4 == len(set(delivered))
        assert state is not None and last is not None
        assert store.LogPosition.of(state) == store.LogPosition.of(last)

        # A cursor given out before the upgrade names a position only.
        page = api.get("/events", query_string={"cursor": "events.3"}).json
        assert [e["id"] for e in page["data"][:2]] == expected
        assert [e["data"]["object"].get("label") for e in page["data"][2:]] == [
            "after-1",
            "after-2",
        ]
        assert page["hasMore"] is False

        # And the whole log, page by page with the new cursors, holds each event once.
        seen: list[str] = []
        cursor: str | None = None
        while True:
            query: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            body = api.get("/events", query_string=query).json
            seen += [e["id"] for e in body["data"]]
            cursor = body["nextCursor"]
            if not cursor:
                break
        assert seen[:5] == [f"evt_before{n:02d}" for n in range(1, 6)]
        assert len(seen) == 7 == len(set(seen))
    finally:
        app.extensions["moncreneau"].sessions.kw["bind"].dispose()
        engine.dispose()
