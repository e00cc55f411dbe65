"""P2, P3, P5, P7, M1 and scaling: deliveries timed from the receiver's arrival stamps."""

from __future__ import annotations

import time

import redis

from benchmarks.harness import (
    REDIS_URL,
    Pipeline,
    Receiver,
    Spread,
    book_one,
    pipeline,
    receiver,
    wait_until,
)
from benchmarks.results import Row, Run
from benchmarks.sending import (
    arrival_span,
    drain,
    prepare_backlog,
    raw_rate,
    receiver_ceiling,
    sample_body,
)

SLOW_IN_FLIGHT = 256


def relaying(pipe: Pipeline) -> Pipeline:
    """An appointment to copy events from, and the relay running."""
    book_one(pipe)
    pipe.procs.moncreneau("relay")
    return pipe


def workers_listening(pipe: Pipeline, count: int) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    wait_until(lambda: client.scard(f"rq:workers:{pipe.queue}") >= count, 60, f"{count} workers up")


def p2(run: Run) -> None:
    """P2, the 1-to-2 workers scaling and the receiver's own ceiling, in one pipeline."""
    events = run.size(6000, 2500)
    seconds = run.size(4, 2)
    with receiver() as rec, pipeline() as pipe:
        pipe.subscribe(rec.url("fast", "p2"))
        relaying(pipe)
        drain(pipe, rec, "fast", 500)  # warm the database and Redis
        body, headers = sample_body(pipe)
        raw_url = rec.url("fast", "raw")
        ones, twos, raws, ceilings = [], [], [], []
        for _ in range(run.rounds):
            ones.append(drain(pipe, rec, "fast", events).rate)
            twos.append(drain(pipe, rec, "fast", events, workers=2).rate)
            raws.append(raw_rate(raw_url, body, headers, seconds))
            ceilings.append(receiver_ceiling(raw_url, body, headers, seconds))
    ratio = Spread.of([o / r for o, r in zip(ones, raws, strict=True)])
    run.add(
        Row(
            "P2",
            "signed deliveries/s of one worker process, fast receiver",
            Spread.of(ones).show(0, "/s"),
            Spread.of(raws).show(0, "/s") + " raw urllib3 loop",
            ratio,
            "≥ 0.5",
            ratio.median >= 0.5,
            f"P2: {events} deliveries to one endpoint created first (relay running, no "
            "worker), then one fresh `moncreneau worker` started; rate = deliveries between "
            "the first and the last arrival stamped by the receiver, divided by that span. "
            f"Baseline: one thread POSTing the same {len(body)}-byte body with the same "
            "headers over one pooled urllib3 connection for "
            f"{seconds}s (no signing, no database).",
        )
    )
    scaling = Spread.of([t / o for t, o in zip(twos, ones, strict=True)])
    run.add(
        Row(
            "S1",
            "scaling: deliveries/s of 2 worker processes over 1 (2 cores)",
            Spread.of(twos).show(0, "/s"),
            Spread.of(ones).show(0, "/s") + " 1 worker",
            scaling,
            "figure",
            None,
            "S1: as P2, with two worker processes draining the same backlog; the relay, "
            "PostgreSQL, Redis and the receiver share the same 2 cores.",
        )
    )
    run.add(
        Row(
            "R0",
            "the fast receiver answering two raw loops",
            Spread.of(ceilings).show(0, " req/s"),
            measured="R0: two raw urllib3 loops (as P2's baseline) in two processes at once "
            "against benchmarks/receiver.py: a lower bound of what it answers, since each "
            "loop has one request in flight and the clients share the 2 cores with it; "
            "workers keep many in flight and may go past it.",
        )
    )


def p3(run: Run) -> None:
    events = run.size(8000, 3000)
    env = {
        "MONCRENEAU_WORKER_CONCURRENCY": str(SLOW_IN_FLIGHT),
        "MONCRENEAU_ENDPOINT_CONCURRENCY": str(SLOW_IN_FLIGHT),
    }
    ceiling = SLOW_IN_FLIGHT / 0.1
    with receiver() as rec, pipeline(env=env) as pipe:
        pipe.subscribe(rec.url("slow", "p3"))
        relaying(pipe)
        rates = [drain(pipe, rec, "slow", events).rate for _ in range(run.rounds)]
    ratio = Spread.of([r / ceiling for r in rates])
    run.add(
        Row(
            "P3",
            "deliveries/s of one worker to a receiver answering in 100 ms",
            Spread.of(rates).show(0, "/s"),
            f"{ceiling:.0f}/s ({SLOW_IN_FLIGHT} in flight ÷ 0.1 s)",
            ratio,
            "≥ 0.8",
            ratio.median >= 0.8,
            f"P3: as P2 with {events} deliveries to one endpoint that answers after 100 ms, "
            f"MONCRENEAU_WORKER_CONCURRENCY and MONCRENEAU_ENDPOINT_CONCURRENCY at "
            f"{SLOW_IN_FLIGHT}.",
        )
    )


def _enable(pipe: Pipeline, ids: list[int]) -> None:
    pipe.sql("UPDATE webhook_subscriptions SET enabled = (id = ANY(:ids))", ids=ids)


def p5(run: Run) -> None:
    events = run.size(1000, 400)
    with receiver() as rec, pipeline() as pipe:
        healthy = [pipe.subscribe(rec.url("fast", f"p5-{n}")) for n in range(10)]
        faulty = [
            *healthy[:8],
            pipe.subscribe(rec.url("fail", "p5")),
            pipe.subscribe(rec.url("hang", "p5")),
        ]
        relaying(pipe)
        base: list[float] = []
        hurt: list[float] = []
        for _ in range(run.rounds):
            _enable(pipe, healthy)
            base.append(_drain_with_kill(pipe, rec, events, 10, 10))
            _enable(pipe, faulty)
            hurt.append(_drain_with_kill(pipe, rec, events, 10, 8))
    ratio = Spread.of([h / b for h, b in zip(hurt, base, strict=True)])
    run.add(
        Row(
            "P5",
            "deliveries/s to healthy endpoints while 2 of 10 fail (500) or hang",
            Spread.of(hurt).show(0, "/s"),
            Spread.of(base).show(0, "/s") + " all 10 healthy",
            ratio,
            "≥ 0.9",
            ratio.median >= 0.9,
            f"P5: {events} events to 10 subscriptions ({events * 10} deliveries), created "
            "first, then drained by 2 worker processes (relay and its sweeper running, "
            "default retry schedule and 10 s timeout). Figure: deliveries/s received by the 8 "
            "healthy endpoints while one answers 500 and one never answers; baseline: the "
            "same with all 10 healthy. Failing deliveries from earlier rounds keep being "
            "retried in later ones.",
        )
    )


def _drain_with_kill(
    pipe: Pipeline, rec: Receiver, events: int, fanout: int, healthy: int
) -> float:
    """Deliveries/s to the fast endpoints, through a backlog drained by 2 workers."""
    rec.reset()
    prepare_backlog(pipe, events, fanout)
    started = [pipe.procs.moncreneau("worker") for _ in range(2)]
    try:
        rec.wait_for("fast", events * healthy, 300)
    finally:
        # A graceful stop would wait out the hanging requests: they are not measured.
        for worker in started:
            pipe.procs.kill(worker)
    return arrival_span(rec, "fast").rate


def p7(run: Run) -> None:
    fanout = 1000
    with receiver() as rec, pipeline() as pipe:
        single = pipe.subscribe(rec.url("fast", "p7-one"))
        many = pipe.subscribe(rec.url("trace", "p7-0"))
        # The other 999 as copies of one created through the API (same secret, own URLs).
        pipe.sql(
            "INSERT INTO webhook_subscriptions (organization_id, url, events, description, "
            "version, payload, enabled, secret, created_at, updated_at) "
            "SELECT organization_id, replace(url, '/p7-0', '/p7-' || g), events, description, "
            "version, payload, enabled, secret, created_at, updated_at "
            "FROM webhook_subscriptions, generate_series(1, :n) AS g WHERE id = :id",
            n=fanout - 1,
            id=many,
        )
        fan_ids = [
            int(i)
            for i in pipe.sql(
                "SELECT array_agg(id) FROM webhook_subscriptions WHERE id <> :id", id=single
            )
        ]
        relaying(pipe)
        times: list[float] = []
        costs: list[float] = []
        # the same time split: until the first arrival, then the span to the last
        firsts: list[float] = []
        spans: list[float] = []
        for _ in range(run.rounds):
            _enable(pipe, [single])
            costs.append(fanout / drain(pipe, rec, "fast", fanout).rate)
            _enable(pipe, fan_ids)
            rec.reset()
            worker = pipe.procs.moncreneau("worker")
            workers_listening(pipe, 1)
            committed = time.time()
            pipe.append_events(1)
            rec.wait_for("trace", fanout, 120)
            stamps = [a[0] for a in rec.arrivals()]
            times.append(max(stamps) - committed)
            firsts.append(min(stamps) - committed)
            spans.append(max(stamps) - min(stamps))
            pipe.procs.stop(worker)
    ratio = Spread.of([t / c for t, c in zip(times, costs, strict=True)])
    span_ratio = Spread.of([s / c for s, c in zip(spans, costs, strict=True)])
    run.add(
        Row(
            "P7",
            "fan-out: one event to 1,000 subscriptions, until all received",
            f"{Spread.of(times).show(2, ' s')}: first arrival after "
            f"{Spread.of([f * 1000 for f in firsts]).show(0, ' ms')}, then 1,000 in "
            f"{span_ratio.show(2)} x the baseline",
            Spread.of(costs).show(2, " s") + " (1,000 x P2 cost)",
            ratio,
            "≤ 1.2",
            ratio.median <= 1.2,
            "P7: one worker and the relay running; time from the event's commit to the "
            "1,000th arrival (distinct URLs on one receiver host). Baseline, measured in the "
            "same round: 1,000 deliveries to one endpoint drained as in P2, that is 1,000 x "
            "one delivery's cost. The figure splits into the time from the commit to the first "
            "arrival (the relay writing the first chunk, a wake-up job starting, its claim) and "
            "the span from the first arrival to the last, shown over the baseline.",
        )
    )


def _rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def m1(run: Run) -> None:
    sizes = (10_000, 50_000, 100_000) if not run.quick else (5_000, 20_000)
    fanout = 10
    peaks: dict[int, float] = {}
    samples: dict[int, list[str]] = {}
    with receiver() as rec, pipeline() as pipe:
        for n in range(fanout):
            pipe.subscribe(rec.url("fast", f"m1-{n}"))
        relaying(pipe)
        for size in sizes:
            rec.reset()
            prepare_backlog(pipe, size // fanout, fanout)
            worker = pipe.procs.moncreneau("worker")
            marks = {int(size * f) for f in (0.75, 0.5, 0.25, 0.0)}
            notes: list[str] = []
            peak = 0
            while True:
                received = rec.counts().get("fast", 0)
                rss, hwm = _rss_kb(worker.pid)
                peak = max(peak, hwm)
                remaining = size - received
                for mark in sorted(marks, reverse=True):
                    if remaining <= mark:
                        notes.append(f"{remaining} left: {rss / 1024:.0f} MB")
                        marks.discard(mark)
                if remaining <= 0:
                    break
                time.sleep(0.1)
            peaks[size] = peak / 1024
            samples[size] = notes
            pipe.procs.stop(worker)
    largest = max(sizes)
    flat = peaks[largest] / peaks[min(sizes)]
    run.add(
        Row(
            "M1",
            f"peak RSS of one worker through a backlog of {largest:,} deliveries",
            f"{peaks[largest]:.0f} MB",
            target="≤ 250 MB, flat",
            met=peaks[largest] <= 250 and flat <= 1.2,
            measured="M1: a fresh worker drains a backlog created first (10 subscriptions on "
            "the fast receiver), its /proc VmRSS sampled every 0.1 s and VmHWM read at the "
            "end; peak by backlog: "
            + "; ".join(
                f"{size:,}: {peaks[size]:.0f} MB ({', '.join(samples[size])})" for size in sizes
            )
            + f". Largest over smallest backlog: {flat:.2f}x.",
        )
    )
