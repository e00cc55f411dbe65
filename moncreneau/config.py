"""Settings read once from the environment and shared by every process."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

DEFAULT_DATABASE_URL = "sqlite:///moncreneau.db"
# Seconds between attempts: 10 attempts over about three days (2.9), growing ~x4 each time.
DEFAULT_RETRY_SCHEDULE = (5.0, 60.0, 300.0, 1800.0, 7200.0, 21600.0, 43200.0, 86400.0, 86400.0)


class ConfigError(ValueError):
    """A setting from the environment has a value that cannot be used."""


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _int(name: str, raw: str, minimum: int = 0) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {raw!r}")
    return value


def _schedule(name: str, raw: str) -> tuple[float, ...]:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"{name} must list at least one delay in seconds, got {raw!r}")
    return tuple(_float(name, p) for p in parts)


def _rate_limit(name: str, raw: str) -> str:
    from limits import parse_many

    try:
        if raw.strip():
            parse_many(raw)
    except ValueError:
        raise ConfigError(
            f"{name} must read like '100 per second; 3000 per minute', got {raw!r}"
        ) from None
    return raw.strip()


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _networks(name: str, raw: str) -> tuple[str, ...]:
    networks = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            networks.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ConfigError(
                f"{name} must list networks such as 10.8.0.0/16, got {part!r}"
            ) from None
    return tuple(networks)


@dataclass(frozen=True)
class Settings:
    """Every knob of MonCréneau; `from_env` is the only place that reads the environment."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    allow_private_urls: bool = False
    # networks webhook URLs may reach although they are not public (an operator's choice)
    allowed_networks: tuple[str, ...] = ()
    secret_key: str = ""
    delivery_timeout: float = 10.0
    secret_grace_hours: float = 24.0
    max_body_bytes: int = 1_048_576
    # per API key, in the `limits` notation; empty: no limit
    rate_limit: str = "100 per second; 3000 per minute"
    default_page_size: int = 50
    max_page_size: int = 200
    # how long a process may go on trusting a key it has seen (a revocation's delay)
    key_cache_seconds: float = 5.0
    log_level: str = "INFO"
    # "json" (one object a line, for log pipelines) or "text" (for a terminal)
    log_format: str = "json"
    # when set, /metrics wants `Authorization: Bearer <token>`
    metrics_token: str = ""
    # a subscription whose deliveries all failed for this long is disabled
    disable_after_hours: float = 120.0
    # requests in flight per worker process, and per endpoint within it
    worker_concurrency: int = 256
    endpoint_concurrency: int = 50
    # ... per destination host (0: 3/4 of worker_concurrency) and per organization (0: half),
    # never less by default than endpoint_concurrency
    host_concurrency: int = 0
    organization_concurrency: int = 0
    # webhooks an organization may have (deleted ones aside)
    max_webhooks_per_organization: int = 100
    # events claimed per relay transaction; deliveries per queued job
    relay_batch: int = 500
    job_batch: int = 100
    queue_name: str = "moncreneau-deliveries"
    relay_poll_seconds: float = 0.05
    sweep_seconds: float = 1.0
    testing: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        get = env.get
        return cls(
            database_url=get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            redis_url=get("REDIS_URL") or None,
            retry_schedule=_schedule(
                "MONCRENEAU_RETRY_SCHEDULE",
                get("MONCRENEAU_RETRY_SCHEDULE") or ",".join(map(str, DEFAULT_RETRY_SCHEDULE)),
            ),
            allow_private_urls=_bool(
                "MONCRENEAU_ALLOW_PRIVATE_URLS", get("MONCRENEAU_ALLOW_PRIVATE_URLS", "false")
            ),
            allowed_networks=_networks(
                "MONCRENEAU_ALLOWED_NETWORKS", get("MONCRENEAU_ALLOWED_NETWORKS", "")
            ),
            secret_key=get("MONCRENEAU_SECRET_KEY", ""),
            delivery_timeout=_float(
                "MONCRENEAU_DELIVERY_TIMEOUT", get("MONCRENEAU_DELIVERY_TIMEOUT", "10")
            ),
            secret_grace_hours=_float(
                "MONCRENEAU_SECRET_GRACE_HOURS", get("MONCRENEAU_SECRET_GRACE_HOURS", "24")
            ),
            rate_limit=_rate_limit(
                "MONCRENEAU_RATE_LIMIT",
                get("MONCRENEAU_RATE_LIMIT", "100 per second; 3000 per minute"),
            ),
            max_body_bytes=_int(
                "MONCRENEAU_MAX_BODY_BYTES", get("MONCRENEAU_MAX_BODY_BYTES", "1048576"), 1024
            ),
            key_cache_seconds=_float(
                "MONCRENEAU_KEY_CACHE_SECONDS", get("MONCRENEAU_KEY_CACHE_SECONDS", "5")
            ),
            log_level=get("MONCRENEAU_LOG_LEVEL", "INFO").upper(),
            log_format=_choice(
                "MONCRENEAU_LOG_FORMAT", get("MONCRENEAU_LOG_FORMAT", "json"), ("json", "text")
            ),
            metrics_token=get("MONCRENEAU_METRICS_TOKEN", ""),
            disable_after_hours=_float(
                "MONCRENEAU_DISABLE_AFTER_HOURS", get("MONCRENEAU_DISABLE_AFTER_HOURS", "120")
            ),
            worker_concurrency=_int(
                "MONCRENEAU_WORKER_CONCURRENCY", get("MONCRENEAU_WORKER_CONCURRENCY", "256"), 1
            ),
            endpoint_concurrency=_int(
                "MONCRENEAU_ENDPOINT_CONCURRENCY", get("MONCRENEAU_ENDPOINT_CONCURRENCY", "50"), 1
            ),
            host_concurrency=_int(
                "MONCRENEAU_HOST_CONCURRENCY", get("MONCRENEAU_HOST_CONCURRENCY", "0")
            ),
            organization_concurrency=_int(
                "MONCRENEAU_ORGANIZATION_CONCURRENCY",
                get("MONCRENEAU_ORGANIZATION_CONCURRENCY", "0"),
            ),
            max_webhooks_per_organization=_int(
                "MONCRENEAU_MAX_WEBHOOKS_PER_ORGANIZATION",
                get("MONCRENEAU_MAX_WEBHOOKS_PER_ORGANIZATION", "100"),
                1,
            ),
            relay_batch=_int("MONCRENEAU_RELAY_BATCH", get("MONCRENEAU_RELAY_BATCH", "500"), 1),
            job_batch=_int("MONCRENEAU_JOB_BATCH", get("MONCRENEAU_JOB_BATCH", "100"), 1),
            queue_name=get("MONCRENEAU_QUEUE_NAME") or "moncreneau-deliveries",
            relay_poll_seconds=_float(
                "MONCRENEAU_RELAY_POLL_SECONDS", get("MONCRENEAU_RELAY_POLL_SECONDS", "0.05")
            ),
            sweep_seconds=_float("MONCRENEAU_SWEEP_SECONDS", get("MONCRENEAU_SWEEP_SECONDS", "1")),
        )

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
