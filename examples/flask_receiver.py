"""A MonCréneau webhook receiver: verify, answer at once, process each event once on RQ.

The view checks the signatures with `moncreneau.receiver.verify`, queues the event on Redis
and answers 200 (401 for a bad signature, 400 for a signed body that is not an event); an
RQ worker runs `process_event`, which records each event once in a SQLite file even when
MonCréneau delivers it again. From the repository root, with Redis running:

    export MONCRENEAU_WEBHOOK_SECRET='whsec_...'   # during a rotation: 'whsec_new,whsec_old'
    export REDIS_URL=redis://127.0.0.1:6379/0      # the default
    export RECEIVER_DATABASE=receiver.db           # the default
    .venv/bin/flask --app examples.flask_receiver run --port 8001
    .venv/bin/rq worker --with-scheduler --serializer json --url "$REDIS_URL" moncreneau-webhooks

then subscribe `http://127.0.0.1:8001/webhooks/moncreneau` (allow private URLs on a local
MonCréneau). `--with-scheduler` lets RQ run the retries it schedules for a failed job.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from dataclasses import dataclass
from typing import Any

from flask import Flask, request
from redis import Redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from moncreneau.receiver import Deduplicator, SqlStore, WebhookVerificationError, verify

log = logging.getLogger(__name__)

QUEUE = "moncreneau-webhooks"
# Far more than any MonCréneau event; a bigger body is refused with 413 before it is read.
MAX_BODY = 1_048_576
# RQ's own retries for a job that raised, on top of MonCréneau's redeliveries.
RETRY = Retry(max=5, interval=[10, 30, 60, 300, 900])


@dataclass(frozen=True)
class Config:
    """Settings from the environment, read once per process."""

    secrets: tuple[str, ...]
    redis_url: str = "redis://127.0.0.1:6379/0"
    database: str = "receiver.db"
    queue: str = QUEUE

    @classmethod
    def from_env(cls) -> Config:
        raw = os.environ.get("MONCRENEAU_WEBHOOK_SECRET", "")
        return cls(
            secrets=tuple(part.strip() for part in raw.split(",") if part.strip()),
            redis_url=os.environ.get("REDIS_URL", cls.redis_url),
            database=os.environ.get("RECEIVER_DATABASE", cls.database),
        )


def create_app(config: Config | None = None) -> Flask:
    config = config or Config.from_env()
    if not config.secrets:
        raise RuntimeError("set MONCRENEAU_WEBHOOK_SECRET to the endpoint's whsec_... secret")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    queue = Queue(
        config.queue, connection=Redis.from_url(config.redis_url), serializer=JSONSerializer
    )
    app.extensions["receiver"] = queue

    @app.post("/webhooks/moncreneau")
    def receive() -> tuple[dict[str, str], int]:
        try:
            event = verify(request.get_data(), dict(request.headers), config.secrets)
        except WebhookVerificationError as error:
            log.warning("refused a delivery: %s", error)
            return {"error": str(error)}, 400 if error.bad_payload else 401
        # If Redis is down this raises and the answer is a 500, so MonCréneau delivers again
        # later: a 200 must only go out once the event is safely queued.
        queue.enqueue(
            process_event,
            event,
            retry=RETRY,
            description=f"{event['type']} {event['id']}",
        )
        return {"received": event["id"]}, 200

    return app


def process_event(event: dict[str, Any]) -> bool:
    """The RQ job: handle one event unless it was already; True if it was handled now."""
    connection = sqlite3.connect(Config.from_env().database, timeout=30)
    try:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS appointment_changes ("
            " event_id TEXT NOT NULL, event_type TEXT NOT NULL,"
            " appointment_id INTEGER, status TEXT, body TEXT NOT NULL)"
        )
        once = Deduplicator(SqlStore(connection))
        return once.process(event, lambda e: record(connection, e))
    finally:
        connection.close()


def record(connection: sqlite3.Connection, event: dict[str, Any]) -> None:
    """Your business logic; here, one row per event, committed with its `webhook_events` row."""
    data = event.get("data")
    appointment = data.get("object") if isinstance(data, dict) else None
    appointment = appointment if isinstance(appointment, dict) else {}
    connection.execute(
        "INSERT INTO appointment_changes (event_id, event_type, appointment_id, status, body)"
        " VALUES (?, ?, ?, ?, ?)",
        (
            event["id"],
            event["type"],
            appointment.get("id"),
            appointment.get("status"),
            json.dumps(event),
        ),
    )
    log.info("recorded %s %s", event["type"], event["id"])
