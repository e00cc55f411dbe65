"""After an erasure, a dump of the database and every process's log hold none of its values."""

from __future__ import annotations

import urllib.request
import uuid
from typing import Any

from flask import Flask

from tests import services
from tests.conftest import new_organization
from tests.e2e.conftest import Processes
from tests.integration.test_concurrency import Client
from tests.receiver import Receiver, answer
from tests.services import free_port, wait_until


def test_after_an_erasure_no_dump_and_no_process_log_holds_an_erased_value(
    app: Flask, receiver: Receiver, processes: Processes, postgres_url: str
) -> None:
    tag = uuid.uuid4().hex[:10]
    digits = str(uuid.uuid4().int)[:12]
    values = {
        "name": f"Patiente Unique {tag}",
        "email": f"unique.{tag}@erasure.example.org",
        "phone": f"+33 6 {digits[:2]} {digits[2:4]} {digits[4:6]} {digits[6:8]}",
        "notes": f"Diagnosis note {tag}",
        "new_phone": f"+44 20 7946 {digits[8:12]}",
        "new_notes": f"Second note {tag}",
        "reason": f"Cancelled because {tag}",
        "bad_email": f"not an email {tag}",
    }
    port = free_port()
    for command in ("relay", "worker"):
        processes.start(command, MONCRENEAU_LOG_LEVEL="DEBUG")
    processes.start("api", "--port", str(port), "--workers", "2", MONCRENEAU_LOG_LEVEL="DEBUG")
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1):
                return True
        except OSError:
            return False

    wait_until(up, what="the API process")
    api = Client(base, new_organization(app)["apiKey"])
    department = api.department(capacity=2)
    # A receiver that echoes what it gets into its answer, one that always fails (so that
    # its deliveries are still waiting at the erasure), and a thin one.
    echo = receiver.on("echo", lambda request, handler: answer(200, request.body)(request, handler))
    failing = receiver.on("failing", answer(500, b"no"))
    thin = receiver.on("thin", answer(200))
    for url, payload in ((echo, "full"), (failing, "full"), (thin, "thin")):
        made = api.call("POST", "/webhooks", {"url": url, "events": ["*"], "payload": payload})
        assert made.status == 201, made.body
    booking = {
        "departmentId": department,
        "dateTime": "2026-03-02T10:00:00",
        "name": values["name"],
        "email": values["email"],
        "phone": values["phone"],
        "notes": values["notes"],
    }
    booked = api.call("POST", "/appointments", booking, {"Idempotency-Key": f"k-{tag}"})
    assert booked.status == 201, booked.body
    first = booked.body
    changed = api.call(
        "PATCH",
        f"/appointments/{first['id']}",
        {"phone": values["new_phone"], "notes": values["new_notes"]},
    )
    assert changed.status == 200
    second = api.call("POST", "/appointments", {**booking, "email": values["email"].upper()}).body
    cancelled = api.call(
        "POST", f"/appointments/{second['id']}/cancel", {"reason": values["reason"]}
    )
    assert cancelled.status == 200
    refused = api.call("POST", "/appointments", {**booking, "email": values["bad_email"]})
    assert refused.status == 422
    wait_until(lambda: len(receiver.at("echo")) >= 4, what="the four events at the echo")

    erasure = api.call("POST", "/erasures", {"email": values["email"]}).body
    assert erasure["appointmentIds"] == [first["id"], second["id"]]

    def completed() -> Any:
        return api.call("GET", f"/erasures/{erasure['id']}").body["status"] == "completed"

    wait_until(completed, what="the erasure completed")
    wait_until(
        lambda: [r.json["type"] for r in receiver.at("echo")].count("appointment.erased") == 2,
        what="appointment.erased at the echo",
    )
    again = api.call("POST", "/appointments", booking, {"Idempotency-Key": f"k-{tag}"})
    assert again.status == 201 and again.body["name"] is None
    processes.stop_all()

    dump = services.pg_dump(postgres_url)
    logs = "\n".join(p.read_text(errors="replace") for p in processes.log_dir.glob("*.log"))
    assert "personal_keys" in dump and len(dump) > 5000
    assert "appointment.erased" in dump and "POST /api/v1/erasures" in logs
    for name, value in values.items():
        for form in {value, value.lower()}:
            assert form not in dump, f"{name} is in the database dump"
            assert form not in logs, f"{name} is in a process log"
