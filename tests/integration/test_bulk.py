"""PostgreSQL bulk inserts store every row as given, however its columns travel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from moncreneau import bulk
from moncreneau.db import make_engine
from moncreneau.models import DeliveryAttempt

START = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
FIELDS = ("delivery_seq", "number", "started_at", "duration_ms", "status_code", "error")


@pytest.fixture
def pg(postgres_url: str) -> Any:
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


def _attempt(n: int, **values: Any) -> dict[str, Any]:
    row = {
        "delivery_seq": n,
        "number": 1,
        "started_at": START + timedelta(milliseconds=n),
        "duration_ms": 5,
        "status_code": 200,
        "error": None,
        "response_excerpt": 'ok, "quoted" \\ and {braces}',
    }
    return {**row, **values}


def _stored(engine: Engine) -> list[tuple[Any, ...]]:
    columns = [getattr(DeliveryAttempt, name) for name in (*FIELDS, "response_excerpt")]
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(*columns).order_by(DeliveryAttempt.id))]


def _insert(engine: Engine, rows: list[dict[str, Any]], suffix: str = "") -> list[Any]:
    with engine.begin() as conn:
        result = bulk.insert_rows(conn, DeliveryAttempt, rows, suffix)
        return list(result.scalars()) if suffix else []


def _as_tuples(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(row[name] for name in (*FIELDS, "response_excerpt")) for row in rows]


def test_shared_repeated_and_distinct_columns_come_back_row_by_row(pg: Engine) -> None:
    # number: one value for all; status_code and error: two values repeated; the rest distinct
    rows = [
        _attempt(
            n,
            status_code=500 if n % 3 == 0 else 200,
            error="HTTP 500" if n % 3 == 0 else None,
            duration_ms=n * 7,
        )
        for n in range(1, 31)
    ]
    assert {bulk._encode(k, v, {}) for k, v in bulk.columns(rows).items()} == {
        bulk.SHARED,
        bulk.LOOKUP,
        bulk.ARRAY,
    }
    _insert(pg, rows)
    assert _stored(pg) == _as_tuples(rows)


def test_rows_alike_in_every_column_are_each_inserted(pg: Engine) -> None:
    rows = [_attempt(1, started_at=START) for _ in range(3)]
    _insert(pg, rows)
    assert _stored(pg) == _as_tuples(rows)


def test_one_row_and_returning(pg: Engine) -> None:
    [first] = _insert(pg, [_attempt(1)], "RETURNING id")
    second = _insert(pg, [_attempt(2), _attempt(3)], "RETURNING id")
    assert sorted(second) == [first + 1, first + 2]
    assert _stored(pg) == _as_tuples([_attempt(1), _attempt(2), _attempt(3)])
