"""`moncreneau.client` against the real API on a loopback server, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import socketserver
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import Any

import pytest
import requests
from flask import Flask

from moncreneau.client import ApiError, Client
from moncreneau.config import Settings
from moncreneau.delivery import jobs
from moncreneau.delivery.dispatcher import Dispatcher
from moncreneau.delivery.queueing import InlineQueue
from tests.conftest import make_settings, new_organization
from tests.receiver import Receiver, answer, sequence, start_receiver
from tests.services import wait_until

PARIS_WINTER = timezone(timedelta(hours=1))


@pytest.fixture
def settings(database_url: str) -> Settings:
    # A failed attempt waits an hour: what happens next is up to the calls under test.
    return make_settings(database_url, retry_schedule=(3600.0, 3600.0))


@pytest.fixture
def slept() -> list[float]:
    return []


@pytest.fixture
def client(live_server: str, org: dict[str, Any], slept: list[float]) -> Iterator[Client]:
    with Client(live_server, org["apiKey"], sleep=slept.append) as c:
        yield c


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = start_receiver()
    yield rec
    rec.server.shutdown()


@pytest.fixture
def delivering(app: Flask, settings: Settings) -> Iterator[None]:
    """Deliveries the API queues are sent by a thread of this process, as `moncreneau run` does."""
    rt = app.extensions["moncreneau"]
    context = jobs.DeliveryContext(settings, rt.sessions, rt.box, Dispatcher(rt.sessions, settings))
    rt.queue = InlineQueue(settings, partial(jobs.wake_with, context))
    yield
    assert context.dispatcher.drain(10)


# Departments


def test_departments_are_created_read_and_listed_across_pages(client: Client) -> None:
    made = [client.departments.create(f"Service {n}", "Europe/Paris") for n in range(5)]
    radiology = client.departments.create(
        "Radiologie", "America/New_York", slot_minutes=15, capacity=3
    )

    assert (radiology.name, radiology.timezone) == ("Radiologie", "America/New_York")
    assert (radiology.slot_minutes, radiology.capacity) == (15, 3)
    assert made[0].slot_minutes == 30 and made[0].capacity == 1
    assert radiology.created_at.tzinfo is not None
    assert radiology.raw["slotMinutes"] == 15
    assert client.departments.get(radiology.id) == radiology
    # Two a page: six only come back by following the cursor to the end.
    assert [d.id for d in client.departments.list(page_size=2)] == [
        *(d.id for d in made),
        radiology.id,
    ]


def test_a_validation_error_raises_api_error_with_the_error_shape(client: Client) -> None:
    with pytest.raises(ApiError) as caught:
        client.departments.create("Radiologie", "Mars/Olympus_Mons")

    error = caught.value
    assert (error.status, error.code) == (422, 422)
    assert "timezone" in error.errors
    assert error.message
    assert error.body["status"] == "Unprocessable Entity"
    assert error.request_id


def test_another_organizations_resource_is_a_404(
    client: Client, live_server: str, app: Flask
) -> None:
    theirs = client.departments.create("Radiologie", "Europe/Paris")
    other = Client(live_server, new_organization(app, "Autre")["apiKey"])

    with pytest.raises(ApiError) as caught:
        other.departments.get(theirs.id)
    assert caught.value.status == 404
    assert list(other.departments.list()) == []


def test_an_unknown_key_is_a_401(live_server: str) -> None:
    with pytest.raises(ApiError) as caught:
        list(Client(live_server, "mck_unknown").departments.list())
    assert caught.value.status == 401


# Appointments


def test_an_appointment_is_booked_changed_and_taken_through_its_lifecycle(
    client: Client, slept: list[float]
) -> None:
    department = client.departments.create("Radiologie", "Europe/Paris")
    booked = client.appointments.create(
        department.id, datetime(2026, 2, 1, 10, 0), "Jeanne Martin", email="jeanne@example.org"
    )
    assert (booked.status, booked.version, booked.name) == ("pending", 1, "Jeanne Martin")
    assert booked.date_time == datetime(2026, 2, 1, 10, 0, tzinfo=PARIS_WINTER)
    assert booked.raw["dateTime"] == "2026-02-01T10:00:00+01:00"
    assert (booked.department_id, booked.duration_minutes) == (department.id, 30)
    assert booked.email == "jeanne@example.org" and booked.phone is None
    assert client.appointments.get(booked.id) == booked

    with pytest.raises(ApiError) as full:
        client.appointments.create(department.id, "2026-02-01T10:00:00", "Paul Durand")
    assert full.value.status == 409
    assert "is full" in full.value.message

    moved = client.appointments.reschedule(booked.id, "2026-02-01T11:00:00", if_match=1)
    assert moved.date_time == datetime(2026, 2, 1, 11, 0, tzinfo=PARIS_WINTER)
    assert moved.version == 2

    with pytest.raises(ApiError) as stale:
        client.appointments.update(booked.id, notes="written on version 1", if_match=1)
    assert stale.value.status == 412

    changed = client.appointments.update(booked.id, phone="+33612345678", email=None)
    assert (changed.phone, changed.email, changed.version) == ("+33612345678", None, 3)
    assert changed.notes is None

    assert client.appointments.validate(booked.id, if_match=3).status == "validated"
    completed = client.appointments.complete(booked.id)
    assert (completed.status, completed.version) == ("completed", 5)
    with pytest.raises(ApiError) as final:
        client.appointments.cancel(booked.id, "too late")
    assert final.value.status == 409

    other = client.appointments.create(department.id, "2026-02-01T12:00:00", "Paul Durand")
    cancelled = client.appointments.cancel(other.id, "sick")
    assert (cancelled.status, cancelled.cancellation_reason) == ("cancelled", "sick")

    history = list(client.appointments.events(booked.id))
    assert [e.type for e in history] == [
        "appointment.created",
        "appointment.updated",
        "appointment.updated",
        "appointment.validated",
        "appointment.completed",
    ]
    assert [e.object["version"] for e in history] == [1, 2, 3, 4, 5]
    assert history[1].data["previousAttributes"] == {"dateTime": "2026-02-01T10:00:00+01:00"}
    assert history[-1].object == completed.raw
    assert slept == []


def test_appointments_are_listed_with_every_filter_and_across_pages(client: Client) -> None:
    paris = client.departments.create("Radiologie", "Europe/Paris")
    lyon = client.departments.create("Cardiologie", "Europe/Paris")
    at_9z = client.appointments.create(paris.id, "2026-02-01T10:00:00", "A")
    at_10z = client.appointments.create(paris.id, "2026-02-01T11:00:00", "B")
    elsewhere = client.appointments.create(lyon.id, "2026-02-02T09:00:00", "C")
    client.appointments.cancel(at_10z.id)

    def ids(**filters: Any) -> list[int]:
        return [a.id for a in client.appointments.list(**filters)]

    assert ids(page_size=1) == [at_9z.id, at_10z.id, elsewhere.id]
    assert ids(status="cancelled") == [at_10z.id]
    assert ids(status="pending", page_size=1) == [at_9z.id, elsewhere.id]
    assert ids(department_id=lyon.id) == [elsewhere.id]
    window = {
        "from_": datetime(2026, 2, 1, 9, 30, tzinfo=UTC),
        "to": datetime(2026, 2, 1, 10, 30, tzinfo=UTC),
    }
    assert ids(**window) == [at_10z.id]
    # A bound without an offset is UTC.
    assert ids(from_="2026-02-01T09:00:00", to="2026-02-01T10:00:00") == [at_9z.id]
    assert ids(status="completed") == []


# Events


def test_events_are_listed_by_type_across_pages_and_read_one_by_one(client: Client) -> None:
    department = client.departments.create("Radiologie", "Europe/Paris")
    first = client.appointments.create(department.id, "2026-02-01T10:00:00", "A")
    second = client.appointments.create(department.id, "2026-02-01T10:30:00", "B")
    client.appointments.validate(first.id)
    client.appointments.cancel(second.id)

    everything = list(client.events.list(page_size=1))
    assert [e.type for e in everything] == [
        "appointment.created",
        "appointment.created",
        "appointment.validated",
        "appointment.cancelled",
    ]
    assert len({e.id for e in everything}) == 4
    created = list(client.events.list(type="appointment.created"))
    assert [e.object["id"] for e in created] == [first.id, second.id]
    assert all(e.version == "1.0" and e.id.startswith("evt_") for e in created)
    assert client.events.get(everything[2].id) == everything[2]
    assert everything[2].created.tzinfo is not None


# Webhooks and deliveries


def test_webhooks_are_created_read_changed_tested_rotated_and_deleted(
    client: Client, receiver: Receiver
) -> None:
    url = receiver.url("hook")
    hook = client.webhooks.create(url, ["appointment.created"], description="Agenda", version="1.0")
    assert hook.secret is not None and hook.secret.startswith("whsec_")
    assert (hook.url, hook.events, hook.enabled) == (url, ("appointment.created",), True)
    assert (hook.description, hook.version, hook.payload) == ("Agenda", "1.0", "full")

    read = client.webhooks.get(hook.id)
    assert read.secret is None
    assert (read.id, read.url, read.events) == (hook.id, hook.url, hook.events)
    assert read.ordering == "none"
    second = client.webhooks.create(
        receiver.url("other"), ["*"], payload="thin", ordering="appointment"
    )
    assert second.ordering == "appointment"
    assert [w.id for w in client.webhooks.list(page_size=1)] == [hook.id, second.id]
    assert client.webhooks.update(second.id, ordering="none").ordering == "none"

    changed = client.webhooks.update(
        hook.id, events=["appointment.created", "appointment.cancelled"], enabled=False
    )
    assert changed.events == ("appointment.created", "appointment.cancelled")
    assert changed.enabled is False and changed.description == "Agenda"
    cleared = client.webhooks.update(hook.id, description=None, enabled=True)
    assert cleared.description is None and cleared.enabled is True

    sent = client.webhooks.test(hook.id)
    assert sent.webhook_id == hook.id
    assert sent.delivery_id.startswith("msg_") and sent.event_id.startswith("evt_")
    assert client.events.get(sent.event_id).type == "webhook.test"

    rotated = client.webhooks.rotate_secret(hook.id)
    assert rotated.secret is not None and rotated.secret != hook.secret
    assert rotated.previous_secret_expires_at is not None

    client.webhooks.delete(hook.id)
    with pytest.raises(ApiError) as gone:
        client.webhooks.get(hook.id)
    assert gone.value.status == 404
    assert [w.id for w in client.webhooks.list()] == [second.id]


def test_deliveries_are_listed_read_retried_and_replayed(
    client: Client, receiver: Receiver, delivering: None
) -> None:
    flaky = client.webhooks.create(receiver.on("flaky", sequence(answer(500), answer(200))), ["*"])
    down = client.webhooks.create(receiver.on("down", answer(500)), ["*"])

    sent = client.webhooks.test(flaky.id)
    failed = wait_until(
        lambda: (d := client.deliveries.get(flaky.id, sent.delivery_id)).status == "failed" and d,
        what="the first attempt",
    )
    assert (failed.status, failed.last_status_code, failed.event_type) == (
        "failed",
        500,
        "webhook.test",
    )
    assert [a.status_code for a in failed.attempts] == [500]
    assert failed.attempts[0].number == 1 and failed.attempts[0].duration_ms >= 0
    assert failed.payload is not None and failed.payload["id"] == sent.event_id
    assert [d.id for d in client.deliveries.list(flaky.id)] == [sent.delivery_id]
    assert [d.id for d in client.deliveries.list(flaky.id, status="failed")] == [sent.delivery_id]
    assert list(client.deliveries.list(flaky.id, status="succeeded")) == []

    retried = client.deliveries.retry(flaky.id, sent.delivery_id)
    assert retried.id == sent.delivery_id
    succeeded = wait_until(
        lambda: (
            (d := client.deliveries.get(flaky.id, sent.delivery_id)).status == "succeeded" and d
        ),
        what="the retry",
    )
    assert [a.status_code for a in succeeded.attempts] == [500, 200]

    lost = client.webhooks.test(down.id)
    wait_until(
        lambda: client.deliveries.get(down.id, lost.delivery_id).status == "failed",
        what="the first attempt",
    )
    now = datetime.now(UTC)
    replay = client.deliveries.replay(down.id, now - timedelta(hours=1), now + timedelta(hours=1))
    assert (replay.count, replay.delivery_ids, replay.has_more) == (1, (lost.delivery_id,), False)
    wait_until(
        lambda: len(client.deliveries.get(down.id, lost.delivery_id).attempts) == 2,
        what="the replayed attempt",
    )
    nothing = client.deliveries.replay(
        flaky.id, now - timedelta(hours=1), now + timedelta(hours=1), statuses=["dead"]
    )
    assert (nothing.count, nothing.delivery_ids) == (0, ())


# Retries through a loopback proxy that loses answers


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    dropped: bool
    answer_headers: dict[str, str] = field(default_factory=dict)


def _read_head(stream: Any) -> tuple[bytes, dict[str, str]] | None:
    first = stream.readline()
    if not first:
        return None
    lines = [first]
    while lines[-1] not in (b"\r\n", b"\n", b""):
        lines.append(stream.readline())
    headers = {}
    for line in lines[1:-1]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return b"".join(lines), headers


class DroppingProxy:
    """Forwards every request to the API; the first answer to each chosen method never
    comes back: the proxy closes the caller's connection instead, after the API answered."""

    def __init__(self, upstream: str, drop_first: set[str]) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.to_drop = set(drop_first)
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while proxy.relay(self.rfile, self.connection):
                    pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def relay(self, caller: Any, connection: socket.socket) -> bool:
        """One request and its answer; False once the caller's connection is over."""
        read = _read_head(caller)
        if read is None:
            return False
        head, headers = read
        body = caller.read(int(headers.get("content-length", 0)))
        method, path, _ = head.split(b" ", 2)
        with socket.create_connection(self.upstream) as api:
            api.sendall(head + body)
            answered = api.makefile("rb")
            status_head, answer_headers = _read_head(answered) or (b"", {})
            assert "chunked" not in answer_headers.get("transfer-encoding", "")
            answer = status_head + answered.read(int(answer_headers.get("content-length", 0)))
        with self.lock:
            drop = method.decode() in self.to_drop
            self.to_drop.discard(method.decode())
            self.seen.append(Seen(method.decode(), path.decode(), headers, drop, answer_headers))
        if drop:
            connection.close()
            return False
        connection.sendall(answer)
        return True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy_for(live_server: str) -> Iterator[Callable[[set[str]], DroppingProxy]]:
    started: list[DroppingProxy] = []

    def start(drop_first: set[str]) -> DroppingProxy:
        started.append(DroppingProxy(live_server, drop_first))
        return started[-1]

    yield start
    for proxy in started:
        proxy.close()


def test_a_post_whose_answer_is_lost_is_sent_again_with_its_key_and_books_once(
    client: Client, org: dict[str, Any], proxy_for: Callable[[set[str]], DroppingProxy]
) -> None:
    department = client.departments.create("Radiologie", "Europe/Paris")
    proxy = proxy_for({"POST"})
    slept: list[float] = []
    through_proxy = Client(proxy.url, org["apiKey"], sleep=slept.append)

    booked = through_proxy.appointments.create(department.id, "2026-02-01T10:00:00", "Jeanne")

    posts = [s for s in proxy.seen if s.method == "POST"]
    assert [(s.path, s.dropped) for s in posts] == [
        ("/api/v1/appointments", True),
        ("/api/v1/appointments", False),
    ]
    keys = {s.headers["idempotency-key"] for s in posts}
    assert len(keys) == 1
    assert uuid.UUID(keys.pop()).version == 4
    # The API had booked it on the first try: the second answer is that booking, replayed.
    assert posts[1].answer_headers.get("idempotent-replayed") == "true"
    assert len(slept) == 1
    assert [a.id for a in client.appointments.list()] == [booked.id]
    created = list(client.events.list(type="appointment.created"))
    assert [e.object["id"] for e in created] == [booked.id]


def test_a_get_or_delete_whose_answer_is_lost_is_sent_again(
    client: Client, org: dict[str, Any], proxy_for: Callable[[set[str]], DroppingProxy]
) -> None:
    department = client.departments.create("Radiologie", "Europe/Paris")
    hook = client.webhooks.create("http://127.0.0.1:9/hook", ["*"])
    proxy = proxy_for({"GET", "DELETE"})
    through_proxy = Client(proxy.url, org["apiKey"], sleep=lambda _s: None)

    assert through_proxy.departments.get(department.id) == department
    # The first DELETE went through; the second finds nothing to delete, and that is success.
    through_proxy.webhooks.delete(hook.id)

    assert [(s.method, s.dropped) for s in proxy.seen] == [
        ("GET", True),
        ("GET", False),
        ("DELETE", True),
        ("DELETE", False),
    ]
    with pytest.raises(ApiError) as gone:
        client.webhooks.get(hook.id)
    assert gone.value.status == 404


def test_a_patch_whose_answer_is_lost_is_not_sent_again(
    client: Client, org: dict[str, Any], proxy_for: Callable[[set[str]], DroppingProxy]
) -> None:
    hook = client.webhooks.create("http://127.0.0.1:9/hook", ["*"])
    proxy = proxy_for({"PATCH"})
    through_proxy = Client(proxy.url, org["apiKey"], sleep=lambda _s: None)

    with pytest.raises(requests.ConnectionError):
        through_proxy.webhooks.update(hook.id, description="once")

    assert [(s.method, s.dropped) for s in proxy.seen] == [("PATCH", True)]
    assert client.webhooks.get(hook.id).description == "once"
