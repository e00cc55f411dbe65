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


def test_the_embedded_mode_erases_on_its_own_and_tells_the_webhooks(
    embedded: tuple[str, str], receiver: Receiver
) -> None:
    base, key = embedded
    call(base, key, "POST", "/webhooks", {"url": receiver.url("hook"), "events": ["*"]})
    department = call(base, key, "POST", "/departments", {"name": "R", "timezone": "UTC"})
    booking = {"departmentId": department["id"], "dateTime": "2026-02-01T10:00:00"}
    booked = call(
        base, key, "POST", "/appointments", {**booking, "name": "Ana", "email": "ana@example.org"}
    )

    erasure = call(base, key, "POST", "/erasures", {"email": "ana@example.org"})

    assert erasure["appointmentIds"] == [booked["id"]]
    wait_until(
        lambda: call(base, key, "GET", f"/erasures/{erasure['id']}")["status"] == "completed",
        what="the erasure completed by the embedded relay",
    )
    assert call(base, key, "GET", f"/appointments/{booked['id']}")["email"] is None
    got = receiver.wait_for(lambda r: any(x.json["type"] == "appointment.erased" for x in r))
    erased = [r.json for r in got if r.json["type"] == "appointment.erased"]
    assert erased[0]["data"]["object"]["id"] == booked["id"]
    assert erased[0]["data"]["object"]["email"] is None
