"""Delivery bookkeeping: claims are fenced by their lease, and fan-out is split in batches."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text, update
from sqlalchemy.engine import Engine

from moncreneau.clock import iso_utc
from moncreneau.config import Settings
from moncreneau.db import write_session
from moncreneau.delivery import store
from moncreneau.delivery.endpoints import pause_sending
from moncreneau.delivery.recorder import MAX_PAUSE, PAUSE, Recorder
from moncreneau.erasures import service as erasures
from moncreneau.models import Delivery, IdempotencyRecord, WebhookSubscription
from moncreneau.ops import housekeeping
from moncreneau.outbox import relay
from tests.conftest import Api, new_organization

HOOK = {"url": "https://example.org/hook", "events": ["*"]}


def _sessions(app: Flask) -> Any:
    return app.extensions["moncreneau"].sessions


def _book(api: Api, department: dict[str, Any], count: int) -> None:
    for n in range(count):
        made = api.post(
            "/appointments",
            {
                "departmentId": department["id"],
                "dateTime": f"2026-04-01T{8 + n // 2:02d}:{30 * (n % 2):02d}:00",
                "name": f"P{n}",
            },
        )
        assert made.status_code == 201


def _settlement(claimed: store.Claimed, status: str, code: int) -> store.Settlement:
    return store.Settlement(
        claimed=claimed,
        started_at=datetime.now(UTC),
        duration_ms=5,
        status_code=code,
        error=None if code == 200 else f"HTTP {code}",
        excerpt="",
        status=status,
        next_attempt_at=None if status == store.SUCCEEDED else datetime.now(UTC),
    )


def _taken_over(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings
) -> tuple[store.Claimed, store.Claimed]:
    """One delivery claimed by a worker whose lease ran out, then by the one that took over."""
    api.post("/webhooks", HOOK)
    _book(api, department, 1)
    relay.relay_once(_sessions(app), settings)
    now = datetime.now(UTC)
    with write_session(_sessions(app)) as db:
        [delivery_id] = db.scalars(select(Delivery.id))
        [stale] = store.claim(db, [delivery_id], now, timedelta(seconds=-1))
        [current] = store.claim(db, [delivery_id], now, timedelta(seconds=60))
        db.commit()
    return stale, current


def test_a_late_failure_does_not_undo_the_claim_of_the_worker_that_took_over(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings, engine: Engine
) -> None:
    stale, current = _taken_over(app, api, department, settings)
    now = datetime.now(UTC)
    with write_session(_sessions(app)) as db:
        store.settle(db, [_settlement(stale, store.FAILED, 500)], now)
        db.commit()
    with engine.connect() as conn:
        row = conn.execute(text("SELECT status, locked_until FROM deliveries")).one()
        attempts = conn.execute(text("SELECT number FROM delivery_attempts")).scalars().all()
    assert row[0] == store.PENDING
    assert row[1] is not None, "the new holder's lease was erased"
    assert attempts == [stale.attempt], "the stale attempt itself is still recorded"

    with write_session(_sessions(app)) as db:
        store.settle(db, [_settlement(current, store.SUCCEEDED, 200)], now)
        store.settle(db, [_settlement(stale, store.FAILED, 500)], now)
        db.commit()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM deliveries")).scalar_one() == "succeeded"


@pytest.mark.parametrize("success_first", [True, False])
def test_two_attempts_of_one_delivery_settled_in_one_batch_keep_the_success(
    app: Flask,
    api: Api,
    department: dict[str, Any],
    settings: Settings,
    engine: Engine,
    success_first: bool,
) -> None:
    stale, current = _taken_over(app, api, department, settings)
    batch = [_settlement(stale, store.SUCCEEDED, 200), _settlement(current, store.FAILED, 500)]
    with write_session(_sessions(app)) as db:
        store.settle(db, batch if success_first else batch[::-1], datetime.now(UTC))
        db.commit()
    with engine.connect() as conn:
        row = conn.execute(text("SELECT status, locked_until, last_status_code FROM deliveries"))
        codes = conn.execute(text("SELECT status_code FROM delivery_attempts")).scalars()
        assert tuple(row.one()) == ("succeeded", None, 200)
        assert sorted(codes) == [200, 500], "both attempts are in the log"


def test_a_batch_of_settlements_records_each_outcome_on_its_own_delivery(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings, engine: Engine
) -> None:
    api.post("/webhooks", HOOK)
    _book(api, department, 3)
    relay.relay_once(_sessions(app), settings)
    now = datetime.now(UTC)
    with write_session(_sessions(app)) as db:
        ids = list(db.scalars(select(Delivery.id).order_by(Delivery.seq)))
        claimed = store.claim(db, ids, now, timedelta(seconds=60))
        db.commit()
    outcomes = [(store.SUCCEEDED, 200), (store.FAILED, 503), (store.DEAD, 410)]
    with write_session(_sessions(app)) as db:
        store.settle(
            db,
            [_settlement(c, s, code) for c, (s, code) in zip(claimed, outcomes, strict=True)],
            now,
        )
        db.commit()
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT d.status, d.last_status_code, d.last_error, d.locked_until, a.number "
                "FROM deliveries d JOIN delivery_attempts a ON a.delivery_seq = d.seq "
                "ORDER BY d.seq"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("succeeded", 200, None, None, 1),
        ("failed", 503, "HTTP 503", None, 1),
        ("dead", 410, "HTTP 410", None, 1),
    ]


def test_a_release_gives_back_every_claim_of_a_batch_without_counting_an_attempt(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings
) -> None:
    api.post("/webhooks", HOOK)
    _book(api, department, 3)
    relay.relay_once(_sessions(app), settings)
    now = datetime.now(UTC)
    later = now + timedelta(seconds=5)
    with write_session(_sessions(app)) as db:
        ids = list(db.scalars(select(Delivery.id)))
        claimed = store.claim(db, ids, now, timedelta(seconds=60))
        store.release(db, [store.HandBack(c, later) for c in claimed])
        db.commit()
    with write_session(_sessions(app)) as db:
        rows = db.execute(
            select(Delivery.locked_until, Delivery.attempts, Delivery.next_attempt_at)
        )
        assert [tuple(r) for r in rows] == [(None, 0, later)] * 3


def test_a_release_gives_back_only_a_claim_still_held(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings
) -> None:
    stale, current = _taken_over(app, api, department, settings)
    with write_session(_sessions(app)) as db:
        store.release(db, [store.HandBack(stale, datetime.now(UTC))])
        db.commit()
    with write_session(_sessions(app)) as db:
        row = db.scalar(select(Delivery))
        assert row is not None
        assert row.locked_until == current.locked_until
        assert row.attempts == 2


def test_a_fan_out_larger_than_one_batch_is_finished_by_the_next_ones_exactly_once(
    app: Flask,
    api: Api,
    department: dict[str, Any],
    settings: Settings,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _ in range(4):
        api.post("/webhooks", HOOK)
    _book(api, department, 5)
    monkeypatch.setattr(relay, "MAX_DELIVERIES_PER_BATCH", 6)
    rounds = 0
    while True:
        more, _ids = relay.relay_once(_sessions(app), settings)
        rounds += 1
        if not more:
            break
    relay.relay_once(_sessions(app), settings)
    with engine.connect() as conn:
        per_pair = (
            conn.execute(text("SELECT count(*) FROM deliveries GROUP BY event_id, subscription_id"))
            .scalars()
            .all()
        )
    assert len(per_pair) == 20
    assert set(per_pair) == {1}
    assert rounds >= 3


def _positions_and_pairs(engine: Engine) -> tuple[int, list[int], set[str]]:
    with engine.connect() as conn:
        position = conn.execute(text("SELECT position FROM relay_state")).scalar_one()
        per_pair = (
            conn.execute(text("SELECT count(*) FROM deliveries GROUP BY event_id, subscription_id"))
            .scalars()
            .all()
        )
        ids = set(conn.execute(text("SELECT id FROM deliveries")).scalars())
    return position, per_pair, ids


def test_a_large_fan_out_is_handed_over_in_growing_committed_chunks_and_survives_a_failure(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings, engine: Engine
) -> None:
    for _ in range(8):
        api.post("/webhooks", HOOK)
    _book(api, department, 2)  # 16 deliveries
    settings = settings.replace(job_batch=2)
    handed: list[list[str]] = []

    def failing_on_the_third(ids: list[str]) -> None:
        handed.append(ids)
        if len(handed) == 3:
            raise ConnectionError("queue unavailable")

    with pytest.raises(ConnectionError):
        relay.relay_once(_sessions(app), settings, failing_on_the_third)
    # Chunks of 2, 4 and 8 were committed; the position did not move.
    assert [len(ids) for ids in handed] == [2, 4, 8]
    position, per_pair, stored = _positions_and_pairs(engine)
    assert position == 0
    assert set(per_pair) == {1}
    assert stored == {i for ids in handed for i in ids}

    # The next run inserts only what is missing, and hands over only that.
    again: list[list[str]] = []
    more, rest = relay.relay_once(_sessions(app), settings, again.append)
    assert not more
    position, per_pair, stored = _positions_and_pairs(engine)
    assert position > 0
    assert len(per_pair) == 16
    assert set(per_pair) == {1}
    new = [i for ids in again for i in ids] + rest
    assert len(new) == 2
    assert set(new) == stored - {i for ids in handed for i in ids}


def test_a_light_organizations_event_is_handed_over_before_anothers_large_fan_outs(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings, engine: Engine
) -> None:
    """A's 3 events to 8 webhooks were logged before B's one: B's delivery is committed and
    handed over first, then A's in growing chunks, each pair once, in the log's order within
    each organization."""
    for _ in range(8):
        api.post("/webhooks", HOOK)
    _book(api, department, 3)  # 24 deliveries
    b = Api(app.test_client(), new_organization(app, "B")["apiKey"])
    b.post("/webhooks", HOOK)
    b_department = b.post("/departments", {"name": "B", "timezone": "UTC", "capacity": 10}).json
    _book(b, b_department, 1)
    handed: list[list[str]] = []
    more, rest = relay.relay_once(_sessions(app), settings.replace(job_batch=4), handed.append)
    assert not more
    handed.append(rest)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, organization_id, event_position, seq FROM deliveries ORDER BY seq")
        ).all()
    organization = {r.id: r.organization_id for r in rows}
    b_id = organization[handed[0][0]]
    assert [organization[i] for i in handed[0]] == [b_id]
    assert all(organization[i] != b_id for ids in handed[1:] for i in ids)
    assert sorted(len(ids) for ids in handed[1:] if ids) == [4, 8, 12]
    assert len(rows) == len({i for ids in handed for i in ids}) == 25
    a_positions = [r.event_position for r in rows if r.organization_id != b_id]
    assert a_positions == sorted(a_positions)
    position, per_pair, _stored = _positions_and_pairs(engine)
    assert set(per_pair) == {1}
    assert position == max(r.event_position for r in rows)


@pytest.mark.parametrize("neighbour", [True, False], ids=["light-first", "chunks"])
def test_an_erasure_between_two_hand_overs_is_seen_by_the_deliveries_written_after_it(
    app: Flask,
    api: Api,
    department: dict[str, Any],
    settings: Settings,
    engine: Engine,
    neighbour: bool,
) -> None:
    """A hand-over's commit lets the keys of the events still to write go: an erasure that
    comes in then leaves no personal value in the deliveries the relay writes after it
    (after a light organization's events, or after a chunk of a large fan-out)."""
    for _ in range(8):
        api.post("/webhooks", HOOK)
    name = "Zephyrine Quillfeather"
    made = {"departmentId": department["id"], "dateTime": "2026-04-01T09:00:00", "name": name}
    erased = api.post("/appointments", made).json
    if neighbour:
        b = Api(app.test_client(), new_organization(app, "B")["apiKey"])
        b.post("/webhooks", HOOK)
        b_department = b.post("/departments", {"name": "B", "timezone": "UTC", "capacity": 10}).json
        _book(b, b_department, 1)
    runtime = app.extensions["moncreneau"]
    handed: list[list[str]] = []

    def erase_on_first(ids: list[str]) -> None:
        if not handed:
            with write_session(runtime.sessions) as db:
                org = db.scalar(
                    text("SELECT organization_id FROM appointments WHERE id = :a"),
                    {"a": erased["id"]},
                )
                assert erasures.erase_now(
                    db, runtime.vault, org, [erased["id"]], datetime.now(UTC)
                ) == [erased["id"]]
                db.commit()
        handed.append(ids)

    relay.relay_once(
        runtime.sessions, settings.replace(job_batch=4 if neighbour else 2), erase_on_first
    )
    with engine.connect() as conn:
        bodies = (
            conn.execute(
                text("SELECT body FROM deliveries WHERE appointment_id = :a"), {"a": erased["id"]}
            )
            .scalars()
            .all()
        )
    assert len(bodies) == 8
    assert not any(name in body for body in bodies)


def test_housekeeping_forgets_idempotency_keys_past_their_retention(
    app: Flask, api: Api, engine: Engine
) -> None:
    for key in ("old", "new"):
        api.post("/departments", {"name": key, "timezone": "UTC"}, headers={"Idempotency-Key": key})
    with engine.begin() as conn:
        conn.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == "old")
            .values(created_at=datetime.now(UTC) - timedelta(hours=25))
        )
    runtime = app.extensions["moncreneau"]
    # What a relay runs at each sweep.
    housekeeping.Housekeeper(runtime.sessions, runtime.settings, runtime.vault)()
    with engine.connect() as conn:
        keys = conn.execute(text("SELECT key FROM idempotency_keys")).scalars().all()
    assert keys == ["new"]


def test_replay_goes_in_bounded_steps_and_never_picks_the_same_delivery_twice(
    app: Flask,
    api: Api,
    department: dict[str, Any],
    settings: Settings,
    org: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moncreneau.webhooks import deliveries as log

    hook = api.post("/webhooks", HOOK).json
    _book(api, department, 5)
    relay.relay_once(_sessions(app), settings)
    with write_session(_sessions(app)) as db:
        db.execute(update(Delivery).values(status=store.DEAD, attempts=4))
        db.commit()
    monkeypatch.setattr(log, "MAX_REPLAY", 2)
    window = (datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1))
    seen: list[str] = []
    more = True
    with write_session(_sessions(app)) as db:
        while more:
            ids, more = log.replay(db, org["id"], hook["id"], *window)
            assert len(ids) <= 2
            seen += ids
        db.commit()
    assert len(seen) == len(set(seen)) == 5


def _pause(app: Flask, webhook_id: int, failing_for: timedelta | None) -> datetime:
    """Pause the webhook as a worker does, failing for `failing_for`; returns the pause's end."""
    now = datetime.now(UTC)
    with write_session(_sessions(app)) as db:
        db.execute(
            update(WebhookSubscription)
            .where(WebhookSubscription.id == webhook_id)
            .values(failing_since=now - failing_for if failing_for else None)
        )
        pause_sending(db, webhook_id, now, PAUSE, MAX_PAUSE)
        db.commit()
    until = _webhook_column(app, webhook_id, WebhookSubscription.paused_until)
    assert until is not None
    return until


def _webhook_column(app: Flask, webhook_id: int, column: Any) -> Any:
    with _sessions(app)() as db:
        return db.scalar(select(column).where(WebhookSubscription.id == webhook_id))


def test_a_pause_lasts_as_long_as_the_webhook_has_failed_within_bounds_and_never_shrinks(
    app: Flask, api: Api
) -> None:
    hook = api.post("/webhooks", HOOK).json["id"]
    before = datetime.now(UTC)
    assert before + PAUSE <= _pause(app, hook, None) <= datetime.now(UTC) + PAUSE
    assert _pause(app, hook, timedelta(seconds=1)) <= datetime.now(UTC) + PAUSE
    minute = _pause(app, hook, timedelta(minutes=1))
    assert before + timedelta(minutes=1) <= minute <= datetime.now(UTC) + timedelta(minutes=1)
    assert _pause(app, hook, timedelta(seconds=1)) == minute
    assert _pause(app, hook, timedelta(days=1)) <= datetime.now(UTC) + MAX_PAUSE


def test_a_paused_webhooks_deliveries_wait_unclaimed_until_the_pause_ends(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings
) -> None:
    paused = api.post("/webhooks", HOOK).json["id"]
    other = api.post("/webhooks", {**HOOK, "url": "https://example.org/other"}).json["id"]
    _book(api, department, 1)
    relay.relay_once(_sessions(app), settings)
    until = _pause(app, paused, timedelta(minutes=1))
    now = datetime.now(UTC)
    with write_session(_sessions(app)) as db:
        ids = list(db.scalars(select(Delivery.id)))
        claimed = store.claim(db, ids, now, timedelta(seconds=60))
        db.commit()
        query = select(Delivery).where(Delivery.subscription_id == paused)
        waiting = db.execute(query).scalar_one()
    # The other webhook's delivery is claimed; the paused one's waits, no attempt counted.
    assert [c.subscription_id for c in claimed] == [other]
    assert (waiting.attempts, waiting.locked_until, waiting.queued_until) == (0, None, None)
    assert waiting.next_attempt_at == until
    with write_session(_sessions(app)) as db:
        assert store.due_for_queue(db, now, 10) == []
        assert store.due_for_queue(db, until, 10) == [waiting.id]
        [after] = store.claim(db, [waiting.id], until, timedelta(seconds=60))
        db.commit()
    assert (after.id, after.attempt) == (waiting.id, 1)


def _put_off(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings
) -> tuple[int, str, datetime]:
    """A paused webhook with one delivery the claim put off: (webhook, delivery, pause end)."""
    hook = api.post("/webhooks", HOOK).json["id"]
    _book(api, department, 1)
    relay.relay_once(_sessions(app), settings)
    until = _pause(app, hook, timedelta(minutes=1))
    with write_session(_sessions(app)) as db:
        [delivery_id] = db.scalars(select(Delivery.id))
        assert store.claim(db, [delivery_id], datetime.now(UTC), timedelta(seconds=60)) == []
        db.commit()
    return hook, delivery_id, until


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("patch", "", {"description": "fixed"}),
        ("post", "/test", None),
        ("post", "/deliveries/{delivery}/retry", None),
        ("post", "/replay", {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}),
    ],
)
def test_a_change_a_test_a_retry_or_a_replay_ends_a_pause_and_what_it_put_off_is_due(
    app: Flask,
    api: Api,
    department: dict[str, Any],
    settings: Settings,
    method: str,
    path: str,
    body: Any,
) -> None:
    hook, delivery_id, until = _put_off(app, api, department, settings)
    assert api.get(f"/webhooks/{hook}").json["pausedUntil"] == iso_utc(until)
    answer = getattr(api, method)(f"/webhooks/{hook}{path.format(delivery=delivery_id)}", body)
    assert answer.status_code < 300, answer.json
    assert api.get(f"/webhooks/{hook}").json["pausedUntil"] is None
    with write_session(_sessions(app)) as db:
        due = store.due_for_queue(db, datetime.now(UTC), 10)
        db.rollback()
    assert delivery_id in due


def test_a_new_url_starts_without_the_old_ones_failures(app: Flask, api: Api) -> None:
    hook = api.post("/webhooks", HOOK).json["id"]
    _pause(app, hook, timedelta(hours=2))
    failing_since = _webhook_column(app, hook, WebhookSubscription.failing_since)
    assert failing_since is not None
    # The same URL, or another field: still the same endpoint, still failing.
    for body in ({"description": "checked"}, {"url": HOOK["url"]}):
        assert api.patch(f"/webhooks/{hook}", body).status_code == 200
        assert _webhook_column(app, hook, WebhookSubscription.failing_since) == failing_since
    assert api.patch(f"/webhooks/{hook}", {"url": "https://example.org/fixed"}).status_code == 200
    assert _webhook_column(app, hook, WebhookSubscription.failing_since) is None


def test_the_recorder_writes_attempts_hand_backs_and_pauses_in_one_batch(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings
) -> None:
    hook = api.post("/webhooks", HOOK).json["id"]
    _book(api, department, 2)
    relay.relay_once(_sessions(app), settings)
    now = datetime.now(UTC)
    with write_session(_sessions(app)) as db:
        ids = sorted(db.scalars(select(Delivery.id)))
        sent, unsent = store.claim(db, ids, now, timedelta(seconds=60))
        db.commit()
    recorder = Recorder(_sessions(app), settings)
    recorder.add(_settlement(sent, store.FAILED, 500))
    recorder.hand_back([unsent], timedelta(minutes=3))
    recorder.pause(hook)
    assert recorder.wait_idle(10)
    with write_session(_sessions(app)) as db:
        rows = {
            d.id: (d.status, d.attempts, d.locked_until, d.next_attempt_at)
            for d in db.scalars(select(Delivery))
        }
        paused_until = db.scalar(select(WebhookSubscription.paused_until))
        db.rollback()
    # The failure is recorded and frees its claim; so does the hand-back, uncounted.
    assert rows[sent.id][:3] == (store.FAILED, 1, None)
    status, attempts, locked_until, next_attempt_at = rows[unsent.id]
    assert (status, attempts, locked_until) == (store.PENDING, 0, None)
    assert next_attempt_at >= now + timedelta(minutes=3)
    assert paused_until is not None and paused_until >= now + PAUSE


class FirstRounds:
    """A queue that records what a relay gives it, and stops the relay after its first sweep
    (its first round enqueues what it relayed, then what it swept)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.stop = threading.Event()

    def enqueue(self, delivery_ids: list[str]) -> None:
        self.calls.append(list(delivery_ids))
        if len(self.calls) == 2:
            self.stop.set()

    def backlog(self) -> int:
        return 0


def test_a_relay_taking_over_queues_what_a_relay_killed_before_queuing_left_under_lease(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings
) -> None:
    api.post("/webhooks", HOOK)
    _book(api, department, 2)
    # What a relay killed between its commit and its queuing leaves: deliveries under a
    # queue lease, in no queue.
    _more, stranded = relay.relay_once(_sessions(app), settings)
    assert len(stranded) == 2
    # The lease keeps a running relay's sweep off them: it honours the queue's hold.
    assert relay.sweep(_sessions(app)) == []
    queue = FirstRounds()
    relay.run(_sessions(app), settings, queue, queue.stop)
    relayed, swept = queue.calls
    assert relayed == []
    assert sorted(swept) == sorted(stranded)
