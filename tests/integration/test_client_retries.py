"""`moncreneau.client` retries against a loopback HTTP server that answers 429, 503 and worse."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from moncreneau.client import ApiError, Client
from tests.services import free_port

DEPARTMENT = {
    "id": 1,
    "name": "Radiologie",
    "timezone": "Europe/Paris",
    "slotMinutes": 30,
    "capacity": 1,
    "createdAt": "2026-02-01T09:00:00Z",
    "updatedAt": "2026-02-01T09:00:00Z",
}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if self.body is not None:
            return json.dumps(self.body).encode()
        phrase = HTTPStatus(self.status).phrase
        return json.dumps(
            {"code": self.status, "status": phrase, "message": f"scripted {self.status}"}
        ).encode()


@dataclass
class Scripted:
    """Answers the n-th request with the n-th reply (the last one repeats); records each."""

    server: ThreadingHTTPServer
    replies: list[Reply]
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def keys(self) -> list[str]:
        return [headers.get("Idempotency-Key", "") for _, _, headers in self.requests]


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    holder: list[Scripted] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            script = holder[0]
            with lock:
                script.requests.append((self.command, self.path, dict(self.headers.items())))
                reply = script.replies[min(len(script.requests), len(script.replies)) - 1]
            body = reply.encoded()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(Scripted(server, [Reply(200)]))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield holder[0]
    server.shutdown()
    server.server_close()


def test_a_post_answered_503_is_retried_the_bounded_number_of_times_with_one_key_then_raises(
    scripted: Scripted,
) -> None:
    scripted.replies = [Reply(503, {"Retry-After": "2"})]
    slept: list[float] = []
    client = Client(scripted.url, "mck_key", max_retries=3, sleep=slept.append)

    with pytest.raises(ApiError) as caught:
        client.appointments.create(1, "2026-02-01T10:00:00", "Jeanne")

    assert (caught.value.status, caught.value.code) == (503, 503)
    assert caught.value.message == "scripted 503"
    assert [(method, path) for method, path, _ in scripted.requests] == [
        ("POST", "/api/v1/appointments")
    ] * 4
    keys = scripted.keys()
    assert len(set(keys)) == 1 and uuid.UUID(keys[0]).version == 4
    assert slept == [2.0, 2.0, 2.0]


def test_each_post_call_makes_up_a_key_of_its_own(scripted: Scripted) -> None:
    scripted.replies = [Reply(201, body=DEPARTMENT)]
    client = Client(scripted.url, "mck_key")

    client.departments.create("Radiologie", "Europe/Paris")
    client.departments.create("Radiologie", "Europe/Paris")
    client.departments.create("Radiologie", "Europe/Paris", idempotency_key="mine-1")

    first, second, given = scripted.keys()
    assert first != second and given == "mine-1"
    assert all(h["X-API-Key"] == "mck_key" for _, _, h in scripted.requests)


def test_a_429_with_a_retry_after_date_waits_until_then_capped_and_then_succeeds(
    scripted: Scripted,
) -> None:
    tomorrow = format_datetime(datetime.now(UTC) + timedelta(days=1), usegmt=True)
    scripted.replies = [
        Reply(429, {"Retry-After": tomorrow}),
        Reply(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
        Reply(200, body=DEPARTMENT),
    ]
    slept: list[float] = []
    client = Client(scripted.url, "mck_key", max_retry_after=5.0, sleep=slept.append)

    department = client.departments.get(1)

    assert (department.id, department.slot_minutes) == (1, 30)
    assert len(scripted.requests) == 3
    # Tomorrow is cut to the cap; a date already past means now.
    assert slept == [5.0, 0.0]


def test_a_get_answered_429_is_retried_the_bounded_number_of_times_then_raises(
    scripted: Scripted,
) -> None:
    scripted.replies = [Reply(429, {"Retry-After": "1"})]
    slept: list[float] = []
    client = Client(scripted.url, "mck_key", max_retries=2, sleep=slept.append)

    with pytest.raises(ApiError) as caught:
        list(client.appointments.list())

    assert caught.value.status == 429
    assert len(scripted.requests) == 3
    assert slept == [1.0, 1.0]


def test_without_retry_after_the_client_backs_off_exponentially(scripted: Scripted) -> None:
    scripted.replies = [Reply(503)]
    slept: list[float] = []
    client = Client(scripted.url, "mck_key", max_retries=4, sleep=slept.append)

    with pytest.raises(ApiError):
        client.webhooks.delete(1)

    assert len(slept) == 4
    # 0.5, 1, 2, 4 seconds, each within 20 % either way.
    for waited, base in zip(slept, [0.5, 1.0, 2.0, 4.0], strict=True):
        assert base * 0.8 <= waited <= base * 1.2


@pytest.mark.parametrize("status", [400, 404, 409, 412, 422, 500])
def test_other_errors_raise_at_once(scripted: Scripted, status: int) -> None:
    scripted.replies = [Reply(status, {"Retry-After": "1"})]
    slept: list[float] = []
    client = Client(scripted.url, "mck_key", sleep=slept.append)

    with pytest.raises(ApiError) as caught:
        client.appointments.validate(7, if_match=3)

    assert caught.value.status == status
    assert len(scripted.requests) == 1 and slept == []
    _, path, headers = scripted.requests[0]
    assert path == "/api/v1/appointments/7/validate"
    assert headers["If-Match"] == '"3"'


def test_a_patch_is_retried_after_a_429_but_not_after_a_503(scripted: Scripted) -> None:
    appointment = {
        "id": 7,
        "departmentId": 1,
        "dateTime": "2026-02-01T11:00:00+01:00",
        "durationMinutes": 30,
        "name": "Jeanne",
        "status": "pending",
        "version": 2,
        "createdAt": "2026-02-01T09:00:00Z",
        "updatedAt": "2026-02-01T09:00:00Z",
    }
    scripted.replies = [Reply(429, {"Retry-After": "1"}), Reply(200, body=appointment)]
    client = Client(scripted.url, "mck_key", sleep=lambda _s: None)

    assert client.appointments.reschedule(7, "2026-02-01T11:00:00").version == 2
    assert [m for m, _, _ in scripted.requests] == ["PATCH", "PATCH"]

    scripted.requests.clear()
    scripted.replies = [Reply(503, {"Retry-After": "1"})]
    with pytest.raises(ApiError) as caught:
        client.appointments.reschedule(7, "2026-02-01T11:00:00")
    assert caught.value.status == 503
    assert len(scripted.requests) == 1


def test_an_error_that_is_not_the_api_shape_still_raises_api_error(scripted: Scripted) -> None:
    scripted.replies = [Reply(502, body=b"<html>Bad Gateway</html>")]
    client = Client(scripted.url, "mck_key")

    with pytest.raises(ApiError) as caught:
        client.events.get("evt_1")

    assert caught.value.status == 502
    assert caught.value.message == "<html>Bad Gateway</html>"
    assert caught.value.errors == {}


def test_a_refused_connection_is_retried_then_raised_as_requests_raised_it() -> None:
    slept: list[float] = []
    client = Client(f"http://127.0.0.1:{free_port()}", "mck_key", max_retries=2, sleep=slept.append)

    with pytest.raises(requests.ConnectionError):
        client.departments.get(1)

    assert len(slept) == 2


def test_a_delete_that_finds_nothing_after_a_503_is_a_404(scripted: Scripted) -> None:
    """Only a lost answer makes a 404 on a DELETE's retry mean that the first one did it."""
    scripted.replies = [Reply(503, {"Retry-After": "0"}), Reply(404)]
    client = Client(scripted.url, "mck_key", sleep=lambda _s: None)

    with pytest.raises(ApiError) as caught:
        client.webhooks.delete(1)

    assert caught.value.status == 404
    assert [m for m, _, _ in scripted.requests] == ["DELETE", "DELETE"]
