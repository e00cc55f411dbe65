"""The delivery job waits out a short database outage instead of failing at once."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from moncreneau.db import make_engine, make_session_factory
from moncreneau.delivery import jobs
from tests.conftest import make_settings
from tests.services import free_port


def _context(url: str) -> jobs.DeliveryContext:
    # Neither the box nor the dispatcher is reached when nothing gets claimed.
    none: Any = None
    return jobs.DeliveryContext(
        make_settings(url), make_session_factory(make_engine(url)), none, none
    )


def test_a_job_that_meets_an_outage_claims_once_the_database_is_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    calls: list[list[str]] = []

    def claim(_db: Any, ids: list[str], *_args: Any) -> list[Any]:
        calls.append(ids)
        if len(calls) <= 2:
            raise OperationalError("UPDATE deliveries", {}, Exception("server closed"))
        return []

    monkeypatch.setattr(jobs, "claim", claim)
    monkeypatch.setattr(jobs.time, "sleep", lambda _s: None)
    assert jobs.deliver_with(_context(f"sqlite:///{tmp_path / 'db'}"), ["msg_1"]) == 0
    assert calls == [["msg_1"]] * 3


def test_a_job_fails_once_the_outage_outlasts_its_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "OUTAGE_PATIENCE", timedelta(seconds=1.2))
    nowhere = _context(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test")
    started = time.monotonic()
    with pytest.raises(OperationalError):
        jobs.deliver_with(nowhere, ["msg_1"])
    # Tried, waited 0.5 s, tried again; a third try would end past the patience.
    assert 0.5 <= time.monotonic() - started < 1.2
