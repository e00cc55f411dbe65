"""`moncreneau api` serves the API under gunicorn on PostgreSQL and Redis."""

from __future__ import annotations

import http.client
import json
import time
import urllib.request
from typing import Any

from flask import Flask

from tests.conftest import new_organization
from tests.e2e.conftest import Processes
from tests.services import free_port, wait_until


def _get(url: str, key: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _ready(base: str) -> tuple[int, Any]:
    def ready() -> Any:
        try:
            return _get(f"{base}/readyz")
        except OSError:
            return None

    answer: tuple[int, Any] = wait_until(ready, what="gunicorn answering /readyz")
    return answer


def test_the_api_process_is_ready_and_answers_with_keys(app: Flask, processes: Processes) -> None:
    port = free_port()
    api = processes.start("api", "--port", str(port), "--workers", "2", MONCRENEAU_LOG_LEVEL="INFO")
    base = f"http://127.0.0.1:{port}"

    status, body = _ready(base)
    assert (status, body["checks"]) == (200, {"database": "ok", "redis": "ok"})
    key = new_organization(app)["apiKey"]
    assert _get(f"{base}/api/v1/departments", key) == (
        200,
        {"data": [], "nextCursor": None, "hasMore": False},
    )
    status, error = _get(f"{base}/api/v1/departments")
    assert status == 401
    assert error["code"] == 401

    # One access line per request, the app's, in the app's format: gunicorn writes none.
    def access_lines() -> list[str] | None:
        lines = [x for x in processes.log_of(api).splitlines() if "/api/v1/departments" in x]
        return lines if len(lines) >= 2 else None

    wait_until(access_lines, what="the access lines")
    time.sleep(0.5)  # gunicorn would write its own line just after the response
    lines = access_lines() or []
    assert [json.loads(x)["status"] for x in lines] == [200, 401], lines


def test_an_idle_keep_alive_connection_stays_open_between_calls_seconds_apart(
    app: Flask, processes: Processes
) -> None:
    """A client's pooled connection outlives a pause between two calls: a POST sent on a
    connection the server has just closed would be lost to the client."""
    port = free_port()
    processes.start("api", "--port", str(port), "--workers", "1")
    _ready(f"http://127.0.0.1:{port}")
    key = new_organization(app)["apiKey"]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/api/v1/departments", headers={"X-API-Key": key})
        assert connection.getresponse().read()
        sock = connection.sock
        assert sock is not None
        # Longer than gunicorn's own default keep-alive (2 s).
        time.sleep(3.5)
        sock.setblocking(False)
        try:
            closed = sock.recv(1) == b""
        except BlockingIOError:
            closed = False  # nothing to read: still open
        finally:
            sock.setblocking(True)
        assert not closed, "the server closed the idle connection"
        body = json.dumps({"name": "Kept alive", "timezone": "Europe/Paris"})
        connection.request(
            "POST",
            "/api/v1/departments",
            body=body,
            headers={"X-API-Key": key, "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.status == 201, response.read()
        assert connection.sock is sock
    finally:
        connection.close()
