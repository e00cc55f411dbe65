"""The application factory: wires settings, database, blueprints and error handling."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from moncreneau.api import errors, examples, ratelimit, web
from moncreneau.api.fields import MAX_ID, IdConverter
from moncreneau.auth.keys import KeyCache
from moncreneau.config import Settings
from moncreneau.db import make_engine, make_session_factory
from moncreneau.ops import logs

API_DESCRIPTION = """\
Book appointments and follow every change through signed webhooks.

Every call under `/api/v1` carries `X-API-Key`. Errors share one shape:
`{"code": 422, "status": "Unprocessable Entity", "message": "...", "errors": {...}}`.
Lists return `{"data": [...], "nextCursor": "...", "hasMore": true}` and the same cursor in
the `X-Next-Cursor` header; pass it back as `cursor` for the next page.

**The integrator portal.** Whoever receives your webhooks can see and manage them in a web
page: create a link with `POST /api/v1/portal-links` (`{"expiresInMinutes": 60,
"readOnly": false}`, see *Portal links* below) and hand them its `url`. It opens once and
starts a browser session for your organization until `expiresAt`. The README's section
*Integrator portal* tells more.
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
    "429": (
        "Over the API key's rate limit (without a valid key, the client address's); "
        "`Retry-After` says when to retry."
    ),
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


def _operation(path: str, method: str) -> dict[str, str]:
    pointer = path.replace("~", "~0").replace("/", "~1")
    return {"operationRef": f"#/paths/{pointer}/{method}"}


# What a client does next with a resource it created (or accepted, 202): each link passes
# the new `id` on.
_LINKS: dict[str, dict[str, tuple[str, str, str]]] = {
    "/api/v1/departments": {
        "GetDepartment": ("/api/v1/departments/{department_id}", "get", "department_id"),
        "BookAppointment": ("/api/v1/appointments", "post", "departmentId"),
    },
    "/api/v1/appointments": {
        "GetAppointment": ("/api/v1/appointments/{appointment_id}", "get", "appointment_id"),
        "ChangeAppointment": ("/api/v1/appointments/{appointment_id}", "patch", "appointment_id"),
        **{
            f"{action.capitalize()}Appointment": (
                f"/api/v1/appointments/{{appointment_id}}/{action}",
                "post",
                "appointment_id",
            )
            for action in ("validate", "complete", "cancel")
        },
        "AppointmentHistory": (
            "/api/v1/appointments/{appointment_id}/events",
            "get",
            "appointment_id",
        ),
    },
    "/api/v1/erasures": {
        "GetErasure": ("/api/v1/erasures/{erasure_id}", "get", "erasure_id"),
    },
    "/api/v1/webhooks": {
        "GetWebhook": ("/api/v1/webhooks/{webhook_id}", "get", "webhook_id"),
        "ChangeWebhook": ("/api/v1/webhooks/{webhook_id}", "patch", "webhook_id"),
        "DeleteWebhook": ("/api/v1/webhooks/{webhook_id}", "delete", "webhook_id"),
        "TestWebhook": ("/api/v1/webhooks/{webhook_id}/test", "post", "webhook_id"),
        "RotateWebhookSecret": (
            "/api/v1/webhooks/{webhook_id}/rotate-secret",
            "post",
            "webhook_id",
        ),
        "ListDeliveries": ("/api/v1/webhooks/{webhook_id}/deliveries", "get", "webhook_id"),
    },
}


def _document_links(api: errors.MonCreneauApi) -> None:
    """OpenAPI links from each 201 to what may follow it, for clients and stateful testing."""
    paths: dict[str, dict[str, dict[str, Any]]] = api.spec._paths
    for path, links in _LINKS.items():
        responses = paths[path]["post"]["responses"]
        created = responses.get("201") or responses["202"]
        for name, (target, method, parameter) in links.items():
            link: dict[str, Any] = _operation(target, method)
            if "{" in target:
                link["parameters"] = {parameter: "$response.body#/id"}
            else:
                link["requestBody"] = {parameter: "$response.body#/id"}
            created.setdefault("links", {})[name] = link


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
    logs.configure(settings.log_level, settings.log_format)
    if settings.trusted_proxies:
        # The client's address (rate limits without a valid key) as the proxies saw it.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]

    engine = make_engine(settings.database_url)
    runtime = web.Runtime(
        settings=settings,
        sessions=make_session_factory(engine),
        keys=KeyCache(settings.key_cache_seconds),
    )
    app.extensions["moncreneau"] = runtime

    from moncreneau.api.health import blp as health
    from moncreneau.appointments.routes import blp as appointments
    from moncreneau.departments.routes import blp as departments
    from moncreneau.erasures.routes import blp as erasures
    from moncreneau.events.routes import blp as events
    from moncreneau.events.routes import types_blp as event_types
    from moncreneau.portal.routes import blp as portal_links
    from moncreneau.portal.views import blp as portal
    from moncreneau.webhooks.routes import blp as webhooks

    app.url_map.converters["id"] = IdConverter
    api = errors.MonCreneauApi(app)
    api.register_converter(
        IdConverter, lambda _c: {"type": "integer", "minimum": 1, "maximum": MAX_ID}
    )
    runtime.api = api
    for blueprint in (
        departments,
        appointments,
        events,
        event_types,
        webhooks,
        portal_links,
        erasures,
    ):
        api.register_blueprint(blueprint)
    _document_errors(api)
    _document_links(api)
    # What the schema checks itself (`ErasureCreate._exactly_one`), in words the spec has.
    api.spec.components.schemas["ErasureCreate"].update(minProperties=1, maxProperties=1)
    app.register_blueprint(health)
    app.register_blueprint(portal)
    web.trace(app)
    web.identify(app)
    runtime.limits = ratelimit.install(app, settings)
    web.install(app)
    errors.register(app)
    return app
