"""The production processes' metrics and logs: gunicorn workers add up, workers count outcomes."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from flask import Flask

from tests.conftest import Api, new_organization
from tests.e2e.conftest import Processes
from tests.receiver import Receiver, answer
from tests.services import free_port, wait_until

TOKEN = "e2e-metrics-token"


def samples(url: str) -> dict[str, float]:
    # The API's /metrics wants the token; a worker's own port ignores it.
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def answering(url: str) -> dict[str, float] | None:
    try:
        return samples(url)
    except OSError:
        return None


def test_metrics_of_every_gunicorn_worker_add_up_whichever_answers(
    app: Flask, processes: Processes
) -> None:
    port = free_port()
    processes.start("api", "--port", str(port), "--workers", "3", MONCRENEAU_METRICS_TOKEN=TOKEN)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: answering(f"{base}/metrics"), what="gunicorn answering /metrics")
    key = new_organization(app)["apiKey"]
    # Fresh connections each time: gunicorn hands them to its workers in turn.
    for _ in range(30):
        request = urllib.request.Request(f"{base}/api/v1/departments", headers={"X-API-Key": key})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
    series = 'moncreneau_http_requests_total{method="GET",route="/api/v1/departments",status="200"}'
    for _ in range(5):
        assert samples(f"{base}/metrics")[series] == 30


def test_a_worker_counts_outcomes_and_logs_each_failure_with_its_delivery_and_event(
    api: Api, department: dict[str, Any], receiver: Receiver, processes: Processes
) -> None:
    port = free_port()
    processes.start("relay")
    worker = processes.start("worker", "--metrics-port", str(port), MONCRENEAU_LOG_LEVEL="INFO")
    url = f"http://127.0.0.1:{port}/metrics"
    wait_until(lambda: answering(url), what="the worker's metrics")
    ok = api.post("/webhooks", {"url": receiver.url("ok"), "events": ["*"]}).json
    failing = receiver.on("failing", answer(500, b"down for maintenance"))
    api.post("/webhooks", {"url": failing, "events": ["*"]})
    made = api.post(
        "/appointments",
        {"departmentId": department["id"], "dateTime": "2026-02-01T10:00:00", "name": "Test"},
    )
    assert made.status_code == 201

    def counted() -> dict[str, float] | None:
        found = samples(url)
        done = found.get('moncreneau_delivery_attempts_total{outcome="succeeded"}', 0)
        failed = found.get('moncreneau_delivery_attempts_total{outcome="failed"}', 0)
        return found if done >= 1 and failed >= 1 else None

    found = wait_until(counted, what="one success and one failure counted")
    assert found['moncreneau_delivery_attempts_total{outcome="succeeded"}'] == 1
    assert found['moncreneau_delivery_attempt_duration_seconds_count{outcome="succeeded"}'] == 1
    [delivered] = receiver.at("/ok")
    event_id = delivered.json["id"]

    def failure_logged() -> dict[str, Any] | None:
        for line in processes.log_of(worker).splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("status") == 500:
                    return record
        return None

    record = wait_until(failure_logged, what="the failed attempt in the worker's log")
    assert record["event_id"] == event_id
    assert record["delivery_id"].startswith("msg_")
    assert record["delivery_id"] != delivered.header("X-Moncreneau-Delivery")
    assert record["webhook_id"] != ok["id"] and record["attempt"] == 1
    assert record["level"] == "INFO" and record["logger"] == "moncreneau.delivery.attempts"
