"""P4, P4r and the embedded mode: paced bookings and the time their deliveries arrive."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
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
    log,
    percentile,
    pipeline,
    receiver,
    wait_until,
)
from benchmarks.load import PROCESSES, THREADS, Load, Target, post_load
from benchmarks.results import Row, Run
from moncreneau.integrator.listen import api_call


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
    receipts = Receipts.of(rec, paced, 60)
    if receipts.missing:
        raise TimeoutError(f"{receipts.missing} paced bookings' deliveries not received in 60 s")
    return full.rate, receipts.latencies


@dataclass(frozen=True)
class Receipts:
    """When a `keep_ids` load's bookings were delivered, in ms, and how many never were.

    `latencies`: the receiver's arrival stamp of the booking's `appointment.created` minus
    the client's time.time() on reading its 2xx (one machine, one clock). The booking
    committed before that 2xx was read and after its request was sent, so `latencies` runs
    from after the commit and `from_sending`, from the sending, from before it.
    """

    latencies: list[float]
    from_sending: list[float]
    missing: int

    @classmethod
    def of(cls, rec: Receiver, paced: Load, patience: float) -> Receipts:
        answered = paced.outcome.answered
        arrived = rec.wait_for_receipts({i for _at, i, _took in answered}, patience)
        delivered = [(arrived[i] - at, took) for at, i, took in answered if i in arrived]
        return cls(
            [after * 1000 for after, _took in delivered],
            [(after + took) * 1000 for after, took in delivered],
            len(answered) - len(delivered),
        )


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


# P4r: the first rate asked (bookings/s), the factor between steps, the p99 a step must keep.
STEP_FIRST = 20.0
STEP_FACTOR = 1.5
HELD_P99_MS = 100.0
ORGANIZATIONS = 10
# How long a step's deliveries are awaited after its last booking before the step counts
# as not held, and how long a step that was not held gets to drain before the next one.
STEP_PATIENCE = 20.0
DRAIN_PATIENCE = 60.0
# Steps below the first one tried when even the first is not held: down to about 2/s.
LOWEST_STEP = -6


@dataclass(frozen=True)
class Step:
    """One paced load of a P4r search and what its deliveries did."""

    rate: float
    booked: int
    errors: int
    # bookings answered per second, between the first and the last 2xx
    answered_rate: float
    receipts: Receipts
    api_p99: float
    deliveries_per_second: float
    worker_cores: float

    @property
    def p50(self) -> float:
        return _percentile(self.receipts.latencies, 50)

    @property
    def p99(self) -> float:
        return _percentile(self.receipts.latencies, 99)

    @property
    def p99_from_sending(self) -> float:
        return _percentile(self.receipts.from_sending, 99)

    def shortfall(self) -> str:
        """Why the step was not held, or "" when it was."""
        reasons = []
        if self.errors:
            reasons.append(f"{self.errors} bookings refused")
        if self.answered_rate < 0.9 * self.rate:
            reasons.append(f"the API answered {self.answered_rate:.0f}/s")
        if self.receipts.missing:
            reasons.append(
                f"{self.receipts.missing} of {self.booked} not received in {STEP_PATIENCE:.0f} s"
            )
        if self.p99 > HELD_P99_MS:
            reasons.append(f"p99 {self.p99:.0f} ms")
        return ", ".join(reasons)

    def show(self) -> str:
        return (
            f"{self.rate:.0f}/s: {self.booked} booked, p50 {self.p50:.1f} ms, "
            f"p99 {self.p99:.1f} ms ({self.p99_from_sending:.1f} ms from sending), "
            f"API p99 {self.api_p99:.1f} ms, "
            f"{self.deliveries_per_second:.0f} deliveries/s, worker {self.worker_cores:.2f} cores"
            + (f"; not held: {self.shortfall()}" if self.shortfall() else "; held")
        )


def _percentile(values: list[float], q: float) -> float:
    return percentile(values, q) if values else float("inf")


def step_search(
    measure: Callable[[int], Step | None], first: int, lowest: int = LOWEST_STEP
) -> tuple[Step | None, Step | None]:
    """The highest step held and the next one up, steps numbered from `first` on.

    Up from `first` while steps are held; if `first` is not, down until one is or `lowest`
    was tried. `measure(k)` runs step k, or returns None past the highest step there is.
    """
    step = measure(first)
    if step is None:
        return None, None
    if step.shortfall():
        above = step
        for k in range(first - 1, lowest - 1, -1):
            step = measure(k)
            if step is None or not step.shortfall():
                return step, above
            above = step
        return None, above
    held, k = step, first + 1
    while (step := measure(k)) is not None and not step.shortfall():
        held, k = step, k + 1
    return held, step


def _cpu_seconds(pid: int) -> float:
    """User and system CPU of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _paced_step(target: Target, rec: Receiver, worker: int, rate: float, seconds: float) -> Step:
    rec.reset()
    cpu = _cpu_seconds(worker)
    paced = post_load(target, seconds, rate=rate, keep_ids=True)
    receipts = Receipts.of(rec, paced, STEP_PATIENCE)
    cpu = _cpu_seconds(worker) - cpu
    stamps = sorted(stamp for stamp, *_ in rec.arrivals())
    answered = sorted(at for at, _id, _took in paced.outcome.answered)
    answered_span = answered[-1] - answered[0] if len(answered) > 1 else seconds
    arrival_span = stamps[-1] - stamps[0] if len(stamps) > 1 else seconds
    return Step(
        rate=rate,
        booked=paced.outcome.ok,
        errors=paced.outcome.errors,
        answered_rate=(len(answered) - 1) / answered_span if answered_span else 0.0,
        receipts=receipts,
        api_p99=percentile(paced.outcome.latencies, 99) * 1000,
        deliveries_per_second=(len(stamps) - 1) / arrival_span if arrival_span else 0.0,
        worker_cores=cpu / arrival_span if arrival_span else 0.0,
    )


def p4r(run: Run) -> None:
    seconds = run.size(6, 3)
    highest = 14  # 20 x 1.5^14 ≈ 5,800/s: well past what 2 cores answer
    with receiver() as rec, pipeline(API_WORKERS) as pipe:
        pipe.subscribe(rec.url("trace", "org0"))
        others = []
        for n in range(1, ORGANIZATIONS):
            key, department = pipe.add_organization(f"Bench {n}")
            api_call(
                pipe.api,
                key,
                "POST",
                "/webhooks",
                {"url": rec.url("trace", f"org{n}"), "events": ["*"]},
            )
            others.append(({"X-API-Key": key}, (department,)))
        target = replace(booking_target(pipe), others=tuple(others))
        pipe.procs.moncreneau("relay")
        worker = pipe.procs.moncreneau("worker").pid
        rec.reset()
        warm = post_load(target, 1, rate=STEP_FIRST, keep_ids=True)
        Receipts.of(rec, warm, DRAIN_PATIENCE)

        def measure(k: int) -> Step | None:
            if k > highest:
                return None
            step = _paced_step(target, rec, worker, STEP_FIRST * STEP_FACTOR**k, seconds)
            log(f"    {step.show()}")
            if step.receipts.missing:
                rec.wait_for("trace", step.booked, DRAIN_PATIENCE)
            return step

        searches: list[Search] = []
        first = 0
        for n in range(run.rounds):
            load = os.getloadavg()[0]
            log(f"  round {n + 1}, from {STEP_FIRST * STEP_FACTOR**first:.0f}/s, load {load:.1f}")
            held, above = step_search(measure, first)
            searches.append(Search(held, above, load))
            if held is not None and n == 0:
                # Later rounds start two steps below the first round's highest held.
                first = max(0, round(math.log(held.rate / STEP_FIRST, STEP_FACTOR)) - 2)
    _p4r_row(run, searches, seconds)


@dataclass(frozen=True)
class Search:
    """One round of P4r: its highest step held, the next one up, the load average before."""

    held: Step | None
    above: Step | None
    load: float

    def show(self) -> str:
        h, a = self.held, self.above
        return (
            f"load average {self.load:.1f} before, "
            + (f"held {h.rate:.0f}/s" if h else "none held")
            + (f", then {a.rate:.0f}/s not held ({a.shortfall()})" if a else "")
        )


def _p4r_row(run: Run, searches: list[Search], seconds: float) -> None:
    held = [s.held for s in searches if s.held is not None]
    rounds = "; ".join(f"round {n + 1}: {s.show()}" for n, s in enumerate(searches))
    if held:
        run.latencies["P4r 201-to-receipt at the highest rate held"] = held[-1].receipts.latencies
        figure = (
            f"{Spread.of([h.rate for h in held]).show(0, ' bookings/s')}; there p50 "
            f"{Spread.of([h.p50 for h in held]).show(1, ' ms')}, p99 "
            f"{Spread.of([h.p99 for h in held]).show(1, ' ms')} "
            f"({Spread.of([h.p99_from_sending for h in held]).show(1, ' ms')} from sending); "
            f"{Spread.of([h.deliveries_per_second for h in held]).show(0, ' deliveries/s')} "
            f"per worker ({Spread.of([h.worker_cores for h in held]).show(2)} of a core)"
        )
    else:
        figure = "no rate held"
    if len(held) < len(searches):
        figure += f" ({len(searches) - len(held)} of {len(searches)} searches held none)"
    run.add(
        Row(
            "P4r",
            "the highest booking rate held with p99 commit-to-receipt ≤ 100 ms, production "
            "processes, 10 organizations; deliveries/s per worker there",
            figure,
            target="figure",
            measured=f"P4r: API (gunicorn {API_WORKERS} workers), relay and 1 worker on "
            f"PostgreSQL and Redis; {ORGANIZATIONS} organizations with one webhook each to "
            "the receiver's /trace (answers 200 at once); each booking goes to one of them at "
            f"random. One search per round: bookings paced through the API ({PROCESSES} "
            f"client processes x {THREADS} keep-alive connections, open loop) for {seconds} s "
            f"at {STEP_FIRST:.0f}/s, then x {STEP_FACTOR} a step while a step is held "
            f"(every booking answered 2xx at ≥ 90% of the rate asked, every delivery received "
            f"within {STEP_PATIENCE:.0f} s of the last booking, p99 ≤ {HELD_P99_MS:.0f} ms), "
            f"or ÷ {STEP_FACTOR} a step until one is if the first is not; rounds after the "
            "first start two steps below its highest held. Figures: median (min-max) over "
            "rounds of the highest rate held and of that step's p50, p99, deliveries/s "
            "(arrivals between its first and last; one delivery per booking) and the worker's "
            "CPU over that span. Latency = the receiver's arrival stamp (time.time()) minus "
            "the client's time.time() on reading the booking's 201. The commit happens "
            "between sending the booking and reading its 201 (PostgreSQL keeps no commit "
            "timestamps here, and the event's own time has whole seconds), so that latency "
            "is a lower bound of commit-to-receipt and the same from sending the booking "
            "(shown in brackets) an upper bound; the held criterion uses the first. "
            f"{rounds}.",
        )
    )
