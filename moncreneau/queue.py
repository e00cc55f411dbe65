"""Redis connections for the production processes."""

from __future__ import annotations

from functools import cache

from redis import Redis


@cache
def redis_connection(url: str) -> Redis:
    return Redis.from_url(
        url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
    )
