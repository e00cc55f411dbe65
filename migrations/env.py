"""Alembic environment: runs against the connection it is given, or DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from moncreneau import models  # noqa: F401  (registers the tables)
from moncreneau.config import Settings
from moncreneau.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url
    engine = make_engine(url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `moncreneau db upgrade`")
run_migrations_online()
