"""The real PostgreSQL and Redis servers, throwaway databases, and waiting for processes.

The benchmarks use the same plumbing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from moncreneau.db import make_engine
from moncreneau.ops.migrate import upgrade

PG_URL = os.environ.get(
    "MONCRENEAU_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("MONCRENEAU_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(service: str, reason: str) -> None:
    """Skip loudly on a developer machine; fail the run under CI=true."""
    message = f"{service} is not reachable ({reason}); tests that need it cannot run"
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(f"!!! SKIPPED: {message} !!!")


def redis_database(number: int) -> str:
    """The test Redis server's database `number`, for a test that must wipe one alone."""
    base = REDIS_URL.rsplit("/", 1)[0] if REDIS_URL.count("/") > 2 else REDIS_URL
    return f"{base}/{number}"


def process_env(database_url: str, redis_url: str | None, **settings: str) -> dict[str, str]:
    """This environment for a `moncreneau` process, but with only these settings of ours."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MONCRENEAU_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env["DATABASE_URL"] = database_url
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(settings)
    return env


def postgres_problem() -> str | None:
    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as error:
        return f"{error.__class__.__name__}: {str(error).splitlines()[0]}"
    return None


def redis_problem() -> str | None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as error:
        return f"{error.__class__.__name__}: {error}"
    return None


def create_database(prefix: str, admin_url: str = PG_URL) -> str:
    """A fresh, empty PostgreSQL database on `admin_url`'s server; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str, admin_url: str = PG_URL) -> None:
    name = make_url(url).database
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextmanager
def throwaway_database(prefix: str, migrated: bool = True) -> Iterator[str]:
    """A PostgreSQL database of its own (migrated to the latest schema), dropped afterwards."""
    problem = postgres_problem()
    if problem:
        unavailable("PostgreSQL", problem)
    url = create_database(prefix)
    try:
        if migrated:
            engine = make_engine(url)
            upgrade(engine)
            engine.dispose()
        yield url
    finally:
        drop_database(url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    condition: Callable[[], Any], timeout: float = 30.0, what: str = "", every: float = 0.05
) -> Any:
    """The condition's first true value; fails once `timeout` seconds pass without one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not reached within {timeout:g}s: {what}")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def moncreneau_run(
    folder: Path, env: dict[str, str], program: Sequence[str | Path] = ()
) -> Iterator[str]:
    """`moncreneau run` in `folder` on a free port, logging to run.log there; yields its
    base URL once /healthz answers, and stops it afterwards.

    `program`: the command to run, `python -m moncreneau` of this interpreter by default.
    """
    command = [str(part) for part in program] or [sys.executable, "-m", "moncreneau"]
    port = free_port()
    with open(folder / "run.log", "wb") as log:
        process = subprocess.Popen(
            [*command, "run", "--port", str(port)],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{base}/healthz"), what="moncreneau run answering /healthz")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=15)


@contextmanager
def database_at(backend: str, folder: Path, revision: str) -> Iterator[str]:
    """An empty database of its own (SQLite in `folder`, or PostgreSQL) migrated up to
    `revision` only, for tests of an upgrade that meets existing data."""
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'old.db'}"
    else:
        problem = postgres_problem()
        if problem:
            unavailable("PostgreSQL", problem)
        url = create_database("moncreneau_upgrade")
    try:
        engine = make_engine(url)
        upgrade(engine, revision)
        engine.dispose()
        yield url
    finally:
        if backend == "postgresql":
            drop_database(url)


def pg_dump(database_url: str) -> str:
    """The data of a PostgreSQL database as `pg_dump --data-only` writes it."""
    target = make_url(database_url)
    return subprocess.run(
        [
            "pg_dump",
            "-h",
            target.host or "127.0.0.1",
            "-p",
            str(target.port or 5432),
            "-U",
            target.username or "postgres",
            "--data-only",
            target.database or "",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
