"""A wake-up claims due deliveries from the database in batches, organizations in turn."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from moncreneau.config import Settings
from moncreneau.db import write_session
from moncreneau.delivery import jobs, store
from moncreneau.delivery.dispatcher import Dispatcher
from moncreneau.models import Delivery, WebhookSubscription
from moncreneau.outbox import relay
from moncreneau.secretbox import SecretBox, resolve_key
from tests.conftest import Api, new_organization
from tests.receiver import Receiver, start_receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = start_receiver()
    yield rec
    rec.server.shutdown()


def _sessions(app: Flask) -> Any:
    return app.extensions["moncreneau"].sessions


def _book(api: Api, count: int, name: str) -> None:
    department = api.post(
        "/departments", {"name": name, "timezone": "UTC", "slotMinutes": 30, "capacity": 100}
    ).json
    for n in range(count):
        made = {"departmentId": department["id"], "dateTime": "2026-04-01T09:00:00", "name": n}
        assert api.post("/appointments", {**made, "name": f"{name}{n}"}).status_code == 201


def _relay_all(app: Flask, settings: Settings) -> None:
    while relay.relay_once(_sessions(app), settings)[0]:
        pass


def _organization_of(app: Flask, ids: list[str]) -> list[tuple[int, int]]:
    with write_session(_sessions(app)) as db:
        rows = db.execute(
            select(Delivery.id, Delivery.organization_id, Delivery.subscription_id).where(
                Delivery.id.in_(ids)
            )
        ).all()
        db.rollback()
    found = {r.id: (r.organization_id, r.subscription_id) for r in rows}
    return [found[i] for i in ids]


def test_candidates_take_organizations_then_webhooks_in_turn(
    app: Flask, api: Api, receiver: Receiver, settings: Settings
) -> None:
    """A's 40 deliveries were created before B's one: B's is among the first three."""
    for path in ("a1", "a2"):
        api.post("/webhooks", {"url": receiver.url(path), "events": ["*"]})
    _book(api, 20, "A")
    _relay_all(app, settings)
    b = Api(app.test_client(), new_organization(app, "B")["apiKey"])
    b.post("/webhooks", {"url": receiver.url("b"), "events": ["*"]})
    _book(b, 1, "B")
    _relay_all(app, settings)
    with write_session(_sessions(app)) as db:
        first = store.due_in_turn(db, datetime.now(UTC), 3)
        everything = store.due_in_turn(db, datetime.now(UTC), 100)
        db.rollback()
    assert len(everything) == 41
    picked = _organization_of(app, first)
    # A's first, B's first, then A's first on its other webhook.
    assert len({org for org, _hook in picked}) == 2, "B's delivery waits behind A's"
    assert len({hook for _org, hook in picked}) == 3


def _record_selections(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Each wake-up selection's candidates, as they come; none grows stale within a test,
    however slow the machine."""
    selections: list[list[str]] = []

    def recorded(db: Any, now: datetime, limit: int, per_webhook: int, **avoid: Any) -> list[str]:
        found = store.due_in_turn(db, now, limit, per_webhook, **avoid)
        selections.append(found)
        return found

    monkeypatch.setattr(jobs, "due_in_turn", recorded)
    monkeypatch.setattr(jobs, "CANDIDATES_FRESH", 60.0)
    return selections


def _before_first_claim(
    monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[list[str]], None]
) -> list[list[str]]:
    """The ids of each claim a wake-up makes; `meanwhile` runs just before the first."""
    claims: list[list[str]] = []
    real_claim = jobs._claim_and_send

    def claim_after(ctx: Any, ids: list[str], skip_locked: bool = False) -> int:
        claims.append(list(ids))
        if len(claims) == 1:
            meanwhile(ids)
        return real_claim(ctx, ids, skip_locked=skip_locked)

    monkeypatch.setattr(jobs, "_claim_and_send", claim_after)
    return claims


def _context(app: Flask, settings: Settings) -> jobs.DeliveryContext:
    sessions = _sessions(app)
    return jobs.DeliveryContext(
        settings, sessions, SecretBox(resolve_key(settings)), Dispatcher(sessions, settings)
    )


def test_a_wake_up_sends_all_that_is_due_asks_for_help_once_and_stops(
    app: Flask, api: Api, receiver: Receiver, settings: Settings
) -> None:
    api.post("/webhooks", {"url": receiver.url("all"), "events": ["*"]})
    _book(api, 23, "A")
    _relay_all(app, settings)
    ctx = _context(app, settings.replace(job_batch=5))
    asked: list[int] = []
    assert jobs.wake_with(ctx, lambda: asked.append(1)) == 23
    # A full batch asks for another wake-up (for other workers), once.
    assert asked == [1]
    assert ctx.dispatcher.drain(20)
    assert len(receiver.at("all")) == 23
    # Nothing is due any more: the next wake-up claims nothing and asks for nothing.
    assert jobs.wake_with(ctx, lambda: asked.append(2)) == 0
    assert asked == [1]


def test_a_wake_up_leaves_a_paused_webhooks_deliveries_to_the_pause_without_spinning(
    app: Flask, api: Api, receiver: Receiver, settings: Settings
) -> None:
    hook = api.post("/webhooks", {"url": receiver.url("paused"), "events": ["*"]}).json
    _book(api, 3, "A")
    _relay_all(app, settings)
    until = datetime.now(UTC) + timedelta(minutes=5)
    with write_session(_sessions(app)) as db:
        db.execute(
            update(WebhookSubscription)
            .where(WebhookSubscription.id == hook["id"])
            .values(paused_until=until)
        )
        db.commit()
    ctx = _context(app, settings)
    assert jobs.wake_with(ctx, lambda: None) == 0
    with write_session(_sessions(app)) as db:
        assert store.due_in_turn(db, datetime.now(UTC), 10) == []
        waiting = list(db.scalars(select(Delivery.next_attempt_at)))
        db.rollback()
    assert len(waiting) == 3
    assert all(at >= until - timedelta(seconds=1) for at in waiting)
    assert receiver.at("paused") == []


def test_a_wake_up_that_selected_all_that_was_due_does_not_look_again(
    app: Flask,
    api: Api,
    receiver: Receiver,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its mark was cleared before it looked: what is due later wakes a worker itself."""
    api.post("/webhooks", {"url": receiver.url("few"), "events": ["*"]})
    _book(api, 3, "A")
    _relay_all(app, settings)
    selections = _record_selections(monkeypatch)
    ctx = _context(app, settings.replace(job_batch=5))
    assert jobs.wake_with(ctx, lambda: None) == 3
    assert [len(found) for found in selections] == [3]
    assert ctx.dispatcher.drain(20)
    assert len(receiver.at("few")) == 3
    # A batch or more, here one webhook's whole cap (2 batches), may have left some out: it
    # looks again once it has used what it selected.
    _book(api, 12, "B")
    _relay_all(app, settings)
    selections.clear()
    assert jobs.wake_with(ctx, lambda: None) == 12
    assert [len(found) for found in selections] == [10, 2]


def test_a_wake_up_that_selected_a_batch_or_more_looks_again_for_what_came_meanwhile(
    app: Flask,
    api: Api,
    receiver: Receiver,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A relay writes a large fan-out in chunks: the next one is taken in the same wake-up,
    not after a job's round trip through the queue."""
    api.post("/webhooks", {"url": receiver.url("chunks"), "events": ["*"]})
    _book(api, 6, "A")
    _relay_all(app, settings)
    selections = _record_selections(monkeypatch)

    def next_chunk(_ids: list[str]) -> None:
        _book(api, 4, "B")
        _relay_all(app, settings)

    _before_first_claim(monkeypatch, next_chunk)
    ctx = _context(app, settings.replace(job_batch=5))
    assert jobs.wake_with(ctx, lambda: None) == 10
    # 6 (a batch and more) then the 4 written meanwhile; under a batch, it stops there
    assert [len(found) for found in selections] == [6, 4]
    assert ctx.dispatcher.drain(20)
    assert len(receiver.at("chunks")) == 10


def test_a_wake_up_whose_batch_another_worker_took_leaves_it_that_half_of_the_selection(
    app: Flask,
    api: Api,
    receiver: Receiver,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two workers that selected alike would otherwise race for every batch in turn."""
    for n in range(4):
        api.post("/webhooks", {"url": receiver.url(f"hook{n}"), "events": ["*"]})
    _book(api, 10, "A")
    _relay_all(app, settings)
    selections = _record_selections(monkeypatch)

    def rival_claims(ids: list[str]) -> None:
        with write_session(_sessions(app)) as db:
            assert len(store.claim(db, ids, datetime.now(UTC), timedelta(minutes=5))) == 5
            db.commit()

    # another worker claims the first batch just before this one does
    claims = _before_first_claim(monkeypatch, rival_claims)
    ctx = _context(app, settings.replace(job_batch=5))
    # 40 candidates in 8 batches: the first went to the rival, which claims on from there;
    # this wake-up goes on from the farther half of the 7 left (3 batches skipped), then
    # selects again and finds what the rival did not take meanwhile.
    assert jobs.wake_with(ctx, lambda: None) == 35
    first = selections[0]
    assert len(first) == 40
    assert claims[1] == first[20:25]
    assert [i for c in claims[1:5] for i in c] == first[20:40]
    assert sorted(i for c in claims[5:] for i in c) == sorted(first[5:20])
    assert ctx.dispatcher.drain(20)
    assert sum(len(receiver.at(f"hook{n}")) for n in range(4)) == 35


def test_candidates_leave_out_the_webhooks_and_organizations_a_worker_would_hand_back(
    app: Flask, api: Api, receiver: Receiver, settings: Settings
) -> None:
    a1 = api.post("/webhooks", {"url": receiver.url("a1"), "events": ["*"]}).json
    api.post("/webhooks", {"url": receiver.url("a2"), "events": ["*"]})
    _book(api, 2, "A")
    b_org = new_organization(app, "B")
    b = Api(app.test_client(), b_org["apiKey"])
    b_hook = b.post("/webhooks", {"url": receiver.url("b"), "events": ["*"]}).json
    _book(b, 3, "B")
    _relay_all(app, settings)
    b_id = _organization_of_hook(app, b_hook)
    with write_session(_sessions(app)) as db:
        now = datetime.now(UTC)
        found = [
            store.due_in_turn(db, now, 100, avoid=avoid)
            for avoid in (((), ()), ([a1["id"]], []), ([], [b_id]))
        ]
        db.rollback()
    everything, no_a1, no_b = (_organization_of(app, ids) for ids in found)
    assert len(everything) == 7
    assert len(no_a1) == 5 and all(hook != a1["id"] for _org, hook in no_a1)
    assert len(no_b) == 4 and all(org != b_id for org, _hook in no_b)


def _organization_of_hook(app: Flask, webhook: dict[str, Any]) -> int:
    with write_session(_sessions(app)) as db:
        org = db.scalar(
            select(WebhookSubscription.organization_id).where(
                WebhookSubscription.id == webhook["id"]
            )
        )
        db.rollback()
    return int(org)


def test_a_wake_up_leaves_what_its_worker_refuses_and_asks_again_a_moment_later(
    app: Flask,
    api: Api,
    receiver: Receiver,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = api.post("/webhooks", {"url": receiver.url("refused"), "events": ["*"]}).json
    api.post("/webhooks", {"url": receiver.url("ok"), "events": ["*"]})
    _book(api, 3, "A")
    _relay_all(app, settings)
    ctx = _context(app, settings)
    monkeypatch.setattr(ctx.dispatcher, "refusing", lambda: ([refused["id"]], []))
    asked = threading.Event()
    assert jobs.wake_with(ctx, asked.set) == 3
    assert ctx.dispatcher.drain(20)
    assert len(receiver.at("ok")) == 3
    assert receiver.at("refused") == []
    with write_session(_sessions(app)) as db:
        untouched = db.scalars(
            select(Delivery.attempts).where(Delivery.subscription_id == refused["id"])
        ).all()
        db.rollback()
    assert untouched == [0, 0, 0]
    # Under their queue lease the sweeper would leave them for 30 s: another wake-up is
    # asked for once the worker may take them.
    assert asked.wait(10)
    monkeypatch.setattr(ctx.dispatcher, "refusing", lambda: ([], []))
    assert jobs.wake_with(ctx, lambda: None) == 3
    assert ctx.dispatcher.drain(20)
    assert len(receiver.at("refused")) == 3
