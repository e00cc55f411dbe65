"""P2t: one worker through a backlog that bookings made one at a time, across organizations."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import cycle

from benchmarks.fairness import _book
from benchmarks.harness import Pipeline, Receiver, Spread, pipeline, receiver, wait_until
from benchmarks.results import Row, Run
from benchmarks.sending import arrival_span, raw_rate, sample_body
from moncreneau.integrator.listen import api_call

ORGANIZATIONS = 10
CLIENTS = 4


def _tenants(pipe: Pipeline, rec: Receiver, hooks: int) -> list[tuple[str, int]]:
    """Ten organizations, each with a department and `hooks` webhooks to the fast endpoint."""
    tenants = [(pipe.key, pipe.departments[0])]
    tenants += [pipe.add_organization(f"Org {n}") for n in range(1, ORGANIZATIONS)]
    for n, (key, _) in enumerate(tenants):
        for k in range(hooks):
            body = {"url": rec.url("fast", f"o{n}-{k}"), "events": ["*"]}
            api_call(pipe.api, key, "POST", "/webhooks", body)
    return tenants


def _round(
    pipe: Pipeline, rec: Receiver, tenants: list[tuple[str, int]], bookings: int
) -> tuple[float, int]:
    """Deliveries/s of one fresh worker, and how many jobs the bookings left in Redis."""
    rec.reset()
    before = pipe.deliveries()
    hooks = int(pipe.sql("SELECT count(*) FROM webhook_subscriptions"))
    total = bookings * hooks // len(tenants)
    turns = cycle(tenants)
    work = [next(turns) for _ in range(bookings)]
    # Each request is one booking, as traffic comes: the relay wakes for a few events at most.
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda t: _book(pipe.api, t[0], t[1], "Traffic"), work))
    wait_until(lambda: pipe.deliveries() >= before + total, 600, f"{total} deliveries", 0.2)
    jobs = pipe.queued_jobs()
    worker = pipe.procs.moncreneau("worker")
    try:
        rec.wait_for("fast", total, 600)
    finally:
        pipe.procs.stop(worker)
    return arrival_span(rec, "fast").rate, jobs


def _shape(run: Run, hooks: int, bookings: int, seconds: float) -> None:
    with receiver() as rec, pipeline(2) as pipe:
        tenants = _tenants(pipe, rec, hooks)
        pipe.procs.moncreneau("relay")
        # warm the database, Redis and the processes
        _book(pipe.api, pipe.key, pipe.departments[0], "Template")
        _round(pipe, rec, tenants, 10 * ORGANIZATIONS)
        body, headers = sample_body(pipe)
        rates, raws, jobs = [], [], []
        for _ in range(run.rounds):
            rate, queued = _round(pipe, rec, tenants, bookings)
            rates.append(rate)
            jobs.append(queued)
            raws.append(raw_rate(rec.url("fast", "raw"), body, headers, seconds))
    ratio = Spread.of([r / b for r, b in zip(rates, raws, strict=True)])
    per = "one webhook" if hooks == 1 else f"{hooks} webhooks"
    run.add(
        Row(
            "P2t" if hooks == 1 else f"P2t x{hooks}",
            f"signed deliveries/s of one worker, backlog of bookings made one at a time "
            f"({ORGANIZATIONS} organizations, {per} each)",
            Spread.of(rates).show(0, "/s"),
            Spread.of(raws).show(0, "/s") + " raw urllib3 loop",
            ratio,
            "≥ 0.5",
            ratio.median >= 0.5,
            f"P2t: API (gunicorn 2 workers) and relay running, no worker; {bookings} bookings "
            f"sent one per request by {CLIENTS} clients, spread over {ORGANIZATIONS} "
            f"organizations with {per} each to the fast receiver ({bookings * hooks} "
            f"deliveries); they left {Spread.of(jobs).show(0)} job(s) in Redis. Then one fresh "
            "`moncreneau worker`; rate between the first and the last arrival stamp. Baseline: "
            f"the raw pooled urllib3 loop of P2 for {seconds}s in the same round.",
        )
    )


def p2t(run: Run) -> None:
    bookings = run.size(10_000, 2000)
    seconds = run.size(4, 2)
    _shape(run, 1, bookings, seconds)
    _shape(run, 3, bookings, seconds)
