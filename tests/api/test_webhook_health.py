"""A webhook's health: the last day's attempts, the latest success and failure, what waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import update

from moncreneau.clock import iso_utc
from moncreneau.db import write_session
from moncreneau.delivery import store
from moncreneau.models import OPEN_DELIVERY, WebhookSubscription
from tests.conftest import Api

HOOK = {"url": "https://example.org/webhooks/moncreneau", "events": ["*"]}
EMPTY = {
    "attempts24h": 0,
    "successRate24h": None,
    "lastSuccessAt": None,
    "lastFailureAt": None,
    "lastError": None,
    "waiting": 0,
    "nextAttemptAt": None,
}


def _attempt(app: Flask, delivery_id: str, at: datetime, code: int, retry_at: datetime) -> None:
    """One attempt as a worker records it: claimed, then settled with this outcome."""
    with write_session(app.extensions["moncreneau"].sessions) as db:
        (claimed,) = store.claim(db, [delivery_id], datetime.now(UTC), timedelta(seconds=30))
        ok = 200 <= code < 300
        settlement = store.Settlement(
            claimed=claimed,
            started_at=at,
            duration_ms=12,
            status_code=code,
            error=None if ok else f"HTTP {code}",
            excerpt="",
            status=store.SUCCEEDED if ok else store.FAILED,
            next_attempt_at=None if ok else retry_at,
        )
        store.settle(db, [settlement], datetime.now(UTC))
        db.commit()


def _health(api: Api, hook: dict[str, Any]) -> dict[str, Any]:
    response = api.get(f"/webhooks/{hook['id']}")
    assert response.status_code == 200, response.json
    health: dict[str, Any] = response.json["health"]
    return health


def test_a_new_webhook_has_an_empty_health(api: Api) -> None:
    hook = api.post("/webhooks", HOOK).json
    assert _health(api, hook) == EMPTY


def test_health_counts_the_last_day_and_names_the_latest_failure(app: Flask, api: Api) -> None:
    hook = api.post("/webhooks", HOOK).json
    now = datetime.now(UTC).replace(microsecond=0)
    soon = now + timedelta(minutes=10)
    sent = [api.post(f"/webhooks/{hook['id']}/test").json["deliveryId"] for _ in range(4)]
    _attempt(app, sent[0], now - timedelta(hours=30), 200, soon)  # a day and more ago
    _attempt(app, sent[1], now - timedelta(hours=2), 200, soon)
    _attempt(app, sent[2], now - timedelta(hours=1), 200, soon)
    _attempt(app, sent[3], now - timedelta(minutes=5), 502, soon)

    assert _health(api, hook) == {
        "attempts24h": 3,
        "successRate24h": 0.6667,
        "lastSuccessAt": iso_utc(now - timedelta(hours=1)),
        "lastFailureAt": iso_utc(now - timedelta(minutes=5)),
        "lastError": "HTTP 502",
        "waiting": 1,
        "nextAttemptAt": iso_utc(soon),
    }

    # one not tried yet waits too, and is due now
    api.post(f"/webhooks/{hook['id']}/test")
    health = _health(api, hook)
    assert health["waiting"] == 2
    assert health["nextAttemptAt"] is not None and health["nextAttemptAt"] <= iso_utc(soon)


def test_a_disabled_webhook_has_no_next_attempt(api: Api) -> None:
    hook = api.post("/webhooks", HOOK).json
    api.post(f"/webhooks/{hook['id']}/test")
    assert _health(api, hook)["nextAttemptAt"] is not None
    api.patch(f"/webhooks/{hook['id']}", {"enabled": False})
    assert _health(api, hook) == {**EMPTY, "waiting": 1}


def test_health_is_only_for_the_webhooks_owner(api: Api, other_api: Api) -> None:
    hook = api.post("/webhooks", HOOK).json
    assert other_api.get(f"/webhooks/{hook['id']}").status_code == 404


def test_the_open_delivery_index_names_exactly_the_open_statuses() -> None:
    assert "status IN ({})".format(", ".join(f"'{s}'" for s in store.OPEN)) == OPEN_DELIVERY


def test_a_paused_webhooks_next_attempt_is_the_end_of_its_pause(app: Flask, api: Api) -> None:
    hook = api.post("/webhooks", HOOK).json
    now = datetime.now(UTC).replace(microsecond=0)
    sent = api.post(f"/webhooks/{hook['id']}/test").json["deliveryId"]
    _attempt(app, sent, now, 503, now + timedelta(seconds=5))
    until = now + timedelta(hours=2)
    with write_session(app.extensions["moncreneau"].sessions) as db:
        db.execute(
            update(WebhookSubscription)
            .where(WebhookSubscription.id == hook["id"])
            .values(paused_until=until)
        )
        db.commit()
    health = _health(api, hook)
    assert (health["waiting"], health["nextAttemptAt"]) == (1, iso_utc(until))
