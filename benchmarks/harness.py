"""What every benchmark shares: throwaway databases, processes, the receiver, rounds."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from moncreneau.db import make_engine, make_session_factory, write_session
from moncreneau.delivery.queueing import wake_mark
from moncreneau.integrator.listen import api_call
from moncreneau.outbox import store
from tests import services
from tests.services import free_port, wait_until

PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SECRET_KEY = "benchmark-secret-key-for-encryption"
ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(message, flush=True)


def http_json(url: str, method: str = "GET", timeout: float = 30.0) -> Any:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def answers(url: str) -> bool:
    """Whether an HTTP server answers at `url`, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class Spread:
    """The median of a figure over rounds, with its extremes."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("a spread needs at least one round, got none")
        return cls(statistics.median(values), min(values), max(values))

    def show(self, digits: int = 2, unit: str = "") -> str:
        f = f"{{:.{digits}f}}"
        if len(set((self.low, self.high))) == 1:
            return f.format(self.median) + unit
        return f"{f.format(self.median)}{unit} ({f.format(self.low)}-{f.format(self.high)})"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# --- PostgreSQL and Redis ---------------------------------------------------------------


def create_database(prefix: str = "bench") -> str:
    return services.create_database(prefix, PG_URL)


def drop_database(url: str) -> None:
    services.drop_database(url, PG_URL)


def postgres_version() -> str:
    engine = create_engine(PG_URL)
    with engine.connect() as conn:
        version = str(conn.execute(text("SHOW server_version")).scalar_one())
    engine.dispose()
    return version.split()[0]


def forget_queue(name: str) -> None:
    """Remove a run's RQ queue, its jobs and registries from Redis."""
    client = redis.Redis.from_url(REDIS_URL)
    job_ids = [j.decode() for j in client.lrange(f"rq:queue:{name}", 0, -1)]
    for start in range(0, len(job_ids), 1000):
        client.delete(*(f"rq:job:{j}" for j in job_ids[start : start + 1000]))
    for key in client.scan_iter(f"rq:*{name}*", count=1000):
        client.delete(key)
    client.srem("rq:queues", f"rq:queue:{name}")
    client.delete(wake_mark(name))


# --- processes --------------------------------------------------------------------------


def base_env(database_url: str, queue: str | None, **extra: str) -> dict[str, str]:
    queued = {"MONCRENEAU_QUEUE_NAME": queue} if queue else {}
    settings = {
        "MONCRENEAU_SECRET_KEY": SECRET_KEY,
        "MONCRENEAU_ALLOW_PRIVATE_URLS": "true",
        "MONCRENEAU_RATE_LIMIT": "",
        "MONCRENEAU_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        **queued,
        **extra,
    }
    return services.process_env(database_url, REDIS_URL if queue else None, **settings)


class Processes:
    """Child processes with their output in log files; all stopped on `close`."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: Sequence[str],
        name: str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        log_file = open(self.log_dir / f"{name}-{len(self.running)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            list(argv),
            env={**self.env, **(env or {})},
            cwd=cwd or self.log_dir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        self.running.append(process)
        return process

    def moncreneau(self, command: str, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "moncreneau", command, *args]
        return self.start(argv, command, env=extra_env)

    def run(self, *args: str, cwd: Path | None = None) -> str:
        """A `moncreneau` command run to completion; its standard output."""
        done = subprocess.run(
            [sys.executable, "-m", "moncreneau", *args],
            env=self.env,
            cwd=cwd or self.log_dir,
            capture_output=True,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"moncreneau {' '.join(args)} failed: {done.stderr.decode()}")
        return done.stdout.decode()

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self.running:
            self.running.remove(process)

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.kill()
        process.wait()
        if process in self.running:
            self.running.remove(process)

    def close(self) -> None:
        for process in list(self.running):
            if process.poll() is None:
                process.terminate()
        for process in list(self.running):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.running.clear()

    def tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted(self.log_dir.glob("*.log"))
        )


# --- the receiver -----------------------------------------------------------------------


class Receiver:
    """`benchmarks.receiver` in its own process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.receiver", "--port", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the receiver did not start")

    def url(self, kind: str, name: str = "") -> str:
        return f"{self.base}/{kind}/{name}"

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = http_json(f"{self.base}/_counts")
        return counts

    def arrivals(self) -> list[tuple[float, str, str, str | None]]:
        return [tuple(a) for a in http_json(f"{self.base}/_arrivals")]

    def reset(self) -> None:
        http_json(f"{self.base}/_reset", "POST")

    def wait_for(self, kind: str, count: int, timeout: float, every: float = 0.05) -> None:
        wait_until(
            lambda: self.counts().get(kind, 0) >= count,
            timeout,
            f"{count} deliveries at /{kind}",
            every,
        )

    def receipts(self, kind: str = "trace") -> dict[int, float]:
        """Appointment id -> arrival stamp of its first `appointment.created` at /`kind`."""
        arrived: dict[int, float] = {}
        for stamp, at, _id, body in self.arrivals():
            if at == kind and body is not None:
                event = json.loads(body)
                if event["type"] == "appointment.created":
                    arrived.setdefault(int(event["data"]["object"]["id"]), stamp)
        return arrived

    def wait_for_receipts(
        self, wanted: Collection[int], patience: float, kind: str = "trace"
    ) -> dict[int, float]:
        """`receipts` once all of `wanted` arrived, or whatever did within `patience` seconds."""
        deadline = time.monotonic() + patience
        while True:
            # Counting is cheap; the bodies are fetched once enough deliveries arrived.
            if self.counts().get(kind, 0) >= len(wanted) or time.monotonic() >= deadline:
                arrived = self.receipts(kind)
                if all(i in arrived for i in wanted) or time.monotonic() >= deadline:
                    return arrived
                time.sleep(0.2)
            time.sleep(0.05)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@contextmanager
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    try:
        yield rec
    finally:
        rec.close()


# --- a MonCréneau installation ----------------------------------------------------------


@dataclass
class Pipeline:
    """A throwaway database (and queue) with an organization, and the processes around it."""

    database_url: str
    queue: str | None
    procs: Processes
    key: str = ""
    api: str = ""
    departments: list[int] = field(default_factory=list)
    engine: Engine | None = None

    @property
    def sessions(self) -> sessionmaker[Session]:
        if self.engine is None:
            self.engine = make_engine(self.database_url)
        return make_session_factory(self.engine)

    def start_api(self, workers: int) -> None:
        port = free_port()
        self.procs.moncreneau("api", "--port", str(port), "--workers", str(workers))
        self.api = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(f"{self.api}/healthz"), 60, "the API answering /healthz")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return api_call(self.api, self.key, method, path, body)

    def add_departments(self, count: int) -> None:
        for n in range(count):
            department = self.call(
                "POST",
                "/departments",
                {"name": f"Bench {n}", "timezone": "UTC", "slotMinutes": 30, "capacity": 10_000},
            )
            self.departments.append(department["id"])

    def add_organization(self, name: str) -> tuple[str, int]:
        """Another organization on the same installation: its API key and one department."""
        key = str(json.loads(self.procs.run("org", "create", name, "--json"))["apiKey"])
        department = api_call(
            self.api,
            key,
            "POST",
            "/departments",
            {"name": name, "timezone": "UTC", "slotMinutes": 30, "capacity": 10_000},
        )
        return key, int(department["id"])

    def subscribe(self, url: str, events: Sequence[str] = ("*",)) -> int:
        webhook: dict[str, Any] = self.call("POST", "/webhooks", {"url": url, "events": events})
        return int(webhook["id"])

    def sql(self, statement: str, **params: Any) -> Any:
        assert self.sessions
        assert self.engine is not None
        with self.engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return result.scalar() if result.returns_rows else None

    def append_events(self, count: int) -> None:
        """`count` copies of the first booked event, committed at once.

        As the event store appends (the table records the transaction), with the NOTIFY
        that wakes relays; in one statement, since booking each through the API would time
        the API instead.
        """
        with write_session(self.sessions) as db:
            db.execute(
                text(
                    "INSERT INTO events (id, organization_id, type, data, object, created_at) "
                    "SELECT 'evt_' || md5(random()::text || g::text), organization_id, type, "
                    "data, object, created_at FROM events, generate_series(1, :n) AS g "
                    "WHERE position = (SELECT min(position) FROM events)"
                ),
                {"n": count},
            )
            db.commit()
        assert self.engine is not None
        store.notify_relays(self.engine)

    def deliveries(self, status: str | None = None) -> int:
        if status:
            return int(self.sql("SELECT count(*) FROM deliveries WHERE status = :s", s=status))
        return int(self.sql("SELECT count(*) FROM deliveries"))

    def queued_jobs(self) -> int:
        assert self.queue
        return int(redis.Redis.from_url(REDIS_URL).llen(f"rq:queue:{self.queue}"))


@contextmanager
def pipeline(
    api_workers: int = 1,
    departments: int = 1,
    sqlite: bool = False,
    env: Mapping[str, str] | None = None,
) -> Iterator[Pipeline]:
    """A migrated database with one organization, its key and the API serving it."""
    folder = Path(tempfile.mkdtemp(prefix="moncreneau-bench-"))
    database_url = f"sqlite:///{folder / 'bench.db'}" if sqlite else create_database()
    queue = f"moncreneau-bench-{uuid.uuid4().hex[:10]}"
    procs = Processes(base_env(database_url, queue, **(env or {})), folder)
    pipe = Pipeline(database_url, queue, procs)
    try:
        procs.run("db", "upgrade")
        pipe.key = json.loads(procs.run("org", "create", "Bench", "--json"))["apiKey"]
        pipe.start_api(api_workers)
        pipe.add_departments(departments)
        yield pipe
    except BaseException:
        log(procs.tail())
        raise
    finally:
        procs.close()
        if pipe.engine is not None:
            pipe.engine.dispose()
        if not sqlite:
            drop_database(database_url)
        forget_queue(queue)
        shutil.rmtree(folder, ignore_errors=True)


def book_one(pipe: Pipeline, name: str = "Template") -> dict[str, Any]:
    booked: dict[str, Any] = pipe.call(
        "POST",
        "/appointments",
        {"departmentId": pipe.departments[0], "dateTime": "2031-01-01T10:00:00", "name": name},
    )
    return booked
