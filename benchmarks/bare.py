"""The P1 baseline: a bare Flask + SQLAlchemy endpoint that inserts one row per POST."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from flask import Flask, request
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, create_engine, event
from sqlalchemy.engine import Engine

metadata = MetaData()
rows = Table(
    "bench_rows",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200)),
    Column("created_at", DateTime(timezone=True)),
)


def make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_size=10, max_overflow=20)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # The same durability and waiting as MonCréneau's SQLite engine.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def create_table(url: str) -> None:
    engine = make_engine(url)
    metadata.create_all(engine)
    engine.dispose()


def create_app() -> Flask:
    app = Flask(__name__)
    engine = make_engine(os.environ["DATABASE_URL"])

    @app.post("/rows")
    def insert_row() -> tuple[dict[str, Any], int]:
        name = str((request.get_json() or {}).get("name", ""))
        with engine.begin() as conn:
            new_id = conn.execute(
                rows.insert().values(name=name, created_at=datetime.now(UTC)).returning(rows.c.id)
            ).scalar_one()
        return {"id": new_id, "name": name}, 201

    return app
