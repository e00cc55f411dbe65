"""Rate limits per API key: a 429 in the error shape, and one tenant's burst spares another."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from moncreneau.app import create_app
from moncreneau.config import ConfigError, Settings
from tests import services
from tests.conftest import Api, make_settings, new_organization


@pytest.fixture
def limited(database_url: str) -> Flask:
    return create_app(make_settings(database_url, rate_limit="5 per minute"))


def test_a_key_over_its_limit_gets_a_429_with_retry_after_and_writes_nothing(
    limited: Flask,
) -> None:
    api = Api(limited.test_client(), new_organization(limited)["apiKey"])
    answers = [api.post("/departments", {"name": f"D{n}", "timezone": "UTC"}) for n in range(7)]
    assert [a.status_code for a in answers] == [201] * 5 + [429] * 2
    refused = answers[-1]
    assert refused.json["code"] == 429
    assert refused.json["status"] == "Too Many Requests"
    assert "retry" in refused.json["message"].lower()
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.headers["X-RateLimit-Limit"] == "5"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert answers[0].headers["X-RateLimit-Remaining"] == "4"


def test_one_tenants_burst_does_not_touch_another_tenant(limited: Flask) -> None:
    noisy = Api(limited.test_client(), new_organization(limited, "Noisy")["apiKey"])
    quiet = Api(limited.test_client(), new_organization(limited, "Quiet")["apiKey"])
    for _ in range(8):
        noisy.get("/departments")
    assert noisy.get("/departments").status_code == 429
    assert quiet.get("/departments").status_code == 200


def test_the_spec_docs_and_health_are_never_limited(limited: Flask) -> None:
    client = limited.test_client()
    for _ in range(8):
        assert client.get("/healthz").status_code == 200
        assert client.get("/api/v1/openapi.json").status_code == 200


def test_api_processes_share_one_limit_through_redis(database_url: str) -> None:
    problem = services.redis_problem()
    if problem:
        services.unavailable("Redis", problem)
    settings = make_settings(database_url, rate_limit="5 per minute", redis_url=services.REDIS_URL)
    first, second = create_app(settings), create_app(settings)
    key = new_organization(first)["apiKey"]
    answers: list[Any] = []
    for app in (first, second, first, second, first, second):
        answers.append(Api(app.test_client(), key).get("/departments").status_code)
    assert answers == [200] * 5 + [429]


def test_the_limit_comes_from_the_environment() -> None:
    assert Settings.from_env({"MONCRENEAU_RATE_LIMIT": "10 per second"}).rate_limit == (
        "10 per second"
    )
    assert Settings.from_env({"MONCRENEAU_RATE_LIMIT": ""}).rate_limit == ""
    with pytest.raises(ConfigError, match="MONCRENEAU_RATE_LIMIT"):
        Settings.from_env({"MONCRENEAU_RATE_LIMIT": "lots"})


def _from(app: Flask, address: str, key: str = "") -> Api:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return Api(client, key)


def _key_lookups(app: Flask) -> list[str]:
    """Every query of the api_keys table, as the database receives them."""
    seen: list[str] = []
    engine = app.extensions["moncreneau"].sessions.kw["bind"]

    def _seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "api_keys" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", _seen)
    return seen


def test_requests_forging_a_victims_key_prefix_do_not_spend_the_victims_budget(
    limited: Flask,
) -> None:
    victim = new_organization(limited, "Victim")["apiKey"]
    prefix = "_".join(victim.split("_")[:2])
    forger = _from(limited, "203.0.113.7", f"{prefix}_forged")
    answers = [forger.get("/departments").status_code for _ in range(8)]
    assert answers == [401] * 5 + [429] * 3
    real = _from(limited, "198.51.100.20", victim).get("/departments")
    assert real.status_code == 200
    assert real.headers["X-RateLimit-Remaining"] == "4"


def test_a_flood_of_made_up_keys_from_one_address_is_refused_before_any_lookup(
    limited: Flask,
) -> None:
    lookups = _key_lookups(limited)
    flooder = _from(limited, "203.0.113.8")
    statuses = []
    for n in range(5):
        flooder.key = f"mck_{n:08d}_random"
        statuses.append(flooder.get("/departments").status_code)
    assert statuses == [401] * 5
    assert len(lookups) == 5
    for n in range(5, 10):
        flooder.key = f"mck_{n:08d}_random"
        refused = flooder.get("/departments")
        assert refused.status_code == 429
        assert refused.json["code"] == 429
        assert int(refused.headers["Retry-After"]) > 0
    assert len(lookups) == 5
    # Without any key, the same address's budget.
    flooder.key = ""
    assert flooder.client.get("/api/v1/departments").status_code == 429
    # Another address is not concerned.
    assert _from(limited, "203.0.113.9", "mck_00000000_random").get("/departments").status_code == (
        401
    )


def test_a_valid_key_spends_its_own_budget_and_not_its_addresss(limited: Flask) -> None:
    key = new_organization(limited)["apiKey"]
    tenant = _from(limited, "198.51.100.30", key)
    assert [tenant.get("/departments").status_code for _ in range(6)] == [200] * 5 + [429]
    # The address itself still has its whole budget for requests without a valid key.
    stranger = _from(limited, "198.51.100.30", "mck_unknown0_x")
    answer = stranger.get("/departments")
    assert answer.status_code == 401
    assert answer.headers["X-RateLimit-Remaining"] == "4"


def test_behind_trusted_proxies_the_client_address_is_the_forwarded_one(
    database_url: str,
) -> None:
    app = create_app(make_settings(database_url, rate_limit="2 per minute", trusted_proxies=1))
    client = app.test_client()

    def status(forwarded_for: str) -> int:
        headers = {"X-API-Key": "mck_unknown0_x", "X-Forwarded-For": forwarded_for}
        return client.get("/api/v1/departments", headers=headers).status_code

    assert [status("203.0.113.10") for _ in range(3)] == [401, 401, 429]
    assert status("203.0.113.11") == 401


def test_a_key_this_process_knows_is_served_even_from_an_address_over_its_budget(
    database_url: str,
) -> None:
    app = create_app(make_settings(database_url, rate_limit="3 per minute", key_cache_seconds=60))
    key = new_organization(app)["apiKey"]
    shared = "198.51.100.40"
    assert _from(app, shared, key).get("/departments").status_code == 200
    stranger = _from(app, shared, "mck_unknown0_x")
    assert [stranger.get("/departments").status_code for _ in range(4)] == [401] * 3 + [429]
    assert _from(app, shared, key).get("/departments").status_code == 200
    # A key this process has not seen is not looked up from there.
    other = new_organization(app, "Other")["apiKey"]
    assert _from(app, shared, other).get("/departments").status_code == 429
    assert _from(app, "198.51.100.41", other).get("/departments").status_code == 200


def test_health_checks_between_calls_neither_spend_nor_reset_a_shared_budget(
    database_url: str,
) -> None:
    problem = services.redis_problem()
    if problem:
        services.unavailable("Redis", problem)
    settings = make_settings(database_url, rate_limit="3 per minute", redis_url=services.REDIS_URL)
    first, second = create_app(settings), create_app(settings)
    key = new_organization(first)["apiKey"]
    answers = []
    for app in (first, second, first, second):
        client = app.test_client()
        for path in ("/healthz", "/readyz", "/api/v1/openapi.json"):
            assert client.get(path).status_code == 200
        answers.append(Api(client, key).get("/departments").status_code)
    assert answers == [200] * 3 + [429]
