"""Settings: one default each, and every value checked where it is read."""

from __future__ import annotations

from dataclasses import fields

import pytest

from moncreneau.config import ConfigError, Settings

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1/moncreneau"


def test_no_environment_gives_the_defaults_the_settings_declare() -> None:
    assert Settings.from_env({}) == Settings()


def test_an_empty_value_is_the_default_except_for_the_rate_limit() -> None:
    variables = [f.metadata["variable"] for f in fields(Settings) if "variable" in f.metadata]
    settings = Settings.from_env(dict.fromkeys(variables, ""))
    assert settings == Settings().replace(rate_limit="")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MONCRENEAU_DELIVERY_TIMEOUT", "0"),
        ("MONCRENEAU_DELIVERY_TIMEOUT", "nan"),
        ("MONCRENEAU_DELIVERY_TIMEOUT", "inf"),
        ("MONCRENEAU_SECRET_GRACE_HOURS", "1e300"),
        ("MONCRENEAU_DISABLE_AFTER_HOURS", "1e300"),
        ("MONCRENEAU_RETRY_SCHEDULE", "5,1e300"),
        ("MONCRENEAU_KEY_CACHE_SECONDS", "-1"),
        ("MONCRENEAU_SWEEP_SECONDS", "1e300"),
        ("MONCRENEAU_RELAY_POLL_SECONDS", "1e300"),
        ("MONCRENEAU_WORKER_CONCURRENCY", "9" * 5000),
        ("MONCRENEAU_MAX_BODY_BYTES", "10"),
        ("MONCRENEAU_TRUSTED_PROXIES", "-1"),
        ("MONCRENEAU_SECRET_KEY", ","),
        ("MONCRENEAU_SECRET_KEY", " , ,"),
        ("MONCRENEAU_LOG_LEVEL", "chatty"),
        ("DATABASE_URL", "mysql://root@db/moncreneau"),
        ("DATABASE_URL", "not a url"),
        ("REDIS_URL", "http://127.0.0.1:6379/0"),
    ],
)
def test_a_value_that_would_fail_at_first_use_is_refused_naming_its_variable(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=variable) as refused:
        Settings.from_env({variable: value})
    assert len(str(refused.value)) < 300


def test_postgresql_without_a_secret_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="MONCRENEAU_SECRET_KEY is required"):
        Settings.from_env({"DATABASE_URL": POSTGRES})
    assert Settings.from_env({"DATABASE_URL": POSTGRES, "MONCRENEAU_SECRET_KEY": "k"}).secret_key
    # The embedded mode keeps a generated key beside its SQLite file.
    assert Settings.from_env({}).secret_key == ""


def test_refusals_never_repeat_a_secret_or_a_password() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"DATABASE_URL": "mysql://root:hunter2@db/moncreneau"})
    assert "hunter2" not in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"REDIS_URL": "http://:hunter2@cache:6379"})
    assert "hunter2" not in str(refused.value)


def test_values_at_their_bounds_are_accepted() -> None:
    settings = Settings.from_env(
        {
            "MONCRENEAU_DELIVERY_TIMEOUT": "0.5",
            "MONCRENEAU_SECRET_GRACE_HOURS": "0",
            "MONCRENEAU_DISABLE_AFTER_HOURS": "87600",
            "MONCRENEAU_LOG_LEVEL": "debug",
            "MONCRENEAU_SECRET_KEY": "new, old",
            "REDIS_URL": "rediss://cache:6380/0",
        }
    )
    assert settings.delivery_timeout == 0.5
    assert settings.disable_after_hours == 87600
    assert settings.log_level == "DEBUG"
    assert settings.secret_key == "new, old"
