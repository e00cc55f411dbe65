"""MONCRENEAU_SECRET_KEY can change without downtime: several keys open, the first seals."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from moncreneau.app import create_app
from moncreneau.cli import cli
from moncreneau.clock import utcnow
from moncreneau.config import ConfigError
from moncreneau.delivery.endpoints import secrets_of
from moncreneau.models import IdempotencyRecord, WebhookSubscription
from moncreneau.secretbox import SecretBox
from tests.conftest import Api, make_settings, new_organization


def stored_secrets(database_url: str, key: str) -> tuple[str, ...]:
    app = create_app(make_settings(database_url, secret_key=key))
    rt = app.extensions["moncreneau"]
    with rt.sessions() as db:
        subscription = db.scalars(select(WebhookSubscription)).one()
        records = db.scalars(select(IdempotencyRecord)).all()
        assert records
        for record in records:
            assert rt.box.open(record.response_body).startswith("{")
        return secrets_of(subscription, rt.box.open, utcnow())


def test_a_new_key_is_added_first_the_data_resealed_then_the_old_key_dropped(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = create_app(make_settings(database_url, secret_key="old-key"))
    api = Api(old.test_client(), new_organization(old)["apiKey"])
    hook = api.post(
        "/webhooks",
        {"url": "https://hooks.example.com/in", "events": ["*"]},
        headers={"Idempotency-Key": "create-hook"},
    )
    assert hook.status_code == 201
    rotated: dict[str, Any] = api.post(f"/webhooks/{hook.json['id']}/rotate-secret").json
    expected = (rotated["secret"], hook.json["secret"])

    assert stored_secrets(database_url, "old-key") == expected
    # Step 1: every process gets "new,old"; what old-key sealed still opens.
    assert stored_secrets(database_url, "new-key,old-key") == expected
    with pytest.raises(ConfigError, match="none of the keys"):
        stored_secrets(database_url, "new-key")

    # Step 2: reseal, through the command operators run.
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MONCRENEAU_SECRET_KEY", "new-key, old-key")
    result = CliRunner().invoke(cli, ["secrets", "reseal"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("2 secrets sealed with the first key")

    # Step 3: the old key can go, and it opens nothing any more.
    assert stored_secrets(database_url, "new-key") == expected
    with pytest.raises(ConfigError, match="none of the keys"):
        stored_secrets(database_url, "old-key")


def test_a_key_list_without_any_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="must not be empty"):
        SecretBox(" , ")


def test_appointment_data_keys_and_blind_indexes_follow_a_key_change(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = create_app(make_settings(database_url, secret_key="old-key"))
    api = Api(old.test_client(), new_organization(old)["apiKey"])
    department = api.post("/departments", {"name": "R", "timezone": "UTC"}).json
    booked = api.post(
        "/appointments",
        {
            "departmentId": department["id"],
            "dateTime": "2026-03-02T10:00:00",
            "name": "Ana",
            "email": "ana@example.org",
        },
    ).json
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MONCRENEAU_SECRET_KEY", "new-key,old-key")

    result = CliRunner().invoke(cli, ["secrets", "reseal"])

    assert result.exit_code == 0, result.output
    new = create_app(make_settings(database_url, secret_key="new-key"))
    api = Api(new.test_client(), api.key)
    history = api.get(f"/appointments/{booked['id']}/events").json["data"]
    assert history[0]["data"]["object"]["email"] == "ana@example.org"
    erasure = api.post("/erasures", {"email": "ANA@example.org"}).json
    assert erasure["appointmentIds"] == [booked["id"]]
