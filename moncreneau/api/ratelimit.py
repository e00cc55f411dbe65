"""Rate limits: a valid API key spends its own budget, any other request its address's.

Shared through Redis by every API process, in memory otherwise.
"""

from __future__ import annotations

import logging

from flask import Flask, g, request
from flask_limiter import Limit, Limiter
from limits import RateLimitItem, parse_many

from moncreneau.config import Settings

log = logging.getLogger(__name__)

_PREFIX = "moncreneau"
# One budget for every route: a key's requests add up wherever they go.
_SCOPE = "api"


def key_bucket(prefix: str) -> str:
    return f"key:{prefix}"


def address_bucket() -> str:
    """Requests without a valid key: whatever prefix they claim, they spend their address's."""
    return f"ip:{request.remote_addr}"


def spend(bucket: str) -> None:
    """Charge this request to `bucket` when the limiter checks it, next in line."""
    g.rate_bucket = bucket


def _bucket() -> str:
    bucket: str = g.rate_bucket
    return bucket


def _exempt() -> bool:
    # Only API calls name a bucket; health checks, the spec and the docs are never limited.
    return "rate_bucket" not in g


class RateLimits:
    """The limiter, and a look at a budget that spends nothing."""

    def __init__(self, limiter: Limiter, items: list[RateLimitItem]) -> None:
        self.limiter = limiter
        self._items = items

    def exhausted(self, bucket: str) -> bool:
        """Whether `bucket` has no budget left; asked before a key costs a database lookup."""
        try:
            return not all(
                self.limiter.limiter.test(item, _PREFIX, bucket, _SCOPE) for item in self._items
            )
        except Exception as error:
            # Redis away: the limiter's own check falls back to this process's memory.
            log.warning("rate limit storage unavailable: %s", error.__class__.__name__)
            return False


def install(app: Flask, settings: Settings) -> RateLimits | None:
    """Check each API call against the bucket that authentication named (`spend`).

    Install it after the hook that authenticates, and before any that answers the call.
    """
    if not settings.rate_limit:
        return None
    limiter = Limiter(
        key_func=_bucket,
        app=app,
        default_limits=[Limit(settings.rate_limit, scope=_SCOPE, shared=True, exempt_when=_exempt)],
        # Unknown paths under /api/v1 spend a budget as well.
        request_identifier=lambda: request.endpoint or "unmatched",
        headers_enabled=True,
        strategy="moving-window",
        storage_uri=settings.redis_url or "memory://",
        key_prefix=_PREFIX,
        # Redis away: keep serving, limited per process, rather than refuse everyone.
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    return RateLimits(limiter, parse_many(settings.rate_limit))
