"""One JSON error shape for every status: `{"code", "status", "message", "errors"?}`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, jsonify
from flask_smorest import Api
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from moncreneau.domain.errors import (
    Conflict,
    DomainError,
    Gone,
    Invalid,
    NotFound,
    PreconditionFailed,
)

log = logging.getLogger(__name__)

STATUS_OF: dict[type[DomainError], int] = {
    NotFound: 404,
    Invalid: 422,
    Conflict: 409,
    PreconditionFailed: 412,
    Gone: 410,
}
_LOCATIONS = {"json", "query", "headers", "view_args", "form", "files", "cookies", "path"}
_DEFAULT_MESSAGES = {
    400: "The request could not be understood.",
    401: "A valid X-API-Key header is required.",
    404: "No such resource.",
    405: "This method is not allowed on this resource.",
    413: "The request body is too large.",
    415: "The request body must be JSON, sent with Content-Type: application/json.",
    422: "The request has invalid fields; see errors.",
    429: "Too many requests; retry after Retry-After seconds.",
    500: "Internal server error.",
    503: "The service is temporarily unavailable; retry shortly.",
}


def error_response(
    code: int,
    message: str | None = None,
    errors: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    payload: dict[str, Any] = {
        "code": code,
        "status": HTTPStatus(code).phrase,
        "message": message or _DEFAULT_MESSAGES.get(code) or HTTPStatus(code).description,
    }
    if errors:
        payload["errors"] = dict(errors)
    response = jsonify(payload)
    response.status_code = code
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _flatten(messages: Any) -> Any:
    """webargs nests field errors under their location; clients care about the field."""
    if isinstance(messages, Mapping) and set(messages) <= _LOCATIONS:
        flat: dict[str, Any] = {}
        for inner in messages.values():
            if isinstance(inner, Mapping):
                flat.update(inner)
            else:
                flat.setdefault("_body", []).extend(inner if isinstance(inner, list) else [inner])
        return flat
    return messages


def domain_error_response(error: DomainError) -> Response:
    code = next(s for cls, s in STATUS_OF.items() if isinstance(error, cls))
    errors = error.errors if isinstance(error, Invalid) else None
    return error_response(code, error.message, errors)


def database_error_response(error: DBAPIError) -> Response:
    if isinstance(error, DataError):
        # Input the schemas let through but the database cannot store: still the caller's.
        return error_response(422, "A value is out of range or cannot be stored.")
    if isinstance(error, IntegrityError):
        return error_response(
            409, "The request conflicts with a concurrent change; read the resource and retry."
        )
    if isinstance(error, OperationalError) or error.connection_invalidated:
        log.warning("database unavailable: %s", error.__class__.__name__)
        return error_response(503, headers={"Retry-After": "1"})
    log.exception("database error")
    return error_response(500)


class MonCreneauApi(Api):
    """flask-smorest's Api, answering every HTTP error in the common shape."""

    def handle_http_exception(self, error: HTTPException) -> Response:
        code = error.code or 500
        data = getattr(error, "data", None) or {}
        errors = data.get("errors") or _flatten(data.get("messages"))
        message = data.get("message")
        if code == 400 and errors and "_body" in errors:
            message, errors = "The request body is not valid JSON.", None
        elif code == 500:
            errors = None
        elif message is None and code not in _DEFAULT_MESSAGES and error.description:
            message = error.description
        response = error_response(code, message, errors, data.get("headers"))
        if code == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response


def register(app: Flask) -> None:
    app.register_error_handler(DomainError, domain_error_response)
    app.register_error_handler(DBAPIError, database_error_response)

    @app.errorhandler(PoolTimeout)
    def _no_connection(_error: PoolTimeout) -> Response:
        log.warning("no database connection free in the pool")
        return error_response(503, headers={"Retry-After": "1"})

    @app.errorhandler(RecursionError)
    def _too_deep(_error: RecursionError) -> Response:
        return error_response(400, "The JSON body is nested too deeply.")

    @app.errorhandler(Exception)
    def _unhandled(error: Exception) -> Response:
        if isinstance(error, HTTPException):
            return app.extensions["moncreneau"].api.handle_http_exception(error)
        log.exception("unhandled error")
        return error_response(500)
