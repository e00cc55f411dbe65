"""`moncreneau run` alone, on SQLite without Redis, serves the API and delivers webhooks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import pipeline_env, wait_until
from tests.receiver import Receiver
from tests.verify import assert_verified


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _call(base: str, key: str, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{base}/api/v1{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A `moncreneau run` process in its own folder, and an organization's key."""
    env = pipeline_env(f"sqlite:///{tmp_path / 'moncreneau.db'}", None)
    env.pop("MONCRENEAU_SECRET_KEY")  # the embedded mode keeps its own key file
    port = _free_port()
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "moncreneau", "run", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1):
                return True
        except OSError:
            return False

    try:
        wait_until(up, what="moncreneau run answering /healthz")
        created = subprocess.run(
            [sys.executable, "-m", "moncreneau", "org", "create", "Clinique", "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            check=True,
        )
        yield base, json.loads(created.stdout)["apiKey"]
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert (tmp_path / "moncreneau.db.key").exists()


def test_the_embedded_mode_delivers_signed_events_with_no_redis(
    embedded: tuple[str, str], receiver: Receiver
) -> None:
    base, key = embedded
    hook = _call(base, key, "POST", "/webhooks", {"url": receiver.url("hook"), "events": ["*"]})
    department = _call(base, key, "POST", "/departments", {"name": "R", "timezone": "UTC"})
    booked = _call(
        base,
        key,
        "POST",
        "/appointments",
        {"departmentId": department["id"], "dateTime": "2026-02-01T10:00:00", "name": "Test"},
    )
    _call(base, key, "POST", f"/appointments/{booked['id']}/validate")
    test = _call(base, key, "POST", f"/webhooks/{hook['id']}/test")

    got = receiver.wait_for(lambda r: len(r) >= 3)
    for request in got:
        assert_verified(request, hook["secret"])
    assert sorted(r.json["type"] for r in got) == [
        "appointment.created",
        "appointment.validated",
        "webhook.test",
    ]
    assert test["deliveryId"] in {r.header("X-Moncreneau-Delivery") for r in got}

    def all_succeeded() -> bool:
        page = _call(base, key, "GET", f"/webhooks/{hook['id']}/deliveries")["data"]
        return len(page) == 3 and all(d["status"] == "succeeded" for d in page)

    wait_until(all_succeeded, what="three deliveries recorded as succeeded")
