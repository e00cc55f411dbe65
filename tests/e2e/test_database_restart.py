"""PostgreSQL restarted under load: the API answers 503s in the error shape, then recovers alone."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from moncreneau.app import create_app
from moncreneau.auth import keys
from moncreneau.db import make_engine, make_session_factory
from moncreneau.ops.migrate import upgrade
from tests import postgres_cluster, services
from tests.conftest import Api, make_settings
from tests.e2e.conftest import SECRET_KEY, Processes, pipeline_env
from tests.postgres_cluster import Cluster
from tests.receiver import Receiver
from tests.services import free_port, wait_until

CLIENTS = 8
# No answer may take longer, outage or not: a request must never hang on a dead database.
ANSWER_BOUND = 10.0
# A request started this long after the server accepts connections again never gets a 503.
RECOVERY_BOUND = 0.5
OUTAGE = 1.0
# How long the load goes on once the server is back.
AFTERWARDS = 3.0
UNAVAILABLE = {
    "code": 503,
    "status": "Service Unavailable",
    "message": "The service is temporarily unavailable; retry shortly.",
}


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A migrated cluster of this test's own."""
    problem = postgres_cluster.problem()
    if problem:
        services.unavailable("A PostgreSQL server of the test's own", problem)
    cluster = postgres_cluster.create_cluster(free_port())
    try:
        cluster.start()
        engine = make_engine(cluster.url)
        upgrade(engine)
        engine.dispose()
        yield cluster
    finally:
        cluster.destroy()


def _api_key(url: str) -> str:
    engine = make_engine(url)
    with make_session_factory(engine)() as db:
        key: str = keys.create_organization(db, "Clinique")["apiKey"]
        db.commit()
    engine.dispose()
    return key


@dataclass
class Answer:
    key: str
    status: int
    body: str
    headers: dict[str, str]
    started: float
    elapsed: float

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """Calls the API and keeps every answer, with when it was asked and how long it took."""

    def __init__(self, base: str, api_key: str) -> None:
        self.base = base
        self.api_key = api_key
        self.answers: list[Answer] = []
        self._lock = threading.Lock()

    def post(self, path: str, body: Any, key: str) -> Answer:
        request = urllib.request.Request(
            f"{self.base}/api/v1{path}",
            method="POST",
            data=json.dumps(body).encode(),
            headers={
                "X-API-Key": self.api_key,
                "Content-Type": "application/json",
                "Idempotency-Key": key,
            },
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=ANSWER_BOUND) as response:
                status, raw, headers = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            status, raw, headers = error.code, error.read(), dict(error.headers)
        except OSError as error:
            # No HTTP answer at all (reset, refused, timed out): recorded as status 0.
            status, raw, headers = 0, repr(error).encode(), {}
        answer = Answer(
            key, status, raw.decode(errors="replace"), headers, started, time.monotonic() - started
        )
        with self._lock:
            self.answers.append(answer)
        return answer

    def until_done(self, path: str, body: Any, key: str) -> Answer:
        """Retry 503s with the same Idempotency-Key, as a client should, until another answer."""
        deadline = time.monotonic() + 20
        while True:
            answer = self.post(path, body, key)
            if answer.status != 503 or time.monotonic() > deadline:
                return answer
            time.sleep(0.1)


def _booking(department: int, n: int, year: int = 2026) -> dict[str, Any]:
    """Booking number `n`, on a 15-minute slot of its own: 96 a day from 1 March."""
    day, minute = divmod(n, 96)
    date = f"{year}-{3 + day // 28:02d}-{1 + day % 28:02d}"
    slot = f"{date}T{minute // 4:02d}:{minute % 4 * 15:02d}:00+00:00"
    return {"departmentId": department, "dateTime": slot, "name": f"P{n}"}


def _load(client: Client, departments: list[int], stop: threading.Event) -> list[threading.Thread]:
    numbers = itertools.count()
    lock = threading.Lock()

    def work(department: int) -> None:
        while not stop.is_set():
            with lock:
                n = next(numbers)
            booked = client.until_done("/appointments", _booking(department, n), f"book-{n}")
            if booked.status == 201 and n % 4 == 0:
                appointment = booked.json()["id"]
                client.until_done(
                    f"/appointments/{appointment}/cancel", {"reason": "test"}, f"cancel-{n}"
                )

    threads = [threading.Thread(target=work, args=(d,), daemon=True) for d in departments]
    for thread in threads:
        thread.start()
    return threads


@dataclass
class Served:
    client: Client
    departments: list[int]
    log: Path


@pytest.fixture
def served(cluster: Cluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Served]:
    """`moncreneau api` under gunicorn on the cluster, a key, and a department per client."""
    env = pipeline_env(cluster.url, None, MONCRENEAU_RATE_LIMIT="")
    api_key = _api_key(cluster.url)
    processes = Processes(env, tmp_path)
    port = free_port()
    processes.start("api", "--port", str(port), "--workers", "2")
    client = Client(f"http://127.0.0.1:{port}", api_key)

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{client.base}/readyz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_until(ready, what="gunicorn answering /readyz")
        departments = []
        for number in range(CLIENTS):
            made = client.post(
                "/departments",
                {"name": f"D{number}", "timezone": "UTC", "slotMinutes": 15, "capacity": 1},
                f"department-{number}",
            )
            assert made.status == 201, made.body
            departments.append(made.json()["id"])
        client.answers.clear()
        yield Served(client, departments, tmp_path / "api-0.log")
    finally:
        processes.stop_all()
        if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
            print(processes.logs(), cluster.log(), sep="\n--- postgres\n")


def _database_state(url: str) -> tuple[set[int], Counter[tuple[int, str]], set[str], set[int]]:
    """Appointments, (appointment, event type) counts, idempotency keys, cancelled ids."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, status FROM appointments"))
        appointments: dict[int, str] = {id_: status for id_, status in rows}
        rows = conn.execute(
            text("SELECT appointment_id, type FROM events WHERE appointment_id IS NOT NULL")
        )
        events = Counter((appointment, kind) for appointment, kind in rows)
        stored_keys = set(conn.execute(text("SELECT key FROM idempotency_keys")).scalars())
    engine.dispose()
    cancelled = {a for a, status in appointments.items() if status == "cancelled"}
    return set(appointments), events, stored_keys, cancelled


@pytest.mark.parametrize("mode", ["fast", "immediate"], ids=["restart", "crash"])
def test_a_database_restart_under_load_gives_clean_503s_then_recovers_without_duplicates(
    mode: str, cluster: Cluster, served: Served
) -> None:
    client = served.client
    stop = threading.Event()
    threads = _load(client, served.departments, stop)
    try:
        wait_until(
            lambda: sum(a.status == 201 for a in client.answers) >= 50,
            timeout=15,
            what="bookings before the restart",
        )
        cluster.stop(mode)
        time.sleep(OUTAGE)
        cluster.start()
        up = time.monotonic()
        time.sleep(AFTERWARDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=ANSWER_BOUND + 25)
    assert not any(t.is_alive() for t in threads), "a client still waits for an answer"

    answers = client.answers
    statuses = Counter(a.status for a in answers)
    unexpected = [a for a in answers if a.status not in (200, 201, 503)]
    assert not unexpected, unexpected[:5]
    assert statuses[503] > 0, "the restart went unnoticed: the test proves nothing"
    assert max(a.elapsed for a in answers) < ANSWER_BOUND
    for answer in answers:
        assert answer.headers.get("Content-Type") == "application/json", answer
        if answer.status == 503:
            assert answer.json() == UNAVAILABLE
            assert answer.headers.get("Retry-After") == "1"
    late = [
        round(a.started - up, 2)
        for a in answers
        if a.status == 503 and a.started > up + RECOVERY_BOUND
    ]
    assert not late, f"503s this many seconds after the server was back: {late}"
    assert any(a.status == 201 and a.started > up for a in answers), "no booking after restart"

    # Each key ended in one success. A 503 followed by a replayed success would mean the first
    # attempt committed but lost its answer (a crash between commit and reply): the key's
    # replay makes that whole, which is why clients retry writes with the same key.
    final: dict[str, Answer] = {}
    for answer in answers:
        if answer.status in (200, 201):
            assert answer.key not in final, f"{answer.key} succeeded twice"
            final[answer.key] = answer
    assert set(final) == {a.key for a in answers}
    booked = {a.json()["id"] for k, a in final.items() if k.startswith("book-")}
    cancelled = {a.json()["id"] for k, a in final.items() if k.startswith("cancel-")}
    assert len(booked) == sum(k.startswith("book-") for k in final)
    replayed = sum(a.headers.get("Idempotent-Replayed") == "true" for a in final.values())
    print(
        f"{mode} stop: {dict(statuses)}; {len(booked)} booked, {len(cancelled)} cancelled, "
        f"{replayed} committed but answered 503, then replayed"
    )

    appointments, events, stored_keys, cancelled_in_db = _database_state(cluster.url)
    assert appointments == booked
    assert cancelled_in_db == cancelled
    expected = Counter({(a, "appointment.created"): 1 for a in booked})
    expected.update({(a, "appointment.cancelled"): 1 for a in cancelled})
    assert events == expected
    assert stored_keys - {f"department-{n}" for n in range(CLIENTS)} == set(final)

    # Idle through a second restart, every pooled connection is dead: none may fail a request.
    client.answers.clear()
    cluster.stop(mode)
    cluster.start()
    for n in range(CLIENTS):
        made = client.post("/appointments", _booking(served.departments[0], n, 2027), f"idle-{n}")
        assert made.status == 201, made
    # gunicorn booted each of its two workers once: none died or was killed for hanging.
    log = served.log.read_text(errors="replace")
    assert len(re.findall(r"Booting worker", log)) == 2


@dataclass
class Pipeline:
    api: Api
    processes: Processes


@pytest.fixture
def pipeline(
    cluster: Cluster,
    redis_url: str,
    queue_name: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Pipeline]:
    """The API in this process, and the processes to start, all on the cluster."""
    env = pipeline_env(cluster.url, redis_url, MONCRENEAU_QUEUE_NAME=queue_name)
    app = create_app(
        make_settings(
            cluster.url, redis_url=redis_url, queue_name=queue_name, secret_key=SECRET_KEY
        )
    )
    processes = Processes(env, tmp_path)
    try:
        yield Pipeline(Api(app.test_client(), _api_key(cluster.url)), processes)
    finally:
        processes.stop_all()
        app.extensions["moncreneau"].sessions.kw["bind"].dispose()
        if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
            print(processes.logs(), cluster.log(), sep="\n--- postgres\n")


def test_the_relay_and_a_worker_outlive_a_database_restart_and_deliver_every_event_once(
    cluster: Cluster, pipeline: Pipeline, receiver: Receiver
) -> None:
    api = pipeline.api
    department = api.post("/departments", {"name": "D", "timezone": "UTC", "slotMinutes": 15})
    hook = api.post("/webhooks", {"url": receiver.url("restart"), "events": ["*"]}).json
    relay = pipeline.processes.start("relay")
    worker = pipeline.processes.start("worker")

    def book(numbers: range) -> set[str]:
        for n in numbers:
            made = api.post("/appointments", _booking(department.json["id"], n))
            assert made.status_code == 201, made.json
        events = api.get("/events", query_string={"limit": 200}).json["data"]
        return {e["id"] for e in events}

    def delivered(events: set[str]) -> None:
        receiver.wait_for(lambda got: {r.json["id"] for r in got} >= events, timeout=15)

    delivered(book(range(3)))
    # Stopped while the relay and the worker are busy with these: their jobs meet the outage.
    before = book(range(3, 8))
    cluster.stop("fast")
    time.sleep(OUTAGE)
    cluster.start()
    events = book(range(8, 13))
    assert events >= before
    delivered(events)
    assert relay.poll() is None and worker.poll() is None

    engine = create_engine(cluster.url)

    def recorded() -> list[tuple[str, str]]:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT event_id, status FROM deliveries WHERE subscription_id = :hook"),
                {"hook": hook["id"]},
            )
            return [(event, status) for event, status in rows]

    try:
        rows = wait_until(
            lambda: (got := recorded()) and all(status == "succeeded" for _, status in got) and got,
            what="every delivery recorded as succeeded",
        )
    finally:
        engine.dispose()
    assert sorted(event for event, _ in rows) == sorted(events)
    assert {r.json["id"] for r in receiver.at("restart")} == events
