"""P6: the relay's events per second over a store holding a million delivered events."""

from __future__ import annotations

import time

from benchmarks.delivery import relaying
from benchmarks.harness import Pipeline, Spread, book_one, log, pipeline
from benchmarks.results import Row, Run
from tests.services import wait_until


def fill_history(pipe: Pipeline, count: int) -> None:
    """`count` events already relayed, each with its delivery succeeded and its attempt."""
    subscription = pipe.sql("SELECT min(id) FROM webhook_subscriptions")
    statements = [
        "INSERT INTO events (id, organization_id, type, data, object, created_at) "
        "SELECT 'evt_' || md5('history' || g::text), organization_id, type, data, object, "
        "created_at FROM events, generate_series(1, :n) AS g "
        "WHERE position = (SELECT min(position) FROM events)",
        "INSERT INTO deliveries (id, organization_id, subscription_id, event_position, "
        "event_id, event_type, payload_version, body, status, attempts, attempt_budget, "
        "created_at, updated_at) "
        "SELECT 'msg_' || md5(e.id), e.organization_id, :sub, e.position, e.id, e.type, '2.0', "
        "e.object::text, 'succeeded', 1, 10, now(), now() FROM events AS e "
        "WHERE NOT EXISTS (SELECT 1 FROM deliveries AS d WHERE d.event_position = e.position)",
        "INSERT INTO delivery_attempts (delivery_seq, number, started_at, duration_ms, "
        "status_code) SELECT seq, 1, created_at, 3, 200 FROM deliveries",
        "INSERT INTO relay_state (name, txid, position, updated_at) "
        "SELECT 'relay', txid, position, now() FROM events ORDER BY txid DESC, position DESC "
        "LIMIT 1 ON CONFLICT (name) DO UPDATE SET txid = excluded.txid, "
        "position = excluded.position",
    ]
    started = time.monotonic()
    for statement in statements:
        pipe.sql(statement, n=count, sub=subscription)
    assert pipe.engine is not None
    with pipe.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    log(f"   {count:,} delivered events stored in {time.monotonic() - started:.0f}s")


def relay_rate(pipe: Pipeline, events: int) -> float:
    """Events/s from their commit until the relay's position passed the last of them."""
    committed = time.perf_counter()
    pipe.append_events(events)
    last = pipe.sql("SELECT max(position) FROM events")
    wait_until(
        lambda: pipe.sql("SELECT position FROM relay_state") >= last,
        300,
        "the relay through the new events",
        0.01,
    )
    return events / (time.perf_counter() - committed)


def p6(run: Run) -> None:
    history = run.size(1_000_000, 100_000)
    events = run.size(20_000, 5_000)
    with pipeline() as empty, pipeline() as full:
        for pipe in (empty, full):
            # Subscribed but never delivered: no worker runs, the queue only fills.
            pipe.subscribe("http://127.0.0.1:9/p6")
        relaying(empty)
        book_one(full)
        fill_history(full, history)
        full.procs.moncreneau("relay")
        wait_until(lambda: full.sql("SELECT position FROM relay_state") is not None, 60)
        relay_rate(empty, 500)
        relay_rate(full, 500)
        bases, loaded = [], []
        for _ in range(run.rounds):
            bases.append(relay_rate(empty, events))
            loaded.append(relay_rate(full, events))
    ratio = Spread.of([f / b for f, b in zip(loaded, bases, strict=True)])
    run.add(
        Row(
            "P6",
            f"relay events/s with {history:,} delivered events stored",
            Spread.of(loaded).show(0, " events/s"),
            Spread.of(bases).show(0, " events/s") + " empty store",
            ratio,
            "≥ 0.9",
            ratio.median >= 0.9,
            f"P6: {events:,} new events committed at once, one subscription; time from the "
            "commit until relay_state.position reaches the last of them (deliveries created "
            "and their jobs queued; no worker). The loaded store holds the history as SQL "
            "copies of a real event, each with a succeeded delivery and its attempt, "
            "vacuumed and analyzed before measuring.",
        )
    )
