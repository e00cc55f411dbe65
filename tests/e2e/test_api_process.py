"""`moncreneau api` serves the API under gunicorn on PostgreSQL and Redis."""

from __future__ import annotations

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


def test_the_api_process_is_ready_and_answers_with_keys(app: Flask, processes: Processes) -> None:
    port = free_port()
    api = processes.start("api", "--port", str(port), "--workers", "2", MONCRENEAU_LOG_LEVEL="INFO")
    base = f"http://127.0.0.1:{port}"

    def ready() -> Any:
        try:
            return _get(f"{base}/readyz")
        except OSError:
            return None

    status, body = wait_until(ready, what="gunicorn answering /readyz")
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
