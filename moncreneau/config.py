"""Settings read once from the environment and shared by every process."""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from moncreneau.ops.logs import FORMATS

DEFAULT_DATABASE_URL = "sqlite:///moncreneau.db"
# Seconds between attempts: 10 attempts over about three days (2.9), growing ~x4 each time.
DEFAULT_RETRY_SCHEDULE = (5.0, 60.0, 300.0, 1800.0, 7200.0, 21600.0, 43200.0, 86400.0, 86400.0)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Bounds that keep every value usable where it ends up: a datetime, a sleep, a timeout.
MAX_HOURS = 87_600.0  # ten years
MAX_SECONDS = 31_536_000.0  # a year
MAX_COUNT = 1_000_000
SECRET_KEY_REQUIRED = (
    "MONCRENEAU_SECRET_KEY is required with this database: every process must use the "
    "same key to read webhook secrets"
)

Parser = Callable[[str, str], Any]


class ConfigError(ValueError):
    """A setting from the environment has a value that cannot be used."""


def _shown(raw: str) -> str:
    return repr(raw) if len(raw) <= 40 else f"{raw[:40]!r}... ({len(raw):,} characters)"


def _text(_name: str, raw: str) -> str:
    return raw.strip()


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {_shown(raw)}")


def _whole(minimum: int, maximum: int = MAX_COUNT) -> Parser:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {_shown(raw)}") from None
        if not minimum <= value <= maximum:
            raise ConfigError(f"{name} must be from {minimum:,} to {maximum:,}, got {_shown(raw)}")
        return value

    return parse


def _number(name: str, raw: str, minimum: float, maximum: float, above: bool) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {_shown(raw)}") from None
    low_ok = value > minimum if above else value >= minimum
    if not (math.isfinite(value) and low_ok and value <= maximum):
        low = f"more than {minimum:g}" if above else f"at least {minimum:g}"
        raise ConfigError(f"{name} must be {low} and at most {maximum:,g}, got {_shown(raw)}")
    return value


def _amount(maximum: float, *, above_zero: bool = False) -> Parser:
    """A number of seconds or hours, from 0 (excluded if `above_zero`) to `maximum`."""

    def parse(name: str, raw: str) -> float:
        return _number(name, raw, 0.0, maximum, above_zero)

    return parse


def _schedule(name: str, raw: str) -> tuple[float, ...]:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"{name} must list at least one delay in seconds, got {_shown(raw)}")
    return tuple(_number(name, p, 0.0, MAX_SECONDS, False) for p in parts)


def _rate_limit(name: str, raw: str) -> str:
    from limits import parse_many

    try:
        if raw.strip():
            parse_many(raw)
    except ValueError:
        raise ConfigError(
            f"{name} must read like '100 per second; 3000 per minute', got {_shown(raw)}"
        ) from None
    return raw.strip()


def _choice(choices: tuple[str, ...], upper: bool = False) -> Parser:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {_shown(raw)}")
        return value

    return parse


def _networks(name: str, raw: str) -> tuple[str, ...]:
    networks = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            networks.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ConfigError(
                f"{name} must list networks such as 10.8.0.0/16, got {_shown(part)}"
            ) from None
    return tuple(networks)


def _public_url(name: str, raw: str) -> str:
    value = raw.strip().rstrip("/")
    if value and not value.startswith(("https://", "http://")):
        raise ConfigError(f"{name} must be an http(s) URL such as https://host, got {raw!r}")
    return value


def secret_keys(value: str) -> list[str]:
    """The keys of MONCRENEAU_SECRET_KEY, comma-separated: the first seals, every one opens."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _secret_key(name: str, raw: str) -> str:
    # The value is a secret: no message repeats it.
    if not secret_keys(raw):
        raise ConfigError(f"{name} must hold at least one key (several are comma-separated)")
    return raw.strip()


def _database_url(name: str, raw: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    # The URL may hold a password: no message repeats it.
    try:
        backend = make_url(raw.strip()).get_backend_name()
    except ArgumentError:
        backend = None
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"{name} must be a sqlite:/// or postgresql+psycopg:// URL "
            "such as postgresql+psycopg://user@host/db"
        )
    return raw.strip()


def _redis_url(name: str, raw: str) -> str:
    if raw.strip().split("://", 1)[0] not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{name} must be a redis://, rediss:// or unix:// URL")
    return raw.strip()


def _from(variable: str, parse: Parser, *, empty_is_default: bool = True) -> dict[str, Any]:
    """Field metadata: the variable a setting is read from, and how.

    An empty value is the same as none, unless the setting gives emptiness a meaning.
    """
    return {"variable": variable, "parse": parse, "empty_is_default": empty_is_default}


def _setting(default: Any, variable: str, parse: Parser, **options: bool) -> Any:
    return field(default=default, metadata=_from(variable, parse, **options))


@dataclass(frozen=True)
class Settings:
    """Every knob of MonCréneau, each with its one default and the variable it is read from.

    `from_env` is the only place that reads the environment.
    """

    database_url: str = _setting(DEFAULT_DATABASE_URL, "DATABASE_URL", _database_url)
    # unset: the embedded mode, no Redis
    redis_url: str | None = _setting(None, "REDIS_URL", _redis_url)
    retry_schedule: tuple[float, ...] = _setting(
        DEFAULT_RETRY_SCHEDULE, "MONCRENEAU_RETRY_SCHEDULE", _schedule
    )
    allow_private_urls: bool = _setting(False, "MONCRENEAU_ALLOW_PRIVATE_URLS", _bool)
    # networks webhook URLs may reach although they are not public (an operator's choice)
    allowed_networks: tuple[str, ...] = _setting((), "MONCRENEAU_ALLOWED_NETWORKS", _networks)
    # required unless the database is SQLite (which keeps a generated one beside it)
    secret_key: str = _setting("", "MONCRENEAU_SECRET_KEY", _secret_key)
    delivery_timeout: float = _setting(
        10.0, "MONCRENEAU_DELIVERY_TIMEOUT", _amount(3600.0, above_zero=True)
    )
    secret_grace_hours: float = _setting(24.0, "MONCRENEAU_SECRET_GRACE_HOURS", _amount(MAX_HOURS))
    max_body_bytes: int = _setting(
        1_048_576, "MONCRENEAU_MAX_BODY_BYTES", _whole(1024, 1_073_741_824)
    )
    # per API key, and per client address for requests without a valid key, in the `limits`
    # notation; empty: no limit
    rate_limit: str = _setting(
        "100 per second; 3000 per minute",
        "MONCRENEAU_RATE_LIMIT",
        _rate_limit,
        empty_is_default=False,
    )
    # reverse proxies in front of the API that append the client's address to X-Forwarded-For
    trusted_proxies: int = _setting(0, "MONCRENEAU_TRUSTED_PROXIES", _whole(0, 10))
    # how long a process may go on trusting a key it has seen (a revocation's delay)
    key_cache_seconds: float = _setting(5.0, "MONCRENEAU_KEY_CACHE_SECONDS", _amount(86_400.0))
    log_level: str = _setting("INFO", "MONCRENEAU_LOG_LEVEL", _choice(LOG_LEVELS, upper=True))
    # "json" (one object a line, for log pipelines) or "text" (for a terminal)
    log_format: str = _setting("json", "MONCRENEAU_LOG_FORMAT", _choice(FORMATS))
    # /metrics wants `Authorization: Bearer <token>`; unset, /metrics is off
    metrics_token: str = _setting("", "MONCRENEAU_METRICS_TOKEN", _text)
    # where people reach this server (`https://moncreneau.example.org`): portal links are
    # built on it, and its `https` makes the portal's cookie Secure behind a proxy
    public_url: str = _setting("", "MONCRENEAU_PUBLIC_URL", _public_url)
    # a subscription whose deliveries all failed for this long is disabled
    disable_after_hours: float = _setting(
        120.0, "MONCRENEAU_DISABLE_AFTER_HOURS", _amount(MAX_HOURS)
    )
    # requests in flight per worker process, and per endpoint within it
    worker_concurrency: int = _setting(256, "MONCRENEAU_WORKER_CONCURRENCY", _whole(1))
    endpoint_concurrency: int = _setting(50, "MONCRENEAU_ENDPOINT_CONCURRENCY", _whole(1))
    # ... per destination host (0: 3/4 of worker_concurrency) and per organization (0: half),
    # never less by default than endpoint_concurrency
    host_concurrency: int = _setting(0, "MONCRENEAU_HOST_CONCURRENCY", _whole(0))
    organization_concurrency: int = _setting(0, "MONCRENEAU_ORGANIZATION_CONCURRENCY", _whole(0))
    # webhooks an organization may have (deleted ones aside)
    max_webhooks_per_organization: int = _setting(
        100, "MONCRENEAU_MAX_WEBHOOKS_PER_ORGANIZATION", _whole(1)
    )
    # events claimed per relay transaction; deliveries a woken worker claims at a time
    relay_batch: int = _setting(500, "MONCRENEAU_RELAY_BATCH", _whole(1))
    job_batch: int = _setting(100, "MONCRENEAU_JOB_BATCH", _whole(1))
    queue_name: str = _setting("moncreneau-deliveries", "MONCRENEAU_QUEUE_NAME", _text)
    relay_poll_seconds: float = _setting(0.05, "MONCRENEAU_RELAY_POLL_SECONDS", _amount(3600.0))
    sweep_seconds: float = _setting(1.0, "MONCRENEAU_SWEEP_SECONDS", _amount(3600.0))
    # bodies and response excerpts of deliveries finished longer ago are purged
    payload_retention_days: float = _setting(
        30.0, "MONCRENEAU_PAYLOAD_RETENTION_DAYS", _amount(36500.0)
    )
    # appointments unchanged for longer are erased; None: never
    erase_after_days: float | None = _setting(
        None, "MONCRENEAU_ERASE_AFTER_DAYS", _amount(36500.0, above_zero=True)
    )
    testing: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Every setting, checked: a value that cannot be used raises a `ConfigError` naming it."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for setting in fields(cls):
            if "variable" not in setting.metadata:
                continue
            variable: str = setting.metadata["variable"]
            raw = env.get(variable)
            if raw is None or (not raw.strip() and setting.metadata["empty_is_default"]):
                continue
            values[setting.name] = setting.metadata["parse"](variable, raw)
        settings = cls(**values)
        if not settings.secret_key and not settings.is_sqlite:
            raise ConfigError(SECRET_KEY_REQUIRED)
        return settings

    def replace(self, **changes: object) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)

    @property
    def attempt_budget(self) -> int:
        """Attempts a delivery gets: the first, then one after each delay of the schedule."""
        return len(self.retry_schedule) + 1

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
