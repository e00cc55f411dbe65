"""`moncreneau.client` on its own: what it imports, how it reads headers and bodies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from moncreneau.client import Webhook, retry_after
from tests.unit.test_receiver import prove

IMPORT_PROOF = """
from moncreneau.client import ApiError, Client

with Client("http://127.0.0.1:9", "mck_key", max_retries=0) as client:
    pass
loaded = sorted(name for name in sys.modules if name.partition(".")[0] in FORBIDDEN)
ours = sorted(name for name in sys.modules if name.partition(".")[0] == "moncreneau")
print(json.dumps({"loaded": loaded, "ours": ours}))
"""


def test_the_client_imports_no_flask_sqlalchemy_database_driver_nor_server_module() -> None:
    """In a fresh interpreter that refuses to import any of them."""
    result = prove(IMPORT_PROOF)

    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome == {
        "loaded": [],
        "ours": ["moncreneau", "moncreneau.client", "moncreneau.retry_after"],
    }


def test_the_client_import_proof_would_catch_a_server_module() -> None:
    proof = IMPORT_PROOF.replace(
        "from moncreneau.client", "import moncreneau.api.errors\nfrom moncreneau.client"
    )
    result = prove(proof)

    assert result.returncode != 0
    assert "the import proof refuses" in result.stderr


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)

    assert retry_after("120", lambda: now) == 120.0
    assert retry_after(" 3 ", lambda: now) == 3.0
    assert retry_after("Sun, 01 Feb 2026 09:00:30 GMT", lambda: now) == 30.0
    assert retry_after("Sun, 01 Feb 2026 08:00:00 GMT", lambda: now) == 0.0
    assert retry_after("-5", lambda: now) is None
    assert retry_after("²", lambda: now) is None
    assert retry_after("Fri, 01 Jan 99999999999999999999 00:00:00 GMT", lambda: now) is None
    assert retry_after("soon", lambda: now) is None
    assert retry_after(None) is None


def test_a_webhook_passes_its_health_through_when_the_api_sends_it() -> None:
    raw = {
        "id": 1,
        "url": "https://example.org/hook",
        "events": ["*"],
        "enabled": True,
        "version": "2.0",
        "createdAt": "2026-02-01T09:00:00Z",
        "updatedAt": "2026-02-01T09:00:00Z",
        "health": {
            "attempts24h": 12,
            "successRate24h": 0.75,
            "lastSuccessAt": "2026-02-01T08:00:00Z",
            "lastFailureAt": "2026-02-01T08:30:00Z",
            "lastError": "HTTP 500",
            "waiting": 3,
            "nextAttemptAt": None,
        },
    }

    health = Webhook.from_json(raw).health

    assert health is not None
    assert (health.attempts_24h, health.success_rate_24h, health.waiting) == (12, 0.75, 3)
    assert health.last_failure_at == datetime(2026, 2, 1, 8, 30, tzinfo=UTC)
    assert health.last_success_at == health.last_failure_at - timedelta(minutes=30)
    assert (health.last_error, health.next_attempt_at) == ("HTTP 500", None)
    assert health.raw == raw["health"]
    assert Webhook.from_json({**raw, "health": None}).health is None
