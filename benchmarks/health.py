"""`python -m benchmarks.health [--rows N]`: GET /webhooks/{id} with a million deliveries behind.

Fills a throwaway PostgreSQL database with N deliveries and one attempt each for one webhook
(spread over 30 days, then all within the last day, the worst case for the 24-hour counts),
and prints how long the API takes to answer the webhook with its health, beside a webhook
with no deliveries at all.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from sqlalchemy import text

from benchmarks.harness import SECRET_KEY, create_database, drop_database, log, percentile
from moncreneau.app import create_app
from moncreneau.auth import keys
from moncreneau.config import Settings
from moncreneau.db import make_engine, make_session_factory
from moncreneau.ops.migrate import upgrade

# 1 attempt in 20 fails; 1 delivery in 50 still waits.
FILL = [
    "INSERT INTO deliveries (id, organization_id, subscription_id, event_position, event_id, "
    "event_type, payload_version, body, status, attempts, attempt_budget, next_attempt_at, "
    "last_status_code, last_error, created_at, updated_at) "
    "SELECT 'msg_' || md5(:tag || g::text), :org, :sub, g, 'evt_' || md5(:tag || g::text), "
    "'appointment.created', '2.0', '{}', "
    "CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'succeeded' END, 1, 10, "
    "CASE WHEN g % 50 = 0 THEN now() + interval '1 hour' END, "
    "CASE WHEN g % 20 = 0 THEN 502 ELSE 200 END, "
    "CASE WHEN g % 20 = 0 THEN 'HTTP 502' END, "
    "now() - CAST(:span AS interval) * (g::float / :n), "
    "now() - CAST(:span AS interval) * (g::float / :n) "
    "FROM generate_series(1, :n) AS g",
    "INSERT INTO delivery_attempts (delivery_seq, subscription_id, number, started_at, "
    "duration_ms, status_code, error) "
    "SELECT seq, subscription_id, 1, created_at, 30, last_status_code, last_error "
    "FROM deliveries WHERE subscription_id = :sub",
]


def _timed(client: Any, key: str, webhook_id: int, calls: int) -> list[float]:
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        response = client.get(f"/api/v1/webhooks/{webhook_id}", headers={"X-API-Key": key})
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.json
    return timings


def _show(name: str, timings: list[float]) -> None:
    log(
        f"   {name:<44} median {statistics.median(timings):6.2f} ms   "
        f"p95 {percentile(timings, 95):6.2f} ms   max {max(timings):6.2f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.health", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="deliveries [1,000,000]")
    parser.add_argument("--calls", type=int, default=200, help="GETs timed per case [200]")
    args = parser.parse_args(argv)
    url = create_database("bench_health")
    try:
        engine = make_engine(url)
        upgrade(engine)
        app = create_app(
            Settings(
                database_url=url,
                secret_key=SECRET_KEY,
                rate_limit="",
                allow_private_urls=True,
                log_level="WARNING",
            )
        )
        with make_session_factory(engine)() as db:
            org = keys.create_organization(db, "Benchmark")
            db.commit()
        client = app.test_client()
        key = org["apiKey"]

        def webhook() -> int:
            made = client.post(
                "/api/v1/webhooks",
                json={"url": "http://127.0.0.1:9/hook", "events": ["*"]},
                headers={"X-API-Key": key},
            )
            created: int = made.json["id"]
            return created

        empty, spread, recent = webhook(), webhook(), webhook()
        for sub, span, tag in ((spread, "30 days", "s"), (recent, "23 hours", "r")):
            started = time.monotonic()
            with engine.begin() as conn:
                for statement in FILL:
                    conn.execute(
                        text(statement),
                        {"org": org["id"], "sub": sub, "n": args.rows, "tag": tag, "span": span},
                    )
            log(
                f"   {args.rows:,} deliveries and attempts over {span} stored in "
                f"{time.monotonic() - started:.0f}s"
            )
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
        health = client.get(f"/api/v1/webhooks/{recent}", headers={"X-API-Key": key}).json
        log(f"   health of the busiest: {health['health']}")
        _timed(client, key, empty, 20)  # warm up
        _show("no deliveries", _timed(client, key, empty, args.calls))
        _show(f"{args.rows:,} deliveries over 30 days", _timed(client, key, spread, args.calls))
        _show(f"{args.rows:,} deliveries in the last day", _timed(client, key, recent, args.calls))
        app.extensions["moncreneau"].sessions.kw["bind"].dispose()
        engine.dispose()
    finally:
        drop_database(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
