"""gunicorn, started from the `moncreneau api` command."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from moncreneau.config import Settings
from moncreneau.ops import logs, metrics


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from moncreneau.app import create_app

        return create_app()


class _Logger(Logger):
    """gunicorn's logger without its access line: the app writes its own (`web._finish`)."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        # gunicorn builds the line's fields whenever a log config is given, even with no
        # access log to write them to: a few percent of a booking's CPU.
        return None


def _shared_metrics_dir() -> None:
    """Workers count into one folder, so /metrics adds them up whichever worker answers."""
    if os.environ.get(metrics.MULTIPROCESS_ENV):
        return  # the operator's: it may also hold the relay's and workers' counts
    folder = tempfile.mkdtemp(prefix="moncreneau-metrics-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    metrics.use_multiprocess_dir(Path(folder))


def _log_config(settings: Settings) -> dict[str, Any]:
    """gunicorn's own lines in the same form as the app's; the app writes the access log."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"moncreneau": {"()": logs.formatter, "form": settings.log_format}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "moncreneau",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
        # The app's own handler (logs.configure) is the root's only one.
        "root": {"handlers": []},
    }


# How long an idle client connection stays open.
KEEPALIVE_SECONDS = 75


def serve(host: str, port: int, workers: int) -> None:
    _shared_metrics_dir()
    _Gunicorn(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "worker_class": "gthread",
            "threads": 4,
            "accesslog": None,
            "logger_class": _Logger,
            "logconfig_dict": _log_config(Settings.from_env()),
            "timeout": 30,
            "graceful_timeout": 10,
            # gunicorn's 2 s default closes a client's pooled connection between two calls a
            # few seconds apart, and a POST sent on it just then is lost to the client (not
            # retried: it may have been received). Longer than the 60 s idle timeout of the
            # usual load balancers, so that they close first.
            "keepalive": KEEPALIVE_SECONDS,
        }
    ).run()
