"""P1: bookings per second through the API against a bare insert under the same gunicorn."""

from __future__ import annotations

import sys

from benchmarks import bare
from benchmarks.harness import Pipeline, Spread, answers, pipeline
from benchmarks.load import PROCESSES, THREADS, Load, Target, post_load
from benchmarks.results import Row, Run
from tests.services import free_port, wait_until

# What `moncreneau api` defaults to on 2 cores (2 x cores + 1).
API_WORKERS = 5


def start_bare(pipe: Pipeline, workers: int) -> str:
    """The bare app under gunicorn with the options of moncreneau/ops/server.py."""
    bare.create_table(pipe.database_url)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "--access-logfile",
        "-",
        "--timeout",
        "30",
        "--graceful-timeout",
        "10",
        "benchmarks.bare:create_app()",
    ]
    pipe.procs.start(argv, "bare")
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(f"{base}/rows"), 60, "the bare app answering")
    return base


def booking_target(pipe: Pipeline) -> Target:
    return Target(
        f"{pipe.api}/api/v1/appointments", {"X-API-Key": pipe.key}, tuple(pipe.departments)
    )


def p1(run: Run) -> None:
    seconds = run.size(8, 4)
    targets = {"PostgreSQL": 0.8, "SQLite": 0.75}
    for backend, target in targets.items():
        with pipeline(API_WORKERS, departments=8, sqlite=backend == "SQLite") as pipe:
            app = booking_target(pipe)
            baseline = Target(start_bare(pipe, API_WORKERS) + "/rows", {})
            post_load(app, 1)
            post_load(baseline, 1)
            apps: list[Load] = []
            bares: list[Load] = []
            for n in range(run.rounds):
                # Alternate which goes first, so neither always gets the warmer database.
                pair = (app, baseline) if n % 2 == 0 else (baseline, app)
                first, second = (post_load(t, seconds) for t in pair)
                a, b = (first, second) if n % 2 == 0 else (second, first)
                apps.append(a)
                bares.append(b)
            if backend == "PostgreSQL":
                run.latencies["P1 API POST response, closed loop (PostgreSQL)"] = [
                    s * 1000 for s in apps[-1].outcome.latencies
                ]
            ratio = Spread.of([a.rate / b.rate for a, b in zip(apps, bares, strict=True)])
            errors = sum(a.outcome.errors for a in apps)
            cpu = Spread.of([a.client_cpu for a in apps])
            run.add(
                Row(
                    f"P1 {backend}",
                    f"POST /api/v1/appointments per second, gunicorn {API_WORKERS} workers "
                    f"x 4 threads, {backend}",
                    Spread.of([a.rate for a in apps]).show(0, " req/s"),
                    Spread.of([b.rate for b in bares]).show(0, " req/s") + " bare insert",
                    ratio,
                    f"≥ {target}",
                    ratio.median >= target,
                    f"{backend}: closed loop of {PROCESSES} client processes x {THREADS} "
                    f"keep-alive threads for {seconds}s per round (the clients used "
                    f"{cpu.show(2)} cores of the 2), bookings spread over 8 departments at "
                    f"random slots; API alone (no relay or worker running); {errors} non-2xx. "
                    "Baseline: benchmarks/bare.py, a Flask view inserting one row with "
                    "SQLAlchemy Core, under the same gunicorn options and database.",
                )
            )
