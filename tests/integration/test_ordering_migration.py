"""Upgrading a database that holds deliveries: they name their appointment, webhooks stay
unordered, and a webhook then switched to ordering orders those still open."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from moncreneau.db import make_engine, make_session_factory, write_session
from moncreneau.delivery import store
from moncreneau.models import Delivery, EventRecord, Organization, WebhookSubscription
from moncreneau.ops.migrate import upgrade
from moncreneau.personal import Vault
from tests import services
from tests.conftest import BACKENDS

AT = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database at revision 0014, before deliveries named their appointment."""
    with services.database_at(request.param, tmp_path, "0014") as url:
        yield url


def _write_as_before(url: str) -> None:
    """Two appointments' events, a test event, and their deliveries, some open, as 0014 had
    them (only the columns it knew)."""
    engine = make_engine(url)
    events = [
        ("appointment.created", 1, 1),
        ("appointment.created", 2, 1),
        ("appointment.updated", 1, 2),
        ("webhook.test", None, None),
        ("appointment.cancelled", 1, 3),
    ]
    with engine.begin() as conn:
        conn.execute(Organization.__table__.insert().values(id=1, name="Old", created_at=AT))
        conn.execute(
            WebhookSubscription.__table__.insert().values(
                id=1,
                organization_id=1,
                url="https://example.org/hook",
                events=["*"],
                version="2.0",
                enabled=True,
                secret="sealed",
                created_at=AT,
                updated_at=AT,
            )
        )
        for n, (kind, appointment, sequence) in enumerate(events, 1):
            conn.execute(
                EventRecord.__table__.insert().values(
                    position=n,
                    id=f"evt_old{n}",
                    organization_id=1,
                    type=kind,
                    appointment_id=appointment,
                    sequence=sequence,
                    data={},
                    object={},
                    created_at=AT,
                )
            )
            conn.execute(
                Delivery.__table__.insert().values(
                    id=f"msg_old{n}",
                    organization_id=1,
                    subscription_id=1,
                    event_position=n,
                    event_id=f"evt_old{n}",
                    event_type=kind,
                    payload_version="2.0",
                    body="{}",
                    # the first delivery went out; the others still wait
                    status=store.SUCCEEDED if n == 1 else store.PENDING,
                    attempts=1 if n == 1 else 0,
                    attempt_budget=5,
                    next_attempt_at=AT,
                    created_at=AT,
                    updated_at=AT,
                )
            )
    engine.dispose()


def test_upgrading_names_each_deliverys_appointment_and_keeps_webhooks_unordered(
    old_database: str,
) -> None:
    _write_as_before(old_database)
    engine = make_engine(old_database)
    upgrade(engine, vault=Vault("ordering-upgrade-key"))
    with engine.connect() as conn:
        named = conn.execute(text("SELECT id, appointment_id FROM deliveries ORDER BY seq")).all()
        ordering = conn.execute(text("SELECT ordering FROM webhook_subscriptions")).scalar_one()
    assert [tuple(r) for r in named] == [
        ("msg_old1", 1),
        ("msg_old2", 2),
        ("msg_old3", 1),
        ("msg_old4", None),
        ("msg_old5", 1),
    ]
    assert ordering == store.UNORDERED

    with engine.begin() as conn:
        conn.execute(text("UPDATE webhook_subscriptions SET ordering = 'appointment'"))
    sessions = make_session_factory(engine)
    now = datetime.now(UTC)
    waiting = ["msg_old2", "msg_old3", "msg_old4", "msg_old5"]
    with write_session(sessions) as db:
        claimed = store.claim(db, waiting, now, timedelta(seconds=60))
        db.commit()
    # Appointment 1's update (its creation went out before), appointment 2's creation and
    # the test event, which belongs to no appointment; appointment 1's cancellation waits.
    assert sorted(c.id for c in claimed) == ["msg_old2", "msg_old3", "msg_old4"]
    engine.dispose()
