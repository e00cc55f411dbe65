"""A rotated secret: deliveries verify with either secret in the grace period, then the new only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import standardwebhooks
import svix.webhooks
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import Api
from tests.e2e.conftest import Processes
from tests.receiver import Received, Receiver
from tests.verify import assert_verified, plain_hmac_matches


def _send_test(api: Api, receiver: Receiver, hook: dict[str, Any]) -> Received:
    """A `webhook.test` delivery, as the receiver got it."""
    sent = api.post(f"/webhooks/{hook['id']}/test")
    assert sent.status_code == 202, sent.json
    delivery_id = sent.json["deliveryId"]
    got = receiver.wait_for(
        lambda r: any(x.headers.get("X-Moncreneau-Delivery") == delivery_id for x in r)
    )
    [request] = [x for x in got if x.headers.get("X-Moncreneau-Delivery") == delivery_id]
    return request


def _assert_rejected(request: Received, secret: str) -> None:
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    with pytest.raises(svix.webhooks.WebhookVerificationError):
        svix.webhooks.Webhook(secret).verify(request.body, request.headers)
    assert not plain_hmac_matches(request, secret)


def test_after_a_rotation_deliveries_verify_with_either_secret_until_the_grace_period_ends(
    api: Api, engine: Engine, receiver: Receiver, processes: Processes
) -> None:
    hook = api.post("/webhooks", {"url": receiver.url("hook"), "events": ["*"]}).json
    old = hook["secret"]
    processes.start("relay")
    processes.start("worker")
    before = _send_test(api, receiver, hook)
    assert_verified(before, old)

    rotated = api.post(f"/webhooks/{hook['id']}/rotate-secret")

    assert rotated.status_code == 200, rotated.json
    new = rotated.json["secret"]
    assert new.startswith("whsec_")
    assert new != old
    grace = datetime.fromisoformat(rotated.json["previousSecretExpiresAt"]) - datetime.now(UTC)
    assert timedelta(hours=23) < grace <= timedelta(hours=24)  # the default grace period
    assert "secret" not in api.get(f"/webhooks/{hook['id']}").json

    during = _send_test(api, receiver, hook)
    assert_verified(during, old)
    assert_verified(during, new)
    assert len(during.header("X-Moncreneau-Signature").split(",")) == 2
    assert len(during.header("webhook-signature").split(" ")) == 2

    # The API of this test process rotated with the default 24 h grace period; rather than
    # wait a day, the test ends it in the database, as if the 24 hours had passed.
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE webhook_subscriptions SET previous_secret_expires_at = :past WHERE id = :id"
            ),
            {"past": datetime.now(UTC) - timedelta(seconds=1), "id": hook["id"]},
        )

    after = _send_test(api, receiver, hook)
    assert_verified(after, new)
    _assert_rejected(after, old)
    assert len(after.header("X-Moncreneau-Signature").split(",")) == 1
    assert len(after.header("webhook-signature").split(" ")) == 1


def test_rotating_twice_in_a_row_keeps_the_secret_just_replaced_verifying(
    api: Api, receiver: Receiver, processes: Processes
) -> None:
    hook = api.post("/webhooks", {"url": receiver.url("hook"), "events": ["*"]}).json
    processes.start("relay")
    processes.start("worker")

    second = api.post(f"/webhooks/{hook['id']}/rotate-secret").json["secret"]
    third = api.post(f"/webhooks/{hook['id']}/rotate-secret").json["secret"]

    request = _send_test(api, receiver, hook)
    assert_verified(request, third)
    assert_verified(request, second)
