"""F1 and F2: one organization's hanging webhooks, or its burst of large fan-outs, against
another organization's deliveries."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.harness import Spread, book_one, percentile, pipeline, receiver, wait_until
from benchmarks.results import Row, Run
from moncreneau.integrator.listen import api_call

HOOKS_A = 100
EVENTS_B = 50
PACE_B = 0.1
# how long B's deliveries are waited for after its last booking
PATIENCE = 60.0


def _book(api: str, key: str, department: int, name: str) -> dict[str, Any]:
    booked: dict[str, Any] = api_call(
        api,
        key,
        "POST",
        "/appointments",
        {"departmentId": department, "dateTime": "2031-01-01T10:00:00", "name": name},
    )
    return booked


def _round(bookings_a: int) -> tuple[list[float], int]:
    """B's booking-to-receipt latencies (ms) of what arrived, and how many arrived."""
    with receiver() as rec, pipeline(2) as pipe:
        for n in range(HOOKS_A):
            pipe.subscribe(rec.url("hang", f"a{n}"))
        key_b, department_b = pipe.add_organization("B")
        api_call(
            pipe.api, key_b, "POST", "/webhooks", {"url": rec.url("trace", "b"), "events": ["*"]}
        )
        pipe.procs.moncreneau("relay")
        pipe.procs.moncreneau("worker")
        # The processes are up and a delivery of B's goes through before the load starts.
        _book(pipe.api, key_b, department_b, "warm-up")
        rec.wait_for("trace", 1, 60)
        rec.reset()

        with ThreadPoolExecutor(4) as pool:
            list(
                pool.map(
                    lambda n: _book(pipe.api, pipe.key, pipe.departments[0], f"A {n}"),
                    range(bookings_a),
                )
            )
        answered: dict[int, float] = {}
        next_at = time.monotonic()
        for n in range(EVENTS_B):
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += PACE_B
            booked = _book(pipe.api, key_b, department_b, f"B {n}")
            answered[int(booked["id"])] = time.time()
        arrived = rec.wait_for_receipts(answered.keys(), PATIENCE)
        latencies = [(arrived[i] - t) * 1000 for i, t in answered.items() if i in arrived]
        return latencies, len(latencies)


def _percentile(latencies: list[float], q: float) -> float:
    return percentile(latencies, q) if latencies else float("inf")


def f1(run: Run) -> None:
    bookings_a = run.size(200, 100)
    rounds = [_round(bookings_a) for _ in range(run.rounds)]
    p99, p50 = (Spread.of([_percentile(latencies, q) for latencies, _ in rounds]) for q in (99, 50))
    received = Spread.of([count for _, count in rounds])
    run.latencies["F1 B's booking-to-receipt, A's 100 webhooks hanging"] = rounds[-1][0]
    run.add(
        Row(
            "F1",
            f"organization B's deliveries while A's {HOOKS_A} webhooks hang",
            f"p99 {p99.show(0, ' ms')}, p50 {p50.show(0, ' ms')}; "
            f"{received.show(0)} of {EVENTS_B} received",
            target=f"p99 ≤ 1 s, all {EVENTS_B} received",
            met=p99.median <= 1000 and received.low == EVENTS_B,
            measured=f"F1: API (gunicorn 2 workers), relay and 1 worker on PostgreSQL and "
            f"Redis, default settings (10 s timeout). Organization A subscribes {HOOKS_A} "
            f"webhooks to a receiver that never answers and books {bookings_a} appointments "
            f"(4 clients); right after, organization B books {EVENTS_B}, {PACE_B * 1000:.0f} ms "
            "apart, to one fast webhook. Figure: B's latency from reading the 201 to the "
            f"receiver's arrival stamp, and how many of B's arrived within {PATIENCE:.0f} s of "
            "its last booking; a fresh installation each round.",
        )
    )


# F2: A's burst, as events of 100 webhooks each, appended at once
EVENTS_A = 400


def _relay_round() -> tuple[float, float]:
    """Ms from B's 201 to its delivery's creation, and s for A's whole burst."""
    with pipeline() as pipe:
        for n in range(HOOKS_A):
            pipe.subscribe(f"http://127.0.0.1:9/a{n}")
        book_one(pipe)
        key_b, department_b = pipe.add_organization("B")
        api_call(
            pipe.api, key_b, "POST", "/webhooks", {"url": "http://127.0.0.1:9/b", "events": ["*"]}
        )
        pipe.procs.moncreneau("relay")
        wait_until(lambda: pipe.deliveries() >= HOOKS_A, 60, "the first event relayed")
        pipe.append_events(EVENTS_A)
        began = time.monotonic()
        booked = _book(pipe.api, key_b, department_b, "B")
        answered = time.monotonic()
        wait_until(
            lambda: (
                pipe.sql(
                    "SELECT count(*) FROM deliveries WHERE event_id IN "
                    "(SELECT id FROM events WHERE appointment_id = :a)",
                    a=booked["id"],
                )
                >= 1
            ),
            120,
            "B's delivery",
            0.005,
        )
        b_created = time.monotonic()
        total = HOOKS_A * (1 + EVENTS_A) + 1
        wait_until(lambda: pipe.deliveries() >= total, 300, "A's burst relayed", 0.05)
        return (b_created - answered) * 1000, time.monotonic() - began


def f2(run: Run) -> None:
    rounds = [_relay_round() for _ in range(run.rounds)]
    b = Spread.of([ms for ms, _ in rounds])
    burst = Spread.of([s for _, s in rounds])
    deliveries = HOOKS_A * EVENTS_A
    run.add(
        Row(
            "F2",
            f"organization B's delivery created while the relay works through A's {deliveries:,}",
            f"{b.show(0, ' ms')} after B's 201; A's {deliveries:,} in {burst.show(1, ' s')}",
            target="figure",
            met=None,
            measured=f"F2: API (gunicorn 1 worker) and relay on PostgreSQL, no worker. "
            f"Organization A has {HOOKS_A} webhooks; {EVENTS_A} of its events are appended in "
            "one transaction, and right after, organization B books one appointment to its one "
            "webhook. Figure: from reading B's 201 to its delivery row being committed, and "
            "the time to relay A's burst; a fresh installation each round.",
        )
    )
