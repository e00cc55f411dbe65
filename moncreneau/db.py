"""Engine, session factory, declarative base and the column types every table shares."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Integer,
    MetaData,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
BigId = BigInteger().with_variant(Integer(), "sqlite")
JsonDoc = JSON().with_variant(JSONB(), "postgresql")

# Write transactions on SQLite take the write lock at BEGIN: a deferred transaction that
# reads then writes fails with "database is locked" when another writer got there first.
WRITE = {"sqlite_immediate": True}
# Seconds to wait for PostgreSQL to accept a connection.
CONNECT_TIMEOUT = 5
# A backend whose client died notices only when it next reads from or writes to it; until
# then (a statement waiting on a lock, say) it keeps every lock of the dead process, and a
# relay or request that takes over waits behind it. PostgreSQL 14 and later check a
# running statement's client at this interval and end the session when it is gone.
CLIENT_CHECK = "SET client_connection_check_interval = '1s'"


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend (SQLite keeps no offset of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime given to a UTC column: {value!r}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class current_transaction(FunctionElement[int]):
    """The writing transaction's id: PostgreSQL's `pg_current_xact_id()`; 0 on SQLite."""

    type = BigInteger()
    inherit_cache = True


class snapshot_horizon(FunctionElement[int]):
    """No transaction of this database with a lower id was still open at the statement's snapshot.

    On PostgreSQL, the snapshot's `xmin` (the oldest transaction id still running) passed
    over the running transactions of other databases, which write no event here; the
    snapshot's `xmax` when none runs. It is never below `xmin`, and equals it whenever the
    oldest running transaction is this database's. On SQLite, which admits one writer at a
    time and shows only what has committed, it is 1, above every `current_transaction()`.
    """

    type = BigInteger()
    inherit_cache = True


@compiles(current_transaction)
def _current_transaction(element: current_transaction, compiler: SQLCompiler, **kw: Any) -> str:
    return "0"


@compiles(current_transaction, "postgresql")
def _current_transaction_pg(element: current_transaction, compiler: SQLCompiler, **kw: Any) -> str:
    # xid8 has no cast to bigint; its text form is the 64-bit number (PostgreSQL 13+).
    return "(pg_current_xact_id()::text::bigint)"


@compiles(snapshot_horizon)
def _snapshot_horizon(element: snapshot_horizon, compiler: SQLCompiler, **kw: Any) -> str:
    return "1"


# A running transaction is another database's only if pg_stat_activity says so (one it does
# not show counts as this database's); its 32-bit xid is the snapshot's 64-bit id modulo 2**32.
_HORIZON = (
    "(SELECT coalesce(min(x::text::bigint), pg_snapshot_xmax(pg_current_snapshot())::text::bigint)"
    " FROM pg_snapshot_xip(pg_current_snapshot()) AS x WHERE NOT EXISTS ("
    "SELECT FROM pg_stat_activity AS a WHERE a.datname <> current_database()"
    " AND a.backend_xid::text::bigint = mod(x::text::bigint, 4294967296)))"
)


@compiles(snapshot_horizon, "postgresql")
def _snapshot_horizon_pg(element: snapshot_horizon, compiler: SQLCompiler, **kw: Any) -> str:
    return _HORIZON


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str, **kwargs: Any) -> Engine:
    # Errors and their logs never quote the values of a statement: they may be personal.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    # A server that stops answering (not one that restarts) must give a 503, not a request
    # hung until the process's own timeout; keepalives notice a dead peer on idle links.
    kwargs.setdefault("pool_timeout", 10)
    connect_args = kwargs.setdefault("connect_args", {})
    connect_args.setdefault("connect_timeout", CONNECT_TIMEOUT)
    connect_args.setdefault("keepalives", 1)
    connect_args.setdefault("keepalives_idle", 30)
    engine = create_engine(url, **kwargs)
    _check_clients(engine)
    return engine


def _check_clients(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection.info.server_version >= 140000:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(CLIENT_CHECK)
            dbapi_connection.commit()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def write_session(factory: sessionmaker[Session]) -> Session:
    """A session whose transaction is ready to write (see WRITE)."""
    session = factory()
    session.connection(execution_options=WRITE)
    return session


class LockKind(IntEnum):
    """The first key of a two-key advisory lock: each kind of lock has a key space of its own.

    PostgreSQL keeps one-key (bigint) and two-key (int, int) advisory locks apart, and two-key
    locks with different first keys never meet, whatever their second: a slot's lock never
    waits for an Idempotency-Key's, whatever the organization or the key. The second key is a
    32-bit hash of the locked name, so two names of one kind may share a lock (rarely): they
    then take turns, which costs time and never correctness.
    """

    # 19779, ("M" << 8) | "C", was the event log's, which appends no longer take: left unused
    SLOT = 19780
    IDEMPOTENCY_KEY = 19781


_LOCK = text("SELECT pg_advisory_xact_lock(CAST(:kind AS integer), hashtext(:name))")
_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(CAST(:kind AS integer), hashtext(:name))")


def lock(session: Session, kind: LockKind, name: str) -> None:
    """Wait for the `kind` lock on `name`, held until the transaction ends.

    PostgreSQL only: SQLite admits a single writer at a time anyway.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_LOCK, {"kind": int(kind), "name": name})


def try_lock(session: Session, kind: LockKind, name: str) -> bool:
    """Take the `kind` lock on `name` until the transaction ends, or say it is taken."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.scalar(_TRY_LOCK, {"kind": int(kind), "name": name}))
