"""Prometheus metrics: what each process counts, and the backlog read from the database.

Every metric a process counts has labels, so no value (and, in multiprocess mode, no file)
exists before the first one is counted: importing this module does no I/O.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from moncreneau import clock
from moncreneau.db import snapshot_horizon
from moncreneau.delivery.store import OPEN
from moncreneau.models import Delivery, EventRecord, RelayState
from moncreneau.outbox import store

log = logging.getLogger(__name__)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

HTTP_REQUESTS = Counter(
    "moncreneau_http_requests",
    "API requests answered, by route template and status.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "moncreneau_http_request_duration_seconds",
    "Time to answer an API request.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DELIVERY_ATTEMPTS = Counter(
    "moncreneau_delivery_attempts",
    "Delivery attempts by outcome: succeeded, failed (will be retried) or dead.",
    ["outcome"],
)
ATTEMPT_SECONDS = Histogram(
    "moncreneau_delivery_attempt_duration_seconds",
    "Time from connecting to the receiver to its answer (or the timeout), by outcome.",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RELAYED_EVENTS = Counter(
    "moncreneau_relayed_events",
    "Events the relay has read from the log, and the deliveries it created for them.",
    ["what"],
)


def use_multiprocess_dir(path: Path) -> None:
    """Count in files under `path`, so that /metrics adds up every process that shares it."""
    os.environ[MULTIPROCESS_ENV] = str(path)
    # The value class is chosen when prometheus_client is imported; no value exists yet.
    values.ValueClass = values.get_value_class()


def process_registry() -> CollectorRegistry:
    """This process's counts, or all processes' when they share a multiprocess folder."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Serve this process's counts on `host:port` (the relay and the workers)."""
    start_http_server(port, addr=host, registry=process_registry())


class BacklogCollector(Collector):
    """What the database says at scrape time: the log's length and what is still to deliver."""

    def __init__(
        self, sessions: sessionmaker[Session], queued_jobs: Callable[[], int] | None
    ) -> None:
        self._sessions = sessions
        self._queued_jobs = queued_jobs

    def collect(self) -> Iterator[Metric]:
        try:
            with self._sessions() as db:
                appended = db.scalar(select(func.max(EventRecord.position))) or 0
                state = db.execute(select(RelayState.txid, RelayState.position)).first()
                relayed = store.LogPosition.of(state) if state else store.START
                unrelayed = db.scalar(
                    select(func.count()).select_from(EventRecord).where(store.after(relayed))
                )
                held_back, oldest_held = db.execute(
                    select(func.count(), func.min(EventRecord.created_at)).where(
                        EventRecord.txid >= snapshot_horizon()
                    )
                ).one()
                waiting = dict(
                    db.execute(
                        select(Delivery.status, func.count())
                        .where(Delivery.status.in_(OPEN))
                        .group_by(Delivery.status)
                    ).all()
                )
                oldest = _oldest_undelivered(db, relayed)
        except SQLAlchemyError as error:
            # The processes' own counts still matter most when the database is away.
            log.warning("backlog metrics unavailable: %s", error.__class__.__name__)
            yield GaugeMetricFamily(
                "moncreneau_database_up", "Whether the database answered this scrape.", value=0
            )
            return
        yield GaugeMetricFamily(
            "moncreneau_database_up", "Whether the database answered this scrape.", value=1
        )
        yield CounterMetricFamily(
            "moncreneau_events_appended", "Events appended to the log.", value=appended
        )
        yield GaugeMetricFamily(
            "moncreneau_relay_lag_events",
            "Events appended that the relay has not yet turned into deliveries.",
            value=unrelayed or 0,
        )
        yield GaugeMetricFamily(
            "moncreneau_events_held_back",
            "Committed events no reader can take yet: an older transaction is still open.",
            value=held_back,
        )
        yield GaugeMetricFamily(
            "moncreneau_event_log_lag_seconds",
            "How far readers of the log lag behind its commits: the age of the oldest event "
            "held back by an older transaction still open; 0 when none.",
            value=(clock.now() - oldest_held).total_seconds() if oldest_held else 0.0,
        )
        deliveries = GaugeMetricFamily(
            "moncreneau_deliveries_waiting",
            "Deliveries not yet delivered: pending (never tried) or failed (to be retried).",
            labels=["status"],
        )
        for status in OPEN:
            deliveries.add_metric([status], waiting.get(status, 0))
        yield deliveries
        yield GaugeMetricFamily(
            "moncreneau_oldest_undelivered_event_age_seconds",
            "Age of the oldest event with a delivery still to make; 0 when none.",
            value=(clock.now() - oldest).total_seconds() if oldest else 0.0,
        )
        if self._queued_jobs is not None:
            try:
                jobs = self._queued_jobs()
            except Exception as error:
                log.warning("queue depth unavailable: %s", error.__class__.__name__)
            else:
                yield GaugeMetricFamily(
                    "moncreneau_queued_jobs", "Delivery jobs waiting in the queue.", value=jobs
                )


def _oldest_undelivered(db: Session, relayed: store.LogPosition) -> datetime | None:
    unrelayed = db.scalar(
        select(EventRecord.created_at).where(store.after(relayed)).order_by(*store.ORDER).limit(1)
    )
    first_open = (
        select(func.min(Delivery.event_position)).where(Delivery.status.in_(OPEN)).scalar_subquery()
    )
    undelivered = db.scalar(
        select(EventRecord.created_at).where(EventRecord.position == first_open)
    )
    found = [t for t in (unrelayed, undelivered) if t is not None]
    return min(found) if found else None


def exposition(backlog: BacklogCollector) -> bytes:
    """The text /metrics answers: the processes' counts, then the backlog."""
    extra = CollectorRegistry(auto_describe=False)
    extra.register(backlog)
    return generate_latest(process_registry()) + generate_latest(extra)
