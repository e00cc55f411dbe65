"""Checks a received delivery the way integrators do: three independent verifiers."""

from __future__ import annotations

import hashlib
import hmac
import time

import standardwebhooks
import svix.webhooks

from tests.receiver import Received


def plain_hmac_matches(request: Received, secret: str) -> bool:
    """The integrators' guide's check, as written: sha256= + hex HMAC of the raw body."""
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    offered = request.header("X-Moncreneau-Signature").split(",")
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


def assert_verified(request: Received, secret: str) -> None:
    """Every signature scheme verifies, with the libraries integrators use unchanged."""
    standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    svix.webhooks.Webhook(secret).verify(request.body, request.headers)
    assert plain_hmac_matches(request, secret), "X-Moncreneau-Signature does not match"
    body = request.json
    assert request.header("Content-Type") == "application/json"
    assert request.header("X-Moncreneau-Event") == body["type"]
    assert request.header("X-Webhook-Version") == body["version"]
    assert request.header("webhook-id") == request.header("X-Moncreneau-Delivery")
    assert request.header("webhook-timestamp") == request.header("X-Moncreneau-Timestamp")
    assert abs(int(request.header("X-Moncreneau-Timestamp")) - time.time()) < 60
    assert int(request.header("X-Moncreneau-Attempt")) >= 1
