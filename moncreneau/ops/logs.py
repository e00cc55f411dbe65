"""Logging set-up: one JSON object a line, carrying the request, organization and delivery."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# What the current request is about; set by the web layer, read by every log record.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
organization_id: ContextVar[int | None] = ContextVar("organization_id", default=None)

# Attributes a record may carry (through `extra=` or the context) that the JSON line keeps.
FIELDS = (
    "request_id",
    "organization_id",
    "event_id",
    "delivery_id",
    "webhook_id",
    "attempt",
    "method",
    "path",
    "route",
    "status",
    "duration_ms",
    "count",
)
FORMATS = ("json", "text")


class ContextFilter(logging.Filter):
    """Copies the request's context onto each record, unless the call gave its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in (("request_id", request_id), ("organization_id", organization_id)):
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(
            f"{name}={value}"
            for name in FIELDS
            if (value := getattr(record, name, None)) is not None
        )
        return f"{text} [{context}]" if context else text


def formatter(form: str) -> logging.Formatter:
    return JsonFormatter() if form == "json" else TextFormatter()


def configure(level: str, form: str) -> None:
    """Route every logger through one handler on stderr, in `form` ("json" or "text")."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "moncreneau", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.moncreneau = True  # type: ignore[attr-defined]
        handler.addFilter(ContextFilter())
        root.addHandler(handler)
    handler.setFormatter(formatter(form))
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)
