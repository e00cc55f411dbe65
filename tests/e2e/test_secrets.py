"""After a full scenario, no API key and no webhook secret is in the database or the logs."""

from __future__ import annotations

from typing import Any

from tests import services
from tests.conftest import Api
from tests.e2e.conftest import Processes
from tests.receiver import Receiver, answer, sequence
from tests.services import wait_until


def test_a_database_dump_and_every_log_hold_no_key_or_secret_in_clear(
    api: Api,
    org: dict[str, Any],
    department: dict[str, Any],
    receiver: Receiver,
    processes: Processes,
    postgres_url: str,
) -> None:
    processes.start("relay", MONCRENEAU_LOG_LEVEL="DEBUG")
    processes.start("worker", MONCRENEAU_LOG_LEVEL="DEBUG")
    url = receiver.on("hook", sequence(answer(500), answer(200)))
    hook = api.post("/webhooks", {"url": url, "events": ["*"]}, headers={"Idempotency-Key": "k"})
    first_secret = hook.json["secret"]
    second_secret = api.post(f"/webhooks/{hook.json['id']}/rotate-secret").json["secret"]
    api.post(
        "/appointments",
        {"departmentId": department["id"], "dateTime": "2026-02-01T10:00:00", "name": "Test"},
    )
    api.post(f"/webhooks/{hook.json['id']}/test")
    wait_until(lambda: len(receiver.at("hook")) >= 3, what="a failed and two good deliveries")
    processes.stop_all()

    dump = services.pg_dump(postgres_url)
    assert "webhook_subscriptions" in dump and len(dump) > 1000
    logs = processes.logs()
    key_secret = org["apiKey"].split("_", 2)[2]
    for secret in (
        org["apiKey"],
        key_secret,
        first_secret,
        second_secret,
        first_secret.removeprefix("whsec_"),
        second_secret.removeprefix("whsec_"),
    ):
        assert secret not in dump
        assert secret not in logs
