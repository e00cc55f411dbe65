"""The example Flask receiver on a real Redis: genuine deliveries queued, each event run once."""

from __future__ import annotations

import base64
import dataclasses
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from examples.flask_receiver import Config, create_app, process_event
from moncreneau.delivery import signing
from tests import services
from tests.samples import BODY, EVENT

pytestmark = pytest.mark.redis

# The example's jobs go to their own database on the suite's Redis server.
REDIS_URL = services.redis_database(14)
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OLD_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
PATH = "/webhooks/moncreneau"


def signed(body: bytes = BODY, *secrets: str) -> dict[str, str]:
    """The headers of a delivery as MonCréneau sends it."""
    now = int(time.time())
    return {
        "Content-Type": "application/json",
        "X-Moncreneau-Event": "appointment.created",
        "X-Moncreneau-Delivery": "dlv_1",
        "X-Moncreneau-Attempt": "1",
        "X-Moncreneau-Timestamp": str(now),
        "X-Webhook-Version": "1.0",
        **signing.signature_headers(secrets or [SECRET], "dlv_1", now, body),
    }


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The worker's SQLite file, which `process_event` finds through the environment."""
    path = tmp_path / "receiver.db"
    monkeypatch.setenv("RECEIVER_DATABASE", str(path))
    return path


@pytest.fixture
def config(database: Path) -> Iterator[Config]:
    problem = services.redis_problem()
    if problem:
        services.unavailable("Redis", problem)
    # One queue per test, so that tests running at once on other workers never share one.
    name = f"test-receiver-{uuid.uuid4().hex[:12]}"
    yield Config(secrets=(SECRET,), redis_url=REDIS_URL, database=str(database), queue=name)
    Queue(name, connection=Redis.from_url(REDIS_URL)).delete(delete_jobs=True)


@pytest.fixture
def queue(config: Config) -> Queue:
    return Queue(config.queue, connection=Redis.from_url(REDIS_URL), serializer=JSONSerializer)


@pytest.fixture
def client(config: Config) -> FlaskClient:
    return create_app(config).test_client()


def rows(database: Path, sql: str) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(database)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def test_a_signed_delivery_is_answered_200_and_queued_as_exactly_one_job(
    client: FlaskClient, queue: Queue
) -> None:
    response = client.post(PATH, data=BODY, headers=signed())

    assert response.status_code == 200
    assert response.json == {"received": EVENT["id"]}
    assert queue.count == 1
    job = queue.jobs[0]
    assert job.func_name == "examples.flask_receiver.process_event"
    assert list(job.args) == [EVENT]


def test_during_a_rotation_a_delivery_signed_with_the_old_secret_is_queued(
    config: Config, queue: Queue
) -> None:
    rotating = dataclasses.replace(config, secrets=(SECRET, OLD_SECRET))
    client = create_app(rotating).test_client()

    response = client.post(PATH, data=BODY, headers=signed(BODY, OLD_SECRET))

    assert response.status_code == 200
    assert queue.count == 1


def test_a_tampered_delivery_is_answered_401_and_queues_nothing(
    client: FlaskClient, queue: Queue
) -> None:
    tampered = BODY.replace(b'"id": 123', b'"id": 124')

    response = client.post(PATH, data=tampered, headers=signed(BODY))

    assert response.status_code == 401
    assert response.json is not None
    assert response.json["error"].startswith("no signature matches")
    assert queue.count == 0


def test_a_delivery_without_signature_headers_is_answered_401_and_queues_nothing(
    client: FlaskClient, queue: Queue
) -> None:
    response = client.post(PATH, data=BODY, headers={"Content-Type": "application/json"})

    assert response.status_code == 401
    assert response.json is not None
    assert response.json["error"].startswith("missing header")
    assert queue.count == 0


@pytest.mark.parametrize("header", ["webhook-timestamp", "X-Moncreneau-Timestamp"])
def test_a_timestamp_of_thousands_of_digits_is_answered_401_and_queues_nothing(
    client: FlaskClient, queue: Queue, header: str
) -> None:
    headers = signed(BODY)
    headers[header] = "1" * 5_000

    response = client.post(PATH, data=BODY, headers=headers)

    assert response.status_code == 401
    assert response.json is not None
    assert response.json["error"].startswith("bad timestamp")
    assert queue.count == 0


def test_a_signed_body_that_is_not_an_event_is_answered_400_and_queues_nothing(
    client: FlaskClient, queue: Queue
) -> None:
    body = b'["not", "an", "event"]'

    response = client.post(PATH, data=body, headers=signed(body))

    assert response.status_code == 400
    assert response.json == {"error": "body is not a JSON object"}
    assert queue.count == 0


def test_the_worker_function_run_twice_on_one_event_processes_it_once(database: Path) -> None:
    assert process_event(EVENT) is True
    assert process_event(EVENT) is False

    assert rows(database, "SELECT event_id, appointment_id, status FROM appointment_changes") == [
        (EVENT["id"], 123, "pending")
    ]
    assert rows(database, "SELECT id, event_type FROM webhook_events") == [
        (EVENT["id"], EVENT["type"])
    ]


def test_a_redelivered_event_is_queued_twice_and_processed_once_by_a_real_worker(
    client: FlaskClient, queue: Queue, database: Path
) -> None:
    for _ in range(2):
        assert client.post(PATH, data=BODY, headers=signed()).status_code == 200
    jobs = queue.jobs
    assert len(jobs) == 2

    worker = SimpleWorker([queue], connection=queue.connection, serializer=JSONSerializer)
    worker.work(burst=True, with_scheduler=False)

    for job in jobs:
        job.refresh()
    assert {job.return_value() for job in jobs} == {True, False}
    assert rows(database, "SELECT event_id FROM appointment_changes") == [(EVENT["id"],)]


def test_the_app_refuses_to_start_without_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MONCRENEAU_WEBHOOK_SECRET", raising=False)

    with pytest.raises(RuntimeError, match="MONCRENEAU_WEBHOOK_SECRET"):
        create_app()


def test_the_configuration_reads_comma_separated_secrets_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MONCRENEAU_WEBHOOK_SECRET", f" {SECRET} , {OLD_SECRET} ")
    monkeypatch.setenv("REDIS_URL", REDIS_URL)

    config = Config.from_env()

    assert config.secrets == (SECRET, OLD_SECRET)
    assert config.redis_url == REDIS_URL
