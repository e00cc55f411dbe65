"""The subscriptions API: secrets shown once and encrypted, URL policy, test sends, rotation."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Engine

from moncreneau.app import create_app
from moncreneau.config import Settings
from moncreneau.delivery import jobs
from moncreneau.delivery.dispatcher import Dispatcher
from moncreneau.outbox import relay
from moncreneau.secretbox import SecretBox, resolve_key
from tests.conftest import Api, make_settings, new_organization

HOOK = {"url": "https://example.org/webhooks/moncreneau", "events": ["appointment.created"]}


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_creating_a_webhook_shows_its_secret_once(api: Api) -> None:
    created = api.post("/webhooks", HOOK)
    assert created.status_code == 201
    body = created.json
    assert body["secret"].startswith("whsec_")
    assert body["enabled"] is True
    assert body["version"] == "2.0"
    assert body["events"] == ["appointment.created"]
    assert set(body) >= {"id", "url", "events", "enabled", "version", "createdAt", "secret"}

    assert "secret" not in api.get(f"/webhooks/{body['id']}").json
    assert all("secret" not in w for w in api.get("/webhooks").json["data"])


def test_secrets_are_stored_encrypted(api: Api, engine: Engine) -> None:
    secret = api.post("/webhooks", HOOK).json["secret"]
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT secret FROM webhook_subscriptions")).scalar_one()
    assert secret not in stored
    assert secret[len("whsec_") :] not in stored


def test_a_webhook_pins_the_payload_version_it_asks_for(api: Api) -> None:
    assert api.post("/webhooks", {**HOOK, "version": "1.0"}).json["version"] == "1.0"
    refused = api.post("/webhooks", {**HOOK, "version": "3.0"})
    assert refused.status_code == 422
    assert "version" in refused.json["errors"]


@pytest.mark.parametrize(
    ("events", "status"),
    [
        (["*"], 201),
        (["appointment.cancelled", "webhook.disabled"], 201),
        ([], 422),
        (["appointment.exploded"], 422),
        (["webhook.test"], 422),
        ("appointment.created", 422),
    ],
)
def test_event_filters_are_checked(api: Api, events: Any, status: int) -> None:
    response = api.post("/webhooks", {"url": HOOK["url"], "events": events})
    assert response.status_code == status, response.json
    if status == 422:
        assert "events" in response.json["errors"]


@pytest.fixture
def strict_api(database_url: str) -> Api:
    """Production policy: https to public addresses only."""
    settings = Settings(database_url=database_url, secret_key="k", allow_private_urls=False)
    app = create_app(settings)
    return Api(app.test_client(), new_organization(app)["apiKey"])


@pytest.mark.parametrize(
    "url",
    [
        "http://example.org/hook",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[fd00::1]/hook",
        "https://[::7f00:1]/hook",
        "https://[::ffff:0:a9fe:a9fe]/hook",
        "https://[64:ff9b:1::a9fe:a9fe]/hook",
        "https://[fec0::1]/hook",
        "ftp://example.org/hook",
        "https://user:pass@example.org/hook",
        "not a url",
    ],
)
def test_without_the_operator_allowing_it_private_and_plain_http_urls_are_refused(
    strict_api: Api, url: str
) -> None:
    response = strict_api.post("/webhooks", {"url": url, "events": ["*"]})
    assert response.status_code == 422
    assert response.json["errors"]["url"]
    assert strict_api.get("/webhooks").json["data"] == []


def test_a_refused_host_is_said_not_to_be_public_without_the_address_it_resolves_to(
    strict_api: Api,
) -> None:
    response = strict_api.post("/webhooks", {"url": "https://vm.localhost./hook", "events": ["*"]})
    assert response.status_code == 422
    refused = strict_api.post("/webhooks", {"url": "https://127.1/hook", "events": ["*"]})
    assert refused.json["errors"]["url"] == ["127.1 is not a public address."]
    assert "127.0.0.1" not in str(refused.json)


def test_the_delivery_log_says_a_host_is_not_public_without_the_address_it_resolves_to(
    app: Flask, api: Api, department: dict[str, Any], settings: Settings
) -> None:
    """Accepted while private URLs were allowed, then sent by a worker that refuses them."""
    hook = api.post("/webhooks", {"url": "https://localhost:9/hook", "events": ["*"]}).json
    made = {"departmentId": department["id"], "dateTime": "2026-04-01T09:00:00", "name": "P"}
    assert api.post("/appointments", made).status_code == 201
    sessions = app.extensions["moncreneau"].sessions
    _more, ids = relay.relay_once(sessions, settings)
    strict = settings.replace(allow_private_urls=False)
    worker = jobs.DeliveryContext(
        strict, sessions, SecretBox(resolve_key(strict)), Dispatcher(sessions, strict)
    )
    assert jobs.deliver_with(worker, ids) == 1
    assert worker.dispatcher.drain(10)
    [delivery] = api.get(f"/webhooks/{hook['id']}/deliveries").json["data"]
    attempts = api.get(f"/webhooks/{hook['id']}/deliveries/{delivery['id']}").json["attempts"]
    errors = [attempt["error"] for attempt in attempts] + [delivery["lastError"]]
    assert errors == ["connection failed: localhost is not a public address"] * 2
    assert all("127.0.0.1" not in error and "::1" not in error for error in errors)


def test_the_operator_can_allow_loopback_http_urls(api: Api) -> None:
    response = api.post("/webhooks", {"url": "http://127.0.0.1:9/hook", "events": ["*"]})
    assert response.status_code == 201


def test_patch_changes_only_what_is_sent_and_checks_it(api: Api) -> None:
    hook = api.post("/webhooks", HOOK).json
    changed = api.patch(
        f"/webhooks/{hook['id']}", {"events": ["*"], "description": "all", "enabled": False}
    )
    assert changed.status_code == 200
    assert (changed.json["events"], changed.json["description"]) == (["*"], "all")
    assert changed.json["enabled"] is False
    assert changed.json["url"] == HOOK["url"]
    assert api.patch(f"/webhooks/{hook['id']}", {"url": "gopher://x"}).status_code == 422
    assert api.patch(f"/webhooks/{hook['id']}", {"secret": "whsec_x"}).status_code == 422
    assert api.get(f"/webhooks/{hook['id']}").json["url"] == HOOK["url"]


def test_a_deleted_webhook_is_gone(api: Api) -> None:
    hook = api.post("/webhooks", HOOK).json
    assert api.delete(f"/webhooks/{hook['id']}").status_code == 204
    assert api.get(f"/webhooks/{hook['id']}").status_code == 404
    assert api.delete(f"/webhooks/{hook['id']}").status_code == 404
    assert api.get("/webhooks").json["data"] == []


@pytest.fixture
def capped_app(database_url: str) -> Any:
    app = create_app(make_settings(database_url, max_webhooks_per_organization=3))
    yield app
    app.extensions["moncreneau"].sessions.kw["bind"].dispose()


def test_an_organization_at_its_webhook_limit_gets_a_409_and_nothing_is_created(
    capped_app: Flask,
) -> None:
    api = Api(capped_app.test_client(), new_organization(capped_app)["apiKey"])
    other = Api(capped_app.test_client(), new_organization(capped_app, "Autre")["apiKey"])
    created = [api.post("/webhooks", HOOK) for _ in range(3)]
    assert [r.status_code for r in created] == [201, 201, 201]

    refused = api.post("/webhooks", HOOK)

    assert refused.status_code == 409, refused.json
    assert refused.json["code"] == 409
    assert "(3)" in refused.json["message"]
    assert len(api.get("/webhooks").json["data"]) == 3
    assert other.post("/webhooks", HOOK).status_code == 201

    # a deleted webhook no longer counts; a disabled one still does
    assert api.patch(f"/webhooks/{created[0].json['id']}", {"enabled": False}).status_code == 200
    assert api.post("/webhooks", HOOK).status_code == 409
    assert api.delete(f"/webhooks/{created[1].json['id']}").status_code == 204
    assert api.post("/webhooks", HOOK).status_code == 201
    assert api.post("/webhooks", HOOK).status_code == 409


def test_a_test_send_creates_one_delivery_of_a_webhook_test_event(api: Api, engine: Engine) -> None:
    hook = api.post("/webhooks", {**HOOK, "events": ["*"]}).json
    sent = api.post(f"/webhooks/{hook['id']}/test")
    assert sent.status_code == 202
    delivery_id = sent.json["deliveryId"]
    assert delivery_id.startswith("msg_")
    delivery = api.get(f"/webhooks/{hook['id']}/deliveries/{delivery_id}").json
    assert delivery["eventType"] == "webhook.test"
    assert delivery["payload"]["type"] == "webhook.test"
    assert delivery["payload"]["id"] == sent.json["eventId"]
    assert delivery["status"] in ("pending", "succeeded", "failed")
    assert _count(engine, "deliveries") == 1


def test_rotating_the_secret_returns_a_new_one_with_a_grace_period(api: Api) -> None:
    hook = api.post("/webhooks", HOOK).json
    rotated = api.post(f"/webhooks/{hook['id']}/rotate-secret")
    assert rotated.status_code == 200
    assert rotated.json["secret"].startswith("whsec_")
    assert rotated.json["secret"] != hook["secret"]
    assert rotated.json["previousSecretExpiresAt"] is not None


def test_another_organizations_webhooks_are_invisible(app: Flask, api: Api) -> None:
    hook = api.post("/webhooks", HOOK).json
    other = Api(app.test_client(), new_organization(app, "Other")["apiKey"])
    not_found = other.get(f"/webhooks/{hook['id']}")
    assert not_found.status_code == 404
    for call in (
        other.patch(f"/webhooks/{hook['id']}", {"enabled": False}),
        other.delete(f"/webhooks/{hook['id']}"),
        other.post(f"/webhooks/{hook['id']}/test"),
        other.post(f"/webhooks/{hook['id']}/rotate-secret"),
        other.get(f"/webhooks/{hook['id']}/deliveries"),
    ):
        assert call.status_code == 404
        assert call.json == not_found.json | {"message": call.json["message"]}
    assert other.get("/webhooks").json["data"] == []
    assert api.get(f"/webhooks/{hook['id']}").json["enabled"] is True


def test_a_delivery_of_another_webhook_is_not_found_under_this_one(api: Api) -> None:
    first = api.post("/webhooks", HOOK).json
    second = api.post("/webhooks", HOOK).json
    sent = api.post(f"/webhooks/{first['id']}/test").json
    assert api.get(f"/webhooks/{second['id']}/deliveries/{sent['deliveryId']}").status_code == 404
    retry = api.post(f"/webhooks/{second['id']}/deliveries/{sent['deliveryId']}/retry")
    assert retry.status_code == 404


def test_replay_needs_a_window_with_offsets(api: Api) -> None:
    hook = api.post("/webhooks", HOOK).json
    naive = api.post(
        f"/webhooks/{hook['id']}/replay",
        {"from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00"},
    )
    assert naive.status_code == 422
    backwards = api.post(
        f"/webhooks/{hook['id']}/replay",
        {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
    )
    assert backwards.status_code == 422
    empty = api.post(
        f"/webhooks/{hook['id']}/replay",
        {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"},
    )
    assert (empty.status_code, empty.json) == (
        202,
        {"count": 0, "deliveryIds": [], "hasMore": False},
    )


def test_a_disabled_webhook_refuses_test_sends_retries_and_replays_until_enabled(
    api: Api,
) -> None:
    hook = api.post("/webhooks", HOOK).json
    sent = api.post(f"/webhooks/{hook['id']}/test").json
    api.patch(f"/webhooks/{hook['id']}", {"enabled": False})
    window = {"from": "2020-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z"}
    for call in (
        api.post(f"/webhooks/{hook['id']}/test"),
        api.post(f"/webhooks/{hook['id']}/deliveries/{sent['deliveryId']}/retry"),
        api.post(f"/webhooks/{hook['id']}/replay", window),
    ):
        assert call.status_code == 409
        assert "disabled" in call.json["message"]
    api.patch(f"/webhooks/{hook['id']}", {"enabled": True})
    assert api.post(f"/webhooks/{hook['id']}/test").status_code == 202


def test_an_api_without_redis_sends_nothing_itself(api: Api, engine: Engine) -> None:
    hook = api.post("/webhooks", HOOK).json
    api.post(f"/webhooks/{hook['id']}/test")
    with engine.connect() as conn:
        attempts = conn.execute(text("SELECT count(*) FROM delivery_attempts")).scalar_one()
        status = conn.execute(text("SELECT status FROM deliveries")).scalar_one()
    assert (attempts, status) == (0, "pending")


@pytest.mark.parametrize("kind", ["webhook.test", "webhook.disabled", "appointment.created"])
def test_the_event_log_filters_on_every_event_type(api: Api, kind: str) -> None:
    hook = api.post("/webhooks", HOOK).json
    api.post(f"/webhooks/{hook['id']}/test")
    listed = api.get(f"/events?type={kind}")
    assert listed.status_code == 200
    assert {e["type"] for e in listed.json["data"]} <= {kind}
    assert len(listed.json["data"]) == (1 if kind == "webhook.test" else 0)


def test_a_thin_webhook_gets_payloads_without_personal_data(
    api: Api, department: dict[str, Any]
) -> None:
    hook = api.post("/webhooks", {**HOOK, "events": ["*"], "payload": "thin"}).json
    assert hook["payload"] == "thin"
    api.post(f"/webhooks/{hook['id']}/test")
    assert api.patch(f"/webhooks/{hook['id']}", {"payload": "bulky"}).status_code == 422
    assert api.get(f"/webhooks/{hook['id']}").json["payload"] == "thin"


def test_an_idempotent_webhook_creation_keeps_its_secret_sealed_and_replays_it(
    api: Api, engine: Engine
) -> None:
    first = api.post("/webhooks", HOOK, headers={"Idempotency-Key": "hook-1"})
    again = api.post("/webhooks", HOOK, headers={"Idempotency-Key": "hook-1"})
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT response_body FROM idempotency_keys")).scalar_one()
    assert first.json["secret"] not in stored
    assert "whsec_" not in stored


@pytest.mark.parametrize("field", ["name", "notes", "email"])
def test_a_lone_surrogate_in_a_string_is_a_422_not_a_500(
    api: Api, department: dict[str, Any], field: str
) -> None:
    body = {"departmentId": department["id"], "dateTime": "2026-02-01T10:00:00", "name": "A"}
    body[field] = "x\ud800y" if field != "email" else "a\ud800@example.org"
    response = api.post("/appointments", body)
    assert response.status_code == 422
    assert field in response.json["errors"]


def test_the_delivery_log_filters_on_event_type(api: Api, department: dict[str, Any]) -> None:
    hook = api.post("/webhooks", {**HOOK, "events": ["*"]}).json
    sent = api.post(f"/webhooks/{hook['id']}/test").json
    booked = {"departmentId": department["id"], "dateTime": "2026-02-01T10:00:00", "name": "A"}
    assert api.post("/appointments", booked).status_code == 201
    tests = api.get(f"/webhooks/{hook['id']}/deliveries?eventType=webhook.test").json["data"]
    assert [d["id"] for d in tests] == [sent["deliveryId"]]
    unknown = api.get(f"/webhooks/{hook['id']}/deliveries?eventType=appointment.exploded")
    assert unknown.status_code == 422
    assert "eventType" in unknown.json["errors"]


def test_ordering_is_none_by_default_and_can_be_asked_for_read_and_changed(api: Api) -> None:
    plain = api.post("/webhooks", HOOK).json
    assert plain["ordering"] == "none"
    ordered = api.post("/webhooks", {**HOOK, "ordering": "appointment"})
    assert ordered.status_code == 201
    assert ordered.json["ordering"] == "appointment"
    assert api.get(f"/webhooks/{ordered.json['id']}").json["ordering"] == "appointment"
    assert [h["ordering"] for h in api.get("/webhooks").json["data"]] == ["none", "appointment"]
    changed = api.patch(f"/webhooks/{plain['id']}", {"ordering": "appointment"})
    assert changed.status_code == 200 and changed.json["ordering"] == "appointment"
    assert api.patch(f"/webhooks/{plain['id']}", {"description": "x"}).json["ordering"] == (
        "appointment"
    ), "a change that does not name it keeps it"


@pytest.mark.parametrize("bad", ["event", "APPOINTMENT", "", None, 1, ["appointment"]])
def test_an_unknown_ordering_is_a_422_and_changes_nothing(
    api: Api, engine: Engine, bad: Any
) -> None:
    hook = api.post("/webhooks", {**HOOK, "ordering": "appointment"}).json
    refused = api.post("/webhooks", {**HOOK, "ordering": bad})
    assert refused.status_code == 422
    assert "ordering" in str(refused.json)
    assert _count(engine, "webhook_subscriptions") == 1
    changed = api.patch(f"/webhooks/{hook['id']}", {"ordering": bad, "description": "new"})
    assert changed.status_code == 422
    after = api.get(f"/webhooks/{hook['id']}").json
    assert (after["ordering"], after["description"]) == ("appointment", None)
