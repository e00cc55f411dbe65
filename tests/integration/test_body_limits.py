"""Bodies over the configured size are refused with 413, chunked ones too, over real HTTP."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from werkzeug.serving import make_server

from moncreneau.app import create_app
from tests.conftest import make_settings, new_organization


@pytest.fixture
def small_server(database_url: str) -> Iterator[tuple[str, str]]:
    app: Flask = create_app(make_settings(database_url, max_body_bytes=2048))
    key = new_organization(app)["apiKey"]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", key
    server.shutdown()


def _post(base: str, key: str, body: bytes, chunked: bool) -> tuple[int, Any]:
    target = urlsplit(base)
    conn = http.client.HTTPConnection(target.hostname or "", target.port, timeout=10)
    headers = {"X-API-Key": key, "Content-Type": "application/json"}

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    conn.request(
        "POST",
        "/api/v1/departments",
        body=pieces() if chunked else body,
        headers=headers,
        encode_chunked=chunked,
    )
    response = conn.getresponse()
    return response.status, json.loads(response.read())


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_is_a_413_in_the_error_shape_and_writes_nothing(
    small_server: tuple[str, str], chunked: bool
) -> None:
    base, key = small_server
    big = json.dumps({"name": "x" * 5000, "timezone": "UTC"}).encode()
    status, error = _post(base, key, big, chunked)
    assert (status, error["code"], error["status"]) == (413, 413, "Request Entity Too Large")
    status, created = _post(
        base, key, json.dumps({"name": "R", "timezone": "UTC"}).encode(), chunked
    )
    assert status == 201
    assert created["id"] == 1, "the refused body created something"
