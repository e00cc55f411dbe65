"""/metrics, request ids and the JSON access log, through the app itself."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from moncreneau import clock
from moncreneau.app import create_app
from moncreneau.config import ConfigError, Settings
from moncreneau.db import make_session_factory
from moncreneau.ops import logs
from moncreneau.outbox import store
from tests.conftest import Api, make_settings, new_organization

_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
TOKEN = "scrape-me"


@pytest.fixture
def settings(database_url: str) -> Settings:
    """/metrics answers only with a token."""
    return make_settings(database_url, metrics_token=TOKEN)


def scrape(client: FlaskClient, **headers: str) -> dict[str, float]:
    """Every sample of /metrics, keyed `name{labels}` as the exposition writes them."""
    headers.setdefault("Authorization", f"Bearer {TOKEN}")
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=")
    samples = {}
    for line in response.get_data(as_text=True).splitlines():
        if line and not line.startswith("#"):
            match = _SAMPLE.match(line)
            assert match, line
            name, labels, value = match.groups()
            samples[f"{name}{{{labels}}}" if labels else name] = float(value)
    return samples


def requests_counted(samples: dict[str, float], route: str, status: int) -> float:
    key = f'moncreneau_http_requests_total{{method="GET",route="{route}",status="{status}"}}'
    return samples.get(key, 0.0)


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    """The access log as an operator's pipeline reads it: JSON lines with the context."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("moncreneau.access")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def read_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_metrics_count_requests_by_route_template_and_status(app: Flask, api: Api) -> None:
    client = app.test_client()
    route = "/api/v1/appointments/<id:appointment_id>"
    before = scrape(client)
    assert api.get("/appointments/999999").status_code == 404
    assert api.get("/appointments/999998").status_code == 404
    after = scrape(client)
    assert requests_counted(after, route, 404) - requests_counted(before, route, 404) == 2
    # The id is not a label: one series for every appointment.
    assert not any("999999" in key for key in after)


def test_metrics_report_events_appended_and_what_is_still_to_deliver(
    app: Flask, api: Api, department: dict[str, Any]
) -> None:
    client = app.test_client()
    before = scrape(client)
    assert before["moncreneau_database_up"] == 1
    api.post("/webhooks", {"url": "https://hooks.example.com/in", "events": ["*"]})
    made = api.post(
        "/appointments",
        {"departmentId": department["id"], "dateTime": "2026-02-01T10:00:00", "name": "Test"},
    )
    assert made.status_code == 201
    after = scrape(client)
    assert (
        after["moncreneau_events_appended_total"] == before["moncreneau_events_appended_total"] + 1
    )
    # No relay runs here: the event waits in the log, and its age shows it.
    assert after["moncreneau_relay_lag_events"] == before["moncreneau_relay_lag_events"] + 1
    assert after["moncreneau_oldest_undelivered_event_age_seconds"] >= 0
    assert 'moncreneau_deliveries_waiting{status="pending"}' in after


def test_metrics_are_off_without_a_token(database_url: str) -> None:
    app = create_app(make_settings(database_url))
    refused = app.test_client().get("/metrics")
    assert refused.status_code == 403
    assert refused.json is not None and refused.json["code"] == 403
    assert "MONCRENEAU_METRICS_TOKEN" in refused.json["message"]
    assert "moncreneau_" not in refused.get_data(as_text=True)


def test_metrics_want_the_bearer_token_when_one_is_set(app: Flask) -> None:
    client = app.test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.json is not None and refused.json["code"] == 401
    assert "scrape-me" not in refused.get_data(as_text=True)
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert "moncreneau_database_up" in scrape(client, Authorization="Bearer scrape-me")


def test_a_tame_request_id_is_echoed_and_logged_with_the_organization(
    api: Api, org: dict[str, Any], access_lines: io.StringIO
) -> None:
    response = api.get("/departments", headers={"X-Request-Id": "req-7f3a.42"})
    assert response.headers["X-Request-Id"] == "req-7f3a.42"
    [line] = read_lines(access_lines)
    assert line["request_id"] == "req-7f3a.42"
    assert line["organization_id"] == org["id"]
    assert (line["method"], line["route"], line["status"]) == ("GET", "/api/v1/departments", 200)
    assert line["level"] == "INFO" and line["duration_ms"] >= 0


@pytest.mark.parametrize("supplied", ["", "has space", "x" * 129, "ünïcode", "a\tb"])
def test_an_unusable_request_id_is_replaced_by_one_of_the_apis(
    api: Api, supplied: str, access_lines: io.StringIO
) -> None:
    response = api.get("/departments", headers={"X-Request-Id": supplied})
    made = response.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert read_lines(access_lines)[0]["request_id"] == made


def test_every_answer_carries_a_request_id_even_without_a_key(
    app: Flask, access_lines: io.StringIO
) -> None:
    response = app.test_client().get("/api/v1/departments")
    assert response.status_code == 401
    [line] = read_lines(access_lines)
    assert line["request_id"] == response.headers["X-Request-Id"]
    assert "organization_id" not in line


def test_the_log_format_is_json_or_text_and_nothing_else() -> None:
    assert Settings.from_env({}).log_format == "json"
    assert Settings.from_env({"MONCRENEAU_LOG_FORMAT": "Text"}).log_format == "text"
    with pytest.raises(ConfigError, match=r"MONCRENEAU_LOG_FORMAT.*'xml'"):
        Settings.from_env({"MONCRENEAU_LOG_FORMAT": "xml"})


def test_text_logs_keep_the_context_fields() -> None:
    record = logging.LogRecord("moncreneau.x", logging.WARNING, __file__, 1, "sent", None, None)
    record.delivery_id = "msg_1"
    record.event_id = "evt_1"
    line = logs.TextFormatter().format(record)
    assert line.endswith("WARNING moncreneau.x: sent [event_id=evt_1 delivery_id=msg_1]")


@pytest.mark.postgres
def test_metrics_show_how_long_an_open_transaction_holds_committed_events_back(
    postgres_url: str,
) -> None:
    app = create_app(make_settings(postgres_url, metrics_token=TOKEN))
    client = app.test_client()
    organization = new_organization(app)["id"]
    sessions = make_session_factory(app.extensions["moncreneau"].sessions.kw["bind"])
    older, younger = sessions(), sessions()
    try:
        older.execute(text("SELECT pg_current_xact_id()"))
        store.append(
            younger,
            organization_id=organization,
            type="webhook.test",
            occurred_at=clock.now() - timedelta(minutes=5),
            data={},
            object={},
        )
        younger.commit()

        held = scrape(client)
        assert held["moncreneau_events_held_back"] == 1
        assert held["moncreneau_event_log_lag_seconds"] >= 300

        older.rollback()
        released = scrape(client)
        assert released["moncreneau_events_held_back"] == 0
        assert released["moncreneau_event_log_lag_seconds"] == 0
    finally:
        for session in (older, younger):
            session.rollback()
            session.close()
        app.extensions["moncreneau"].sessions.kw["bind"].dispose()
