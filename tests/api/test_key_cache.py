"""A process trusts a key it has seen for a few seconds, and asks the database again after."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from moncreneau.app import create_app
from moncreneau.auth import keys
from tests.conftest import Api, make_settings, new_organization

TTL = 0.5


@pytest.fixture
def cached_app(database_url: str) -> Iterator[Flask]:
    application = create_app(make_settings(database_url, key_cache_seconds=TTL))
    yield application
    application.extensions["moncreneau"].sessions.kw["bind"].dispose()


def api_key_lookups(app: Flask, call: Any) -> int:
    """How many statements read the api_keys table while `call` runs."""
    engine = app.extensions["moncreneau"].sessions.kw["bind"]
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM api_keys" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return len(seen)


def test_a_key_seen_lately_is_trusted_without_a_lookup(cached_app: Flask) -> None:
    api = Api(cached_app.test_client(), new_organization(cached_app)["apiKey"])
    assert api_key_lookups(cached_app, lambda: api.get("/departments")) == 1
    assert api_key_lookups(cached_app, lambda: api.get("/departments")) == 0
    time.sleep(TTL + 0.1)
    assert api_key_lookups(cached_app, lambda: api.get("/departments")) == 1


def test_a_revoked_key_is_refused_once_the_cache_time_has_passed(cached_app: Flask) -> None:
    org = new_organization(cached_app)
    api = Api(cached_app.test_client(), org["apiKey"])
    assert api.get("/departments").status_code == 200
    with cached_app.extensions["moncreneau"].sessions() as db:
        keys.revoke(db, org["keyPrefix"])
        db.commit()
    deadline = time.monotonic() + TTL + 0.1
    while api.get("/departments").status_code == 200:
        assert time.monotonic() < deadline, "a revoked key still works after the cache time"
        time.sleep(0.05)
    assert api.get("/departments").status_code == 401


def test_unknown_keys_are_looked_up_every_time(cached_app: Flask) -> None:
    forged = Api(cached_app.test_client(), "mck_abcdefgh_" + "x" * 32)
    for _ in range(3):
        assert api_key_lookups(cached_app, lambda: forged.get("/departments")) == 1


def test_a_new_key_works_at_once(cached_app: Flask) -> None:
    org = new_organization(cached_app)
    assert Api(cached_app.test_client(), org["apiKey"]).get("/departments").status_code == 200
    with cached_app.extensions["moncreneau"].sessions() as db:
        other = keys.issue(db, org["id"], name="second")
        db.commit()
    assert Api(cached_app.test_client(), other.key).get("/departments").status_code == 200
