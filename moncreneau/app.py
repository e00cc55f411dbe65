"""The application factory: wires settings, database, blueprints and error handling."""

from __future__ import annotations

import logging
import re

from flask import Flask

from moncreneau import errors, examples, ratelimit, web
from moncreneau.config import Settings
from moncreneau.db import make_engine, make_session_factory
from moncreneau.fields import MAX_ID, IdConverter

API_DESCRIPTION = """\
Book appointments and follow every change through signed webhooks.

Every call under `/api/v1` carries `X-API-Key`. Errors share one shape:
`{"code": 422, "status": "Unprocessable Entity", "message": "...", "errors": {...}}`.
Lists return `{"data": [...], "nextCursor": "...", "hasMore": true}` and the same cursor in
the `X-Next-Cursor` header; pass it back as `cursor` for the next page.
"""


def _spec_config(settings: Settings) -> dict[str, object]:
    return {
        "API_TITLE": "MonCréneau API",
        "API_VERSION": "1.0",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/api/v1",
        "OPENAPI_JSON_PATH": "openapi.json",
        "OPENAPI_SWAGGER_UI_PATH": "docs",
        "OPENAPI_SWAGGER_UI_URL": "/api/v1/docs/assets/",
        "API_SPEC_OPTIONS": {
            "info": {"description": API_DESCRIPTION},
            "security": [{"ApiKeyAuth": []}],
            "components": {
                "securitySchemes": {
                    "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
                }
            },
        },
    }


_ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}
_COMMON_ERRORS = {
    "400": "The body is not valid JSON, or `Idempotency-Key` is malformed.",
    "409": "A request with this `Idempotency-Key` is still being processed.",
    "422": "Invalid fields, or an `Idempotency-Key` already used with another request.",
    "401": "Missing, unknown or revoked `X-API-Key`.",
    "404": "No such resource in your organization.",
    "413": "The request body is too large.",
    "415": "The body is not `application/json`.",
    "429": "Over the API key's rate limit; `Retry-After` says when to retry.",
}
_PATH_PARAMETER = re.compile(r"\{(\w+)\}")


def _error_example(path: str, code: str) -> dict[str, object]:
    """The sample body of a `code` answer on `path`; a 404 names the path's last resource."""
    if code == "404":
        return examples.NOT_FOUND[_PATH_PARAMETER.findall(path)[-1]]
    return examples.ERRORS[code]


def _document_errors(api: errors.MonCreneauApi) -> None:
    """Give every operation its error responses, all in the common error shape, with examples."""
    shared = api.spec.components.responses
    shared["UNPROCESSABLE_ENTITY"]["content"]["application/json"]["examples"] = examples.INVALID
    shared["DEFAULT_ERROR"]["content"]["application/json"]["example"] = examples.ERRORS["default"]
    paths: dict[str, dict[str, dict[str, object]]] = api.spec._paths
    for path, operations in paths.items():
        if not path.startswith(web.API_PREFIX):
            continue
        for method, operation in operations.items():
            if method not in ("get", "post", "patch", "put", "delete"):
                continue
            responses: dict[str, dict[str, object]] = operation.setdefault("responses", {})  # type: ignore[assignment]
            wanted = ["401", "429"]
            if "{" in path:
                wanted.append("404")
            if method in ("post", "patch"):
                wanted += ["400", "413", "415"]
            if method == "post":
                wanted += ["409", "422"]
            for code in wanted:
                responses.setdefault(code, {"description": _COMMON_ERRORS[code]})
            for code, response in responses.items():
                if code.startswith("4") and "$ref" not in response:
                    content: dict[str, dict[str, object]] = response.setdefault("content", {})  # type: ignore[assignment]
                    media = content.setdefault("application/json", {})
                    media.setdefault("schema", _ERROR_SCHEMA)
                    if "example" not in media and "examples" not in media:
                        media["example"] = _error_example(path, code)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__, static_folder=None)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config.update(
        _spec_config(settings),
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        PROPAGATE_EXCEPTIONS=False,
        TESTING=settings.testing,
    )
    logging.basicConfig(level=settings.log_level)
    logging.getLogger("alembic").setLevel(logging.WARNING)

    engine = make_engine(settings.database_url)
    runtime = web.Runtime(settings=settings, sessions=make_session_factory(engine))
    app.extensions["moncreneau"] = runtime

    from moncreneau.appointments.routes import blp as appointments
    from moncreneau.departments.routes import blp as departments
    from moncreneau.events.routes import blp as events
    from moncreneau.health import blp as health
    from moncreneau.webhooks.routes import blp as webhooks

    app.url_map.converters["id"] = IdConverter
    api = errors.MonCreneauApi(app)
    api.register_converter(
        IdConverter, lambda _c: {"type": "integer", "minimum": 1, "maximum": MAX_ID}
    )
    runtime.api = api
    for blueprint in (departments, appointments, events, webhooks):
        api.register_blueprint(blueprint)
    _document_errors(api)
    app.register_blueprint(health)
    ratelimit.install(app, settings)
    web.install(app)
    errors.register(app)
    return app
