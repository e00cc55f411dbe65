"""P9: bookings per second when every commit is slow, against the same load with fast commits."""

from __future__ import annotations

from benchmarks.api import API_WORKERS, booking_target
from benchmarks.harness import Pipeline, Spread, pipeline
from benchmarks.load import PROCESSES, THREADS, Load, post_load
from benchmarks.results import Row, Run

# Simulated commit latencies, in milliseconds; 0 is the baseline.
DELAYS = (0, 5, 10)


def slow_commits(pipe: Pipeline, milliseconds: int) -> None:
    """Make each commit that appended an event wait `milliseconds` in the database; 0 removes it.

    A deferred constraint trigger runs when the transaction commits, after every statement,
    as a flush to a cloud disk or a synchronous standby's round trip would.
    """
    pipe.sql("DROP TRIGGER IF EXISTS bench_slow_commit ON events")
    if milliseconds == 0:
        return
    pipe.sql(
        "CREATE OR REPLACE FUNCTION bench_slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_sleep({milliseconds / 1000}); RETURN NULL; END $$"
    )
    pipe.sql(
        "CREATE CONSTRAINT TRIGGER bench_slow_commit AFTER INSERT ON events "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bench_slow_commit()"
    )


def p9(run: Run) -> None:
    seconds = run.size(8, 4)
    with pipeline(API_WORKERS, departments=8) as pipe:
        target = booking_target(pipe)
        post_load(target, 1)
        loads: dict[int, list[Load]] = {delay: [] for delay in DELAYS}
        for n in range(run.rounds):
            # Alternate the order, so that no delay always gets the warmer database.
            for delay in DELAYS if n % 2 == 0 else DELAYS[::-1]:
                slow_commits(pipe, delay)
                loads[delay].append(post_load(target, seconds))
        slow_commits(pipe, 0)
    fast = loads[0]
    for delay in DELAYS[1:]:
        slow = loads[delay]
        ratio = Spread.of([s.rate / f.rate for s, f in zip(slow, fast, strict=True)])
        errors = sum(s.outcome.errors for s in slow)
        run.add(
            Row(
                f"P9 {delay} ms",
                f"bookings/s with {PROCESSES * THREADS} clients, each commit {delay} ms slower",
                Spread.of([s.rate for s in slow]).show(0, " req/s"),
                Spread.of([f.rate for f in fast]).show(0, " req/s") + " same load, no delay",
                ratio,
                "≥ 0.8" if delay == 10 else "figure",
                ratio.median >= 0.8 if delay == 10 else None,
                f"P9 {delay} ms: closed loop of {PROCESSES} client processes x {THREADS} "
                f"keep-alive threads for {seconds}s per round against `moncreneau api` "
                f"({API_WORKERS} workers) on PostgreSQL, bookings spread over 8 departments at "
                "random slots; a deferred constraint trigger on the event table sleeps "
                f"{delay} ms at each commit that appended an event (none in the baseline), as "
                "a cloud disk's flush or a synchronous standby would; the rounds of each delay "
                f"and of the baseline alternate in order; {errors} non-2xx.",
            )
        )
