"""`python -m benchmarks.ordering [--rows N] [--rounds R]`: what ordering per appointment costs.

On a throwaway PostgreSQL database, in one run, alternating the cases in each round:
- writing deliveries as the relay does, with the partial index of open deliveries by
  appointment (what every delivery now pays, ordered or not) and with it dropped;
- claiming a job's worth of deliveries by id, for an unordered webhook and for an ordered
  one whose deliveries are each first of their appointment behind a backlog.
Prints medians and min-max of the rounds, and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from benchmarks.harness import create_database, drop_database, log
from moncreneau.db import make_engine, make_session_factory, write_session
from moncreneau.delivery import store
from moncreneau.ids import new_id
from moncreneau.ops.migrate import upgrade

INDEX = "ix_deliveries_open_appointment"
CREATE_INDEX = (
    f"CREATE INDEX {INDEX} ON deliveries (subscription_id, appointment_id, seq) "
    "WHERE status IN ('pending', 'failed') AND appointment_id IS NOT NULL"
)
BODY = '{"id": "evt_x", "type": "appointment.created", "data": {"object": {"id": 1}}}'


def _rows(subscription: int, count: int, start: int, appointments: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "id": new_id("msg"),
            "organization_id": 1,
            "subscription_id": subscription,
            "event_position": start + n,
            "event_id": new_id("evt"),
            "event_type": "appointment.created",
            "appointment_id": start + n % appointments,
            "payload_version": "2.0",
            "body": BODY,
            "status": store.PENDING,
            "attempts": 0,
            "attempt_budget": 10,
            "next_attempt_at": now,
            "queued_until": now + store.QUEUE_LEASE,
            "locked_until": None,
            "created_at": now,
            "updated_at": now,
        }
        for n in range(count)
    ]


def _spread(values: list[float]) -> str:
    middle = statistics.median(values)
    return f"median {middle:7.2f} ms (min {min(values):.2f}, max {max(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ordering", description=__doc__)
    parser.add_argument("--rows", type=int, default=5000, help="deliveries written a round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batch", type=int, default=100, help="deliveries claimed at once")
    args = parser.parse_args(argv)
    url = create_database("bench_ordering")
    try:
        engine = make_engine(url)
        upgrade(engine)
        sessions = make_session_factory(engine)
        with engine.begin() as conn:
            now = datetime.now(UTC)
            conn.execute(
                text("INSERT INTO organizations (id, name, created_at) VALUES (1, 'B', :now)"),
                {"now": now},
            )
            for sub, ordering in ((1, "none"), (2, "appointment")):
                conn.execute(
                    text(
                        "INSERT INTO webhook_subscriptions (id, organization_id, url, events, "
                        "version, payload, enabled, secret, ordering, created_at, updated_at) "
                        "VALUES (:id, 1, 'http://127.0.0.1:9/', '[\"*\"]', '2.0', 'full', true, "
                        "'x', :ordering, :now, :now)"
                    ),
                    {"id": sub, "ordering": ordering, "now": now},
                )
        position = 1
        writes: dict[str, list[float]] = {"with the index": [], "without it": []}
        claims: dict[str, list[float]] = {"unordered": [], "ordered": []}
        for round_ in range(args.rounds):
            cases = list(writes)
            for case in cases if round_ % 2 == 0 else cases[::-1]:
                wanted = case == "with the index"
                with engine.begin() as conn:
                    if wanted != _has_index(conn):
                        conn.exec_driver_sql(CREATE_INDEX if wanted else f"DROP INDEX {INDEX}")
                rows = _rows(1 + round_ % 2, args.rows, position, args.rows // 3)
                position += args.rows
                with write_session(sessions) as db:
                    started = time.perf_counter()
                    store.insert_ignoring_duplicates(db, rows)
                    db.commit()
                    writes[case].append((time.perf_counter() - started) * 1000)
        with engine.begin() as conn:
            if not _has_index(conn):
                conn.exec_driver_sql(CREATE_INDEX)
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
        with sessions() as db:
            # each of these is the first open delivery of its appointment
            firsts = {
                sub: list(
                    db.scalars(
                        text(
                            "SELECT DISTINCT ON (appointment_id) id FROM deliveries "
                            "WHERE subscription_id = :sub ORDER BY appointment_id, seq"
                        ),
                        {"sub": sub},
                    )
                )[: args.batch]
                for sub in (1, 2)
            }
        for round_ in range(args.rounds):
            order = [("unordered", 1), ("ordered", 2)]
            for case, sub in order if round_ % 2 == 0 else order[::-1]:
                with write_session(sessions) as db:
                    started = time.perf_counter()
                    claimed = store.claim(db, firsts[sub], datetime.now(UTC), timedelta(seconds=60))
                    claims[case].append((time.perf_counter() - started) * 1000)
                    db.rollback()
                assert len(claimed) == len(firsts[sub]), (case, len(claimed))
        log(f"writing {args.rows:,} deliveries ({args.rounds} rounds):")
        for case, values in writes.items():
            log(f"   {case:<16} {_spread(values)}")
        ratio = statistics.median(writes["with the index"]) / statistics.median(
            writes["without it"]
        )
        log(f"   ratio with/without: {ratio:.3f}")
        log(f"claiming {args.batch} deliveries by id ({args.rounds} rounds):")
        for case, values in claims.items():
            log(f"   {case:<16} {_spread(values)}")
        ratio = statistics.median(claims["ordered"]) / statistics.median(claims["unordered"])
        log(f"   ratio ordered/unordered: {ratio:.3f}")
        engine.dispose()
    finally:
        drop_database(url)
    return 0


def _has_index(conn: Any) -> bool:
    found = conn.exec_driver_sql(
        "SELECT 1 FROM pg_indexes WHERE indexname = %(name)s", {"name": INDEX}
    ).first()
    return found is not None


if __name__ == "__main__":
    raise SystemExit(main())
