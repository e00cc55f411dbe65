"""Housekeeping: clean-up that runs beside the relay, in small bounded batches."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from moncreneau import clock
from moncreneau.db import write_session
from moncreneau.models import IDEMPOTENCY_RETENTION, IdempotencyRecord

# Rows each task removes per run: a short transaction, whatever the backlog.
BATCH = 1000
# How often a relay runs the tasks; with several relays each does, and the batches stay small.
EVERY_SECONDS = 5.0


def forget_idempotency_keys(db: Session, now: datetime, limit: int = BATCH) -> int:
    """Stored responses past their retention; returns how many were removed."""
    expired = select(IdempotencyRecord.id).where(
        IdempotencyRecord.created_at < now - IDEMPOTENCY_RETENTION
    )
    ids = list(db.scalars(expired.limit(limit)))
    if ids:
        db.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id.in_(ids)))
    return len(ids)


def run_once(sessions: sessionmaker[Session], now: datetime | None = None) -> None:
    """One bounded batch of each task, committed together."""
    with write_session(sessions) as db:
        forget_idempotency_keys(db, now or clock.now())
        db.commit()
