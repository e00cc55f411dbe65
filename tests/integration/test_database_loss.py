"""A connection lost at any point of a request: a 503 in the error shape and no half-change."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Engine

from moncreneau.api.web import session
from moncreneau.app import create_app
from moncreneau.db import CONNECT_TIMEOUT, make_engine, make_session_factory
from tests.conftest import Api, make_settings
from tests.services import free_port

pytestmark = pytest.mark.postgres

UNAVAILABLE = {
    "code": 503,
    "status": "Service Unavailable",
    "message": "The service is temporarily unavailable; retry shortly.",
}
BOOKING = {"dateTime": "2026-03-02T09:00:00+01:00", "name": "Ana"}


@pytest.fixture
def app(postgres_url: str) -> Iterator[Flask]:
    application = create_app(make_settings(postgres_url))
    yield application
    application.extensions["moncreneau"].sessions.kw["bind"].dispose()


@pytest.fixture
def department_id(api: Api) -> int:
    made = api.post("/departments", {"name": "Radiologie", "timezone": "Europe/Paris"})
    assert made.status_code == 201, made.json
    return int(made.json["id"])


def _terminate(engine: Engine, pid: int) -> None:
    """End a backend from another connection, as a server restart or an operator would."""
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()


def _terminate_request_connection(app: Flask) -> None:
    pid = session().execute(text("SELECT pg_backend_pid()")).scalar_one()
    _terminate(app.extensions["moncreneau"].sessions.kw["bind"], pid)


def _counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("appointments", "events", "idempotency_keys")
        )


def _assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.json == UNAVAILABLE
    assert response.headers["Retry-After"] == "1"


def test_a_pooled_connection_the_server_ended_is_replaced_before_use(
    app: Flask, api: Api, postgres_url: str, department_id: int
) -> None:
    other = make_engine(postgres_url)
    with other.connect() as conn:
        pids = conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalars()
        for pid in pids:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    other.dispose()
    made = api.post("/appointments", {"departmentId": department_id, **BOOKING})
    assert made.status_code == 201, made.json


def test_a_connection_lost_in_the_view_answers_503_and_commits_nothing(
    app: Flask, api: Api, engine: Engine, department_id: int
) -> None:
    before = _counts(engine)
    # Registered after the app's own hooks: runs once the caller is authenticated.
    app.before_request_funcs[None].append(lambda: _terminate_request_connection(app))
    _assert_unavailable(
        api.post(
            "/appointments",
            {"departmentId": department_id, **BOOKING},
            headers={"Idempotency-Key": "lost-in-view"},
        )
    )
    assert _counts(engine) == before


def test_a_connection_lost_at_commit_answers_503_and_a_retry_books_once(
    app: Flask, api: Api, engine: Engine, department_id: int
) -> None:
    before = _counts(engine)
    body = {"departmentId": department_id, **BOOKING}
    headers = {"Idempotency-Key": "lost-at-commit"}

    def lose_connection(response: Any) -> Any:
        _terminate_request_connection(app)
        return response

    # after_request hooks run last-registered first: this one runs just before the commit.
    app.after_request_funcs[None].append(lose_connection)
    _assert_unavailable(api.post("/appointments", body, headers=headers))
    assert _counts(engine) == before

    app.after_request_funcs[None].remove(lose_connection)
    retried = api.post("/appointments", body, headers=headers)
    assert retried.status_code == 201, retried.json
    assert "Idempotent-Replayed" not in retried.headers
    again = api.post("/appointments", body, headers=headers)
    assert (again.status_code, again.json["id"]) == (201, retried.json["id"])
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _counts(engine) == (before[0] + 1, before[1] + 1, before[2] + 1)


def test_an_unreachable_database_answers_503_on_every_kind_of_request(
    app: Flask, org: dict[str, Any]
) -> None:
    nowhere = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    down = create_app(make_settings(nowhere))
    client = Api(down.test_client(), org["apiKey"])
    for response in (
        client.get("/appointments"),
        client.post("/appointments", {"departmentId": 1, **BOOKING}),
        client.post("/appointments/1/cancel", headers={"Idempotency-Key": "k"}),
        client.patch("/appointments/1", {"name": "B"}),
    ):
        _assert_unavailable(response)
    assert down.test_client().get("/readyz").status_code == 503


def test_a_database_that_accepts_but_never_answers_gives_503_not_a_hung_request(
    org: dict[str, Any],
) -> None:
    with socket.socket() as silent:
        # Accepts connections (the kernel's backlog) and never says a word, as a frozen
        # server or a black-holed network would.
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        down = create_app(make_settings(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"))
        client = Api(down.test_client(), org["apiKey"])
        started = time.monotonic()
        _assert_unavailable(client.get("/appointments"))
        # The connect timeout, not a client's patience, ended it.
        assert time.monotonic() - started < CONNECT_TIMEOUT * 3


def test_no_free_connection_in_the_pool_answers_503(app: Flask, api: Api) -> None:
    tiny = make_engine(
        app.extensions["moncreneau"].settings.database_url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.2,
    )
    app.extensions["moncreneau"].sessions = make_session_factory(tiny)
    try:
        with tiny.connect():
            _assert_unavailable(api.get("/appointments"))
        assert api.get("/appointments").status_code == 200
    finally:
        tiny.dispose()
