"""The application factory: wires settings, database, blueprints and error handling."""

from __future__ import annotations

import logging

from flask import Flask

from moncreneau import errors, web
from moncreneau.config import Settings
from moncreneau.db import make_engine, make_session_factory

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

    api = errors.MonCreneauApi(app)
    runtime.api = api
    for blueprint in (departments, appointments, events):
        api.register_blueprint(blueprint)
    app.register_blueprint(health)
    web.install(app)
    errors.register(app)
    return app
