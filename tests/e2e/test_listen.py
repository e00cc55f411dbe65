"""`moncreneau listen` against a running `moncreneau run`: subscribe, verify, fail, forward."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.e2e.conftest import call
from tests.receiver import Receiver
from tests.services import free_port, wait_until
from tests.verify import assert_verified


def test_listen_subscribes_itself_verifies_fails_on_demand_forwards_and_cleans_up(
    embedded: tuple[str, str], receiver: Receiver, tmp_path: Path
) -> None:
    base, key = embedded
    port = free_port()
    output = tmp_path / "listen.log"
    forward = receiver.url("app")
    with open(output, "wb") as log:
        listen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "moncreneau",
                "listen",
                "--api",
                base,
                "--key",
                key,
                "--port",
                str(port),
                "--fail-next",
                "1",
                "--forward-to",
                forward,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "listening on" in output.read_text(), what="listen started")
        [hook] = call(base, key, "GET", "/webhooks")["data"]
        assert hook["url"] == f"http://127.0.0.1:{port}/"
        department = call(base, key, "POST", "/departments", {"name": "R", "timezone": "UTC"})
        call(
            base,
            key,
            "POST",
            "/appointments",
            {"departmentId": department["id"], "dateTime": "2026-02-01T10:00:00", "name": "A"},
        )

        wait_until(lambda: "attempt 2  verified" in output.read_text(), what="the retry")
        lines = output.read_text().splitlines()
        first = next(line for line in lines if "attempt 1" in line)
        assert "appointment.created" in first
        assert "verified  -> answered 500 (told to fail)" in first

        [forwarded] = receiver.wait_for(lambda got: len(got) == 1)
        assert forwarded.header("X-Moncreneau-Attempt") == "2"
        assert forwarded.json["type"] == "appointment.created"
        secret = call(base, key, "POST", f"/webhooks/{hook['id']}/rotate-secret")["secret"]
        # The old secret listen holds stays valid through the grace period.
        call(base, key, "POST", f"/webhooks/{hook['id']}/test")
        wait_until(lambda: "webhook.test" in output.read_text(), what="the test event")
        assert "webhook.test" in output.read_text()
        second = receiver.wait_for(lambda got: len(got) == 2)[1]
        assert_verified(second, secret)

        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/_listen/fail?count=1", method="POST", data=b""
        )
        urllib.request.urlopen(request, timeout=5).close()
        assert "the next 1 delivery(ies) will be answered 500" in output.read_text()
    finally:
        listen.send_signal(signal.SIGTERM)
        listen.wait(timeout=15)
    assert f"deleted webhook {hook['id']}" in output.read_text()
    assert call(base, key, "GET", "/webhooks")["data"] == []
