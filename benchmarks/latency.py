"""P4 and the embedded mode: paced bookings and the time their deliveries arrive."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from benchmarks.api import API_WORKERS, booking_target
from benchmarks.harness import (
    Pipeline,
    Processes,
    Receiver,
    Spread,
    answers,
    base_env,
    free_port,
    percentile,
    pipeline,
    receiver,
    wait_until,
)
from benchmarks.load import Target, post_load
from benchmarks.results import Row, Run


def paced_latencies(target: Target, rec: Receiver, seconds: float) -> tuple[float, list[float]]:
    """The closed-loop rate, then commit-to-receipt latencies (ms) at half of it.

    Latency: the receiver's arrival stamp minus the moment the client read the API's 2xx,
    matched through the appointment id in the delivered body.
    """
    rec.reset()
    full = post_load(target, seconds)
    # Whatever the burst queued is delivered before the paced load starts.
    rec.wait_for("trace", full.outcome.ok, 300)
    rec.reset()
    paced = post_load(target, seconds * 2, rate=full.rate / 2, keep_ids=True)
    rec.wait_for("trace", paced.outcome.ok, 300)
    wanted = {i for _answered, i in paced.outcome.answered}
    arrived: dict[int, float] = {}

    def all_arrived() -> bool:
        for stamp, _kind, _id, body in rec.arrivals():
            assert body is not None
            arrived.setdefault(json.loads(body)["data"]["object"]["id"], stamp)
        return wanted <= arrived.keys()

    wait_until(all_arrived, 60, "every paced booking's delivery", 0.2)
    latencies = [(arrived[i] - answered) * 1000 for answered, i in paced.outcome.answered]
    return full.rate, latencies


def _rounds(run: Run, target: Target, rec: Receiver) -> tuple[list[float], list[list[float]]]:
    seconds = run.size(6, 3)
    rec.reset()
    warm = post_load(target, 1)
    rec.wait_for("trace", warm.outcome.ok, 300)
    rates, rounds = [], []
    for _ in range(run.rounds):
        rate, latencies = paced_latencies(target, rec, seconds)
        rates.append(rate)
        rounds.append(latencies)
    return rates, rounds


def _figures(rounds: list[list[float]]) -> tuple[Spread, Spread]:
    return (
        Spread.of([percentile(r, 50) for r in rounds]),
        Spread.of([percentile(r, 99) for r in rounds]),
    )


def p4(run: Run) -> None:
    with receiver() as rec, pipeline(API_WORKERS, departments=8) as pipe:
        pipe.subscribe(rec.url("trace", "p4"))
        pipe.procs.moncreneau("relay")
        pipe.procs.moncreneau("worker")
        pipe.procs.moncreneau("worker")
        rates, rounds = _rounds(run, booking_target(pipe), rec)
    run.latencies["P4 201-to-receipt, production processes"] = rounds[-1]
    p50, p99 = _figures(rounds)
    count = sum(len(r) for r in rounds) // len(rounds)
    run.add(
        Row(
            "P4",
            "booking-to-receipt latency at half the max sustained rate, production processes",
            f"p50 {p50.show(1, ' ms')}, p99 {p99.show(1, ' ms')}",
            target="p50 ≤ 25 ms, p99 ≤ 100 ms",
            met=p50.median <= 25 and p99.median <= 100,
            measured=f"P4: API (gunicorn {API_WORKERS} workers), relay and 2 workers on "
            "PostgreSQL and Redis; per round a closed-loop burst finds the max booking rate "
            f"({Spread.of(rates).show(0, ' req/s')}), then bookings paced at half of it for "
            f"twice as long (~{count} per round); latency = the receiver's arrival stamp "
            "(time.time()) minus the client's time.time() on reading the 201, so it excludes "
            "the request's own time in the API.",
        )
    )


def e1(run: Run) -> None:
    """`moncreneau run`: bookings per second and booking-to-receipt latency."""
    folder = Path(tempfile.mkdtemp(prefix="moncreneau-embedded-"))
    env = base_env("sqlite:///moncreneau.db", None)
    env.pop("MONCRENEAU_SECRET_KEY")  # the embedded mode keeps its own key file
    procs = Processes(env, folder)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    try:
        with receiver() as rec:
            procs.moncreneau("run", "--port", str(port))
            wait_until(lambda: answers(f"{api}/healthz"), 60, "moncreneau run answering")
            pipe = Pipeline("sqlite:///moncreneau.db", None, procs, api=api)
            pipe.key = json.loads(procs.run("org", "create", "Bench", "--json"))["apiKey"]
            pipe.add_departments(8)
            pipe.subscribe(rec.url("trace", "e1"))
            rates, rounds = _rounds(run, booking_target(pipe), rec)
    finally:
        procs.close()
        shutil.rmtree(folder, ignore_errors=True)
    run.latencies["E1 201-to-receipt, embedded `moncreneau run`"] = rounds[-1]
    p50, p99 = _figures(rounds)
    run.add(
        Row(
            "E1",
            "embedded `moncreneau run` (SQLite, one process): bookings/s, and latency at half",
            f"{Spread.of(rates).show(0, ' req/s')}; p50 {p50.show(1, ' ms')}, "
            f"p99 {p99.show(1, ' ms')}",
            target="figure",
            measured="E1: the same rounds as P4 against one `moncreneau run` process "
            "(waitress, 16 threads, relay thread and inline delivery, SQLite); the rate is "
            "the closed-loop booking rate while it also delivers.",
        )
    )
