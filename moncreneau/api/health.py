"""Liveness, readiness, metrics and the docs page's assets: outside the API, without a key."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, jsonify, redirect, request, send_from_directory
from sqlalchemy import text
from werkzeug.wrappers import Response as BaseResponse

from moncreneau.api.errors import error_response
from moncreneau.api.web import runtime
from moncreneau.ops import metrics

blp = Blueprint("health", __name__)


def _swagger_ui_dir() -> Path | None:
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


@blp.get("/")
def home() -> BaseResponse:
    """A person who opens the server's address finds the API's documentation."""
    return redirect("/api/v1/docs", 302)


@blp.get("/healthz")
def healthz() -> Any:
    return {"status": "ok"}


@blp.get("/readyz")
def readyz() -> Response:
    checks: dict[str, str] = {}
    rt = runtime()
    try:
        with rt.sessions() as db:
            db.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:
        checks["database"] = f"unavailable: {error.__class__.__name__}"
    if rt.settings.redis_url:
        try:
            from moncreneau.delivery.queueing import redis_connection

            redis_connection(rt.settings.redis_url).ping()
            checks["redis"] = "ok"
        except Exception as error:
            checks["redis"] = f"unavailable: {error.__class__.__name__}"
    ready = all(v == "ok" for v in checks.values())
    response = jsonify({"status": "ok" if ready else "unavailable", "checks": checks})
    response.status_code = 200 if ready else 503
    return response


@blp.get("/metrics")
def prometheus_metrics() -> Response:
    rt = runtime()
    token = rt.settings.metrics_token
    if not token:
        # Totals across tenants and queries over the backlog: not for whoever asks.
        return error_response(
            403, "/metrics is off: set MONCRENEAU_METRICS_TOKEN, then scrape with that token."
        )
    if not hmac.compare_digest(
        request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()
    ):
        return error_response(
            401, "/metrics wants Authorization: Bearer <MONCRENEAU_METRICS_TOKEN>."
        )
    backlog = metrics.BacklogCollector(rt.sessions, rt.queue.backlog)
    return Response(metrics.exposition(backlog), content_type=metrics.CONTENT_TYPE)


@blp.get("/api/v1/docs/assets/<path:filename>")
def docs_assets(filename: str) -> Response:
    folder = _swagger_ui_dir()
    if folder is None:
        abort(404)
    return send_from_directory(folder, filename, max_age=86400)
