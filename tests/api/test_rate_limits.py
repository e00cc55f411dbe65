"""Rate limits per API key: a 429 in the error shape, and one tenant's burst spares another."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

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
