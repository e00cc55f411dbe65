"""Fixtures: every storage test runs on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from werkzeug.serving import make_server

from moncreneau.app import create_app
from moncreneau.auth import keys
from moncreneau.config import Settings
from moncreneau.db import Base, make_engine, make_session_factory
from moncreneau.ops.migrate import upgrade
from tests import services

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied for each test (migrating is the slow part)."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """One migrated throwaway PostgreSQL database per test process, emptied between tests."""
    with services.throwaway_database("moncreneau_test") as url:
        yield url


def _truncate(url: str) -> None:
    engine = make_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "moncreneau.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    _truncate(url)
    return url


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """For tests that only make sense with concurrent writers on PostgreSQL."""
    _truncate(postgres_database)
    return postgres_database


def make_settings(database_url: str, **overrides: Any) -> Settings:
    base = Settings(
        database_url=database_url,
        testing=True,
        allow_private_urls=True,
        retry_schedule=(0.0, 1.0, 2.0),
        secret_key="test-secret-key-for-encryption-000",
        # The suite's own bursts would hit the default; tests/api/test_rate_limits.py sets one.
        rate_limit="",
        # Revocations take effect at once; tests/api/test_key_cache.py covers the cache.
        key_cache_seconds=0.0,
    )
    return base.replace(**overrides)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    application = create_app(settings)
    yield application
    application.extensions["moncreneau"].sessions.kw["bind"].dispose()


@pytest.fixture
def engine(app: Flask) -> Engine:
    bound: Engine = app.extensions["moncreneau"].sessions.kw["bind"]
    return bound


class Api:
    """A test client that speaks JSON with an organization's key."""

    def __init__(self, client: FlaskClient, key: str) -> None:
        self.client = client
        self.key = key

    def _call(self, method: str, path: str, json: Any = None, **kwargs: Any) -> Any:
        headers = {"X-API-Key": self.key, **kwargs.pop("headers", {})}
        return self.client.open(
            f"/api/v1{path}", method=method, json=json, headers=headers, **kwargs
        )

    def get(self, path: str, **kwargs: Any) -> Any:
        return self._call("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self._call("POST", path, json, **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self._call("PATCH", path, json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self._call("DELETE", path, **kwargs)


def book_move_cancel(
    api: Api, department: dict[str, Any], hour: int, name: str = "P", day: str = "2026-05-04"
) -> int:
    """Book an appointment at `hour`, move it half an hour later, cancel it: three events."""
    made = api.post(
        "/appointments",
        {"departmentId": department["id"], "dateTime": f"{day}T{hour:02d}:00:00", "name": name},
    )
    assert made.status_code == 201, made.json
    appointment: int = made.json["id"]
    moved = {"dateTime": f"{day}T{hour:02d}:30:00"}
    assert api.patch(f"/appointments/{appointment}", moved).status_code == 200
    assert api.post(f"/appointments/{appointment}/cancel", {"reason": "x"}).status_code == 200
    return appointment


def new_organization(app: Flask, name: str = "Clinique Exemple") -> dict[str, Any]:
    factory = make_session_factory(app.extensions["moncreneau"].sessions.kw["bind"])
    with factory() as db:
        org = keys.create_organization(db, name)
        db.commit()
    return org


@pytest.fixture
def org(app: Flask) -> dict[str, Any]:
    return new_organization(app)


@pytest.fixture
def api(app: Flask, org: dict[str, Any]) -> Api:
    return Api(app.test_client(), org["apiKey"])


@pytest.fixture
def other_api(app: Flask) -> Api:
    """Another organization, for tenant isolation."""
    return Api(app.test_client(), new_organization(app, "Autre Clinique")["apiKey"])


@pytest.fixture
def department(api: Api) -> dict[str, Any]:
    response = api.post(
        "/departments",
        {"name": "Radiologie", "timezone": "Europe/Paris", "slotMinutes": 30, "capacity": 1},
    )
    assert response.status_code == 201, response.json
    body: dict[str, Any] = response.json
    return body


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The app on a real loopback HTTP server with a thread per request."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Let fixtures see whether the test failed (to print process logs)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
