"""`moncreneau run` alone, on SQLite without Redis, serves the API and delivers webhooks."""

from __future__ import annotations

from tests.e2e.conftest import call
from tests.receiver import Receiver
from tests.services import wait_until
from tests.verify import assert_verified


def test_the_embedded_mode_delivers_signed_events_with_no_redis(
    embedded: tuple[str, str], receiver: Receiver
) -> None:
    base, key = embedded
    hook = call(base, key, "POST", "/webhooks", {"url": receiver.url("hook"), "events": ["*"]})
    department = call(base, key, "POST", "/departments", {"name": "R", "timezone": "UTC"})
    booked = call(
        base,
        key,
        "POST",
        "/appointments",
        {"departmentId": department["id"], "dateTime": "2026-02-01T10:00:00", "name": "Test"},
    )
    call(base, key, "POST", f"/appointments/{booked['id']}/validate")
    test = call(base, key, "POST", f"/webhooks/{hook['id']}/test")

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
        page = call(base, key, "GET", f"/webhooks/{hook['id']}/deliveries")["data"]
        return len(page) == 3 and all(d["status"] == "succeeded" for d in page)

    wait_until(all_succeeded, what="three deliveries recorded as succeeded")
