"""Housekeeping beside the relay: erasures, retention and forgotten keys, in bounded batches."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from moncreneau import clock
from moncreneau.config import Settings
from moncreneau.db import write_session
from moncreneau.delivery import store as deliveries
from moncreneau.erasures import service as erasures
from moncreneau.models import IDEMPOTENCY_RETENTION, IdempotencyRecord
from moncreneau.personal import Vault

# Rows each task removes per round: a short transaction, whatever the backlog.
BATCH = 1000
# Erasure batches one round does at most before the relay gets a turn.
ERASURE_BATCHES = 8
# Payload retention and the automatic erasure look for work this often.
RETENTION_SECONDS = 60.0


def forget_idempotency_keys(db: Session, now: datetime, limit: int = BATCH) -> int:
    """Stored responses past their retention; returns how many were removed."""
    expired = select(IdempotencyRecord.id).where(
        IdempotencyRecord.created_at < now - IDEMPOTENCY_RETENTION
    )
    ids = list(db.scalars(expired.limit(limit)))
    if ids:
        db.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id.in_(ids)))
    return len(ids)


def keep_house(
    sessions: sessionmaker[Session],
    settings: Settings,
    vault: Vault,
    now: datetime,
    retention: bool = True,
) -> None:
    """Pending erasures and expired idempotency keys; with `retention`, payload retention
    and the automatic erasure too."""
    for _ in range(ERASURE_BATCHES):
        if not erasures.process(sessions, vault, now):
            break
    with write_session(sessions) as db:
        forget_idempotency_keys(db, now)
        if retention:
            kept = timedelta(days=settings.payload_retention_days)
            deliveries.purge_payloads(db, now - kept, now, BATCH)
            if settings.erase_after_days is not None:
                unchanged = now - timedelta(days=settings.erase_after_days)
                erasures.request_stale(db, unchanged, now, BATCH)
        db.commit()


class Housekeeper:
    """What a relay runs at each sweep: every task, retention once a minute."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        vault: Vault,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._vault = vault
        self._monotonic = monotonic
        self._retained_at: float | None = None

    def __call__(self) -> None:
        started = self._monotonic()
        retention = self._retained_at is None or started - self._retained_at >= RETENTION_SECONDS
        keep_house(self._sessions, self._settings, self._vault, clock.now(), retention)
        if retention:
            self._retained_at = started
