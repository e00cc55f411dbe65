"""Rate limits per API key: shared through Redis by every API process, in memory otherwise."""

from __future__ import annotations

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from moncreneau.api.web import API_PREFIX, PUBLIC_PATHS
from moncreneau.config import Settings


def _bucket() -> str:
    """The key's visible prefix (`mck_xxxxxxxx`): one tenant's burst spends only its budget."""
    parts = request.headers.get("X-API-Key", "").split("_", 2)
    if len(parts) == 3 and parts[0] == "mck" and parts[1].isalnum():
        return f"key:mck_{parts[1]}"
    return f"ip:{get_remote_address()}"


def _exempt() -> bool:
    return not request.path.startswith(API_PREFIX) or request.path.startswith(PUBLIC_PATHS)


def install(app: Flask, settings: Settings) -> Limiter | None:
    if not settings.rate_limit:
        return None
    return Limiter(
        key_func=_bucket,
        app=app,
        default_limits=[settings.rate_limit],
        default_limits_exempt_when=_exempt,
        headers_enabled=True,
        strategy="moving-window",
        storage_uri=settings.redis_url or "memory://",
        key_prefix="moncreneau",
        # Redis away: keep serving, limited per process, rather than refuse everyone.
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
