"""Ordering per appointment, as the claim decides it, on each backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from moncreneau.config import Settings
from moncreneau.db import write_session
from moncreneau.delivery import store
from moncreneau.models import Delivery
from moncreneau.ops.housekeeping import keep_house
from moncreneau.outbox import relay
from tests.conftest import Api, book_move_cancel

LEASE = timedelta(seconds=60)


def _sessions(app: Flask) -> Any:
    return app.extensions["moncreneau"].sessions


def _hook(api: Api, path: str, **extra: Any) -> int:
    made = api.post("/webhooks", {"url": f"https://example.org/{path}", "events": ["*"], **extra})
    assert made.status_code == 201, made.json
    hook: int = made.json["id"]
    return hook


def _deliveries(app: Flask, hook: int) -> list[Delivery]:
    with _sessions(app)() as db:
        query = select(Delivery).where(Delivery.subscription_id == hook).order_by(Delivery.seq)
        return list(db.scalars(query))


def _claim(app: Flask, ids: list[str], ordered: bool = True) -> list[store.Claimed]:
    """Claim as a job does (which reads whether the webhook orders by appointment)."""
    with write_session(_sessions(app)) as db:
        claimed = store.claim(db, ids, datetime.now(UTC), LEASE)
        db.commit()
    return [c.__class__(**{**c.__dict__, "ordered": ordered}) for c in claimed]


def _settle(app: Flask, claimed: store.Claimed, status: str) -> list[str]:
    """Settle one claim; returns the deliveries whose turn came."""
    now = datetime.now(UTC)
    settlement = store.Settlement(
        claimed=claimed,
        started_at=now,
        duration_ms=5,
        status_code=200 if status == store.SUCCEEDED else 500,
        error=None if status == store.SUCCEEDED else "HTTP 500",
        excerpt="",
        status=status,
        # a failure to retry at once: the next claim may take it again
        next_attempt_at=None if status != store.FAILED else now,
    )
    with write_session(_sessions(app)) as db:
        turns = store.settle(db, [settlement], now)
        db.commit()
    return turns


def _types(claimed: list[store.Claimed]) -> list[tuple[int | None, str]]:
    return [(c.appointment_id, c.event_type) for c in claimed]


def test_an_appointments_next_delivery_waits_until_the_one_before_succeeded(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings
) -> None:
    ordered = _hook(api, "ordered", ordering="appointment")
    unordered = _hook(api, "unordered")
    first = book_move_cancel(api, department, 9)
    second = book_move_cancel(api, department, 11)
    relay.relay_once(_sessions(app), settings)
    rows = _deliveries(app, ordered)
    assert [(d.appointment_id, d.event_type) for d in rows] == [
        (first, "appointment.created"),
        (first, "appointment.updated"),
        (first, "appointment.cancelled"),
        (second, "appointment.created"),
        (second, "appointment.updated"),
        (second, "appointment.cancelled"),
    ]
    ids = [d.id for d in rows]

    # One at a time per appointment; the other appointment is not held up.
    claimed = _claim(app, ids)
    assert _types(claimed) == [(first, "appointment.created"), (second, "appointment.created")]
    # Unordered by default: everything goes at once, as before.
    everything = _claim(app, [d.id for d in _deliveries(app, unordered)], ordered=False)
    assert len(everything) == 6
    assert _settle(app, everything[0], store.SUCCEEDED) == [], "unordered: nothing to let go"

    # A failure to be retried keeps the next one waiting, however often it is tried.
    assert _settle(app, claimed[0], store.FAILED) == [], "a failure lets nothing go"
    again = _claim(app, ids)
    assert _types(again) == [(first, "appointment.created")]
    assert again[0].attempt == 2
    _settle(app, again[0], store.SUCCEEDED)
    _settle(app, claimed[1], store.SUCCEEDED)
    assert _types(_claim(app, ids)) == [
        (first, "appointment.updated"),
        (second, "appointment.updated"),
    ]


def test_a_dead_delivery_lets_the_next_one_go(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings
) -> None:
    hook = _hook(api, "ordered", ordering="appointment")
    book_move_cancel(api, department, 9)
    relay.relay_once(_sessions(app), settings)
    ids = [d.id for d in _deliveries(app, hook)]
    [created] = _claim(app, ids)
    assert _settle(app, created, store.DEAD) == [ids[1]]
    [updated] = _claim(app, ids)
    assert updated.event_type == "appointment.updated"


def test_settling_lifts_the_queue_lease_of_the_next_delivery_only(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings
) -> None:
    """The job that found the next one waiting left it under its queue lease: the settle
    lifts it, in the same transaction, and names it for the worker to queue; were that
    lost, the sweeper queues it at its next round."""
    hook = _hook(api, "ordered", ordering="appointment")
    book_move_cancel(api, department, 9)
    relay.relay_once(_sessions(app), settings)
    rows = _deliveries(app, hook)
    assert all(d.queued_until is not None for d in rows), "the relay queued all three"
    [created] = _claim(app, [d.id for d in rows])
    with write_session(_sessions(app)) as db:
        assert store.due_for_queue(db, datetime.now(UTC), 10) == []
        db.rollback()
    assert _settle(app, created, store.SUCCEEDED) == [rows[1].id]
    after = _deliveries(app, hook)
    assert [d.queued_until is None for d in after] == [True, True, False]
    with write_session(_sessions(app)) as db:
        assert store.due_for_queue(db, datetime.now(UTC), 10) == [rows[1].id]
        db.commit()


def test_a_webhook_switched_to_ordering_orders_the_deliveries_already_open(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings
) -> None:
    hook = _hook(api, "later")
    book_move_cancel(api, department, 9)
    relay.relay_once(_sessions(app), settings)
    ids = [d.id for d in _deliveries(app, hook)]
    switched = api.patch(f"/webhooks/{hook}", {"ordering": "appointment"})
    assert switched.status_code == 200
    assert switched.json["ordering"] == "appointment"
    assert _types(_claim(app, ids))[0][1] == "appointment.created"
    assert _claim(app, ids) == []
    # and back: the rest goes at once
    assert api.patch(f"/webhooks/{hook}", {"ordering": "none"}).status_code == 200
    assert len(_claim(app, ids, ordered=False)) == 2


def test_a_retried_old_delivery_holds_back_the_newer_ones_still_waiting(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings
) -> None:
    hook = _hook(api, "ordered", ordering="appointment")
    book_move_cancel(api, department, 9)
    relay.relay_once(_sessions(app), settings)
    ids = [d.id for d in _deliveries(app, hook)]
    [created] = _claim(app, ids)
    _settle(app, created, store.SUCCEEDED)
    retried = api.post(f"/webhooks/{hook}/deliveries/{created.id}/retry")
    assert retried.status_code == 202, retried.json
    # The old event goes again first; the update, not yet sent, waits for it.
    assert _types(_claim(app, ids))[0][1] == "appointment.created"
    assert _claim(app, ids) == []


def test_a_paused_ordered_webhook_puts_off_its_deliveries_as_any_other(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings
) -> None:
    hook = _hook(api, "ordered", ordering="appointment")
    book_move_cancel(api, department, 9)
    relay.relay_once(_sessions(app), settings)
    until = datetime.now(UTC) + timedelta(minutes=1)
    with write_session(_sessions(app)) as db:
        db.execute(text("UPDATE webhook_subscriptions SET paused_until = :u"), {"u": until})
        db.commit()
    ids = [d.id for d in _deliveries(app, hook)]
    assert _claim(app, ids) == []
    assert {d.queued_until for d in _deliveries(app, hook)} == {None}


def test_an_erased_appointments_deliveries_hold_nothing_back(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings
) -> None:
    hook = _hook(api, "ordered", ordering="appointment")
    erased = book_move_cancel(api, department, 9)
    relay.relay_once(_sessions(app), settings)
    answer = api.post("/erasures", {"appointmentIds": [erased]})
    assert answer.status_code == 202, answer.json
    runtime = app.extensions["moncreneau"]
    keep_house(runtime.sessions, settings, runtime.vault, datetime.now(UTC), retention=False)
    relay.relay_once(_sessions(app), settings)
    rows = _deliveries(app, hook)
    assert [d.status for d in rows[:3]] == [store.ERASED] * 3
    waiting = [d.id for d in rows if d.status in store.OPEN]
    assert waiting, "the erasure's own event is delivered"
    assert len(_claim(app, waiting)) == len(waiting)


def test_many_open_deliveries_of_one_appointment_are_found_through_the_index(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings, engine: Engine
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the plan is PostgreSQL's")
    hook = _hook(api, "ordered", ordering="appointment")
    unordered = _hook(api, "unordered")
    appointment = book_move_cancel(api, department, 9)
    relay.relay_once(_sessions(app), settings)
    with engine.begin() as conn:
        # 20,000 more open deliveries of this appointment, and as many of others
        conn.execute(
            text(
                """INSERT INTO deliveries (id, organization_id, subscription_id, event_position,
                    event_id, event_type, appointment_id, payload_version, body, status,
                    attempts, attempt_budget, next_attempt_at, created_at, updated_at)
                SELECT 'msg_x' || n, organization_id, subscription_id, -n, event_id,
                    event_type, CASE WHEN n % 2 = 0 THEN appointment_id ELSE n END,
                    payload_version, body, 'pending', 0, 5, now(), now(), now()
                FROM deliveries, generate_series(1, 40000) AS n
                WHERE subscription_id = :hook AND event_type = 'appointment.cancelled'"""
            ),
            {"hook": hook},
        )
        conn.execute(text("ANALYZE deliveries"))
    ordered_ids = [d.id for d in _deliveries(app, hook)][:3]
    plan = _analyzed_claim(engine, ordered_ids)
    assert "ix_deliveries_open_appointment" in plan, plan
    assert "Seq Scan on deliveries" not in plan, plan

    # An unordered webhook's claim never runs the ordering lookup.
    plan = _analyzed_claim(engine, [d.id for d in _deliveries(app, unordered)])
    lookups = [line for line in plan.splitlines() if "ix_deliveries_open_appointment" in line]
    assert lookups and all("never executed" in line for line in lookups), plan
    assert "SubPlan" in plan and appointment


def _analyzed_claim(engine: Engine, ids: list[str]) -> str:
    """The claim's plan as it ran (in a transaction rolled back)."""
    now = datetime.now(UTC)
    compiled = store._CLAIM.compile(dialect=engine.dialect)
    expanded = compiled.construct_expanded_state({"ids": ids, "now": now, "until": now + LEASE})
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {expanded.statement}", expanded.parameters
        )
        plan = "\n".join(r[0] for r in rows)
        conn.rollback()
    return plan


def test_candidates_leave_out_deliveries_waiting_for_their_turn(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings
) -> None:
    """A wake-up's candidates: only what the claim would take, so that an appointment held
    back by its first delivery does not fill a webhook's places while others are due."""
    ordered = _hook(api, "ordered", ordering="appointment")
    first = book_move_cancel(api, department, 9)
    second = book_move_cancel(api, department, 11)
    relay.relay_once(_sessions(app), settings)
    rows = _deliveries(app, ordered)
    creations = {d.id for d in rows if d.event_type == "appointment.created"}

    with write_session(_sessions(app)) as db:
        # one place per webhook: the first appointment's later deliveries must not take it
        picked = store.due_in_turn(db, datetime.now(UTC), 10, per_webhook=2)
        db.rollback()
    assert set(picked) == creations
    claimed = _claim(app, picked)
    assert {c.appointment_id for c in claimed} == {first, second}

    _settle(app, next(c for c in claimed if c.appointment_id == first), store.SUCCEEDED)
    with write_session(_sessions(app)) as db:
        picked = store.due_in_turn(db, datetime.now(UTC), 10)
        db.rollback()
    assert [(d.appointment_id, d.event_type) for d in rows if d.id in picked] == [
        (first, "appointment.updated")
    ]
