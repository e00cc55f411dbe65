"""`moncreneau listen`: a local receiver that verifies each delivery and prints a line for it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from moncreneau.webhooks.signing import SignatureError, verify

MAX_BODY = 1_048_576


def describe(body: bytes, headers: dict[str, str], secret: str | None) -> tuple[int, str]:
    """The status to answer and the line to print for one delivery."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        event: Any = json.loads(body)
    except ValueError:
        return 400, "! body is not JSON"
    if secret is None:
        verdict = "unverified (no --secret)"
        status = 200
    else:
        try:
            verify(body, headers, secret, now=int(time.time()))
            standard = lowered.get("webhook-signature")
            if standard:
                # both schemes must hold, each on its own
                verify(
                    body,
                    {k: v for k, v in headers.items() if not k.lower().startswith("webhook-")},
                    secret,
                    now=int(time.time()),
                )
            verdict, status = "verified", 200
        except SignatureError as error:
            verdict, status = f"NOT VERIFIED: {error}", 401
    obj = event.get("data", {}).get("object", {}) if isinstance(event, dict) else {}
    subject = f"appointment {obj['id']} v{obj.get('version')}" if "status" in obj else ""
    line = (
        f"{lowered.get('x-moncreneau-event', event.get('type', '?')):<24} {subject:<22} "
        f"delivery {lowered.get('x-moncreneau-delivery', '?')} "
        f"attempt {lowered.get('x-moncreneau-attempt', '?')}  {verdict}"
    )
    return status, line


def serve(host: str, port: int, secret: str | None, echo: Callable[[str], None]) -> None:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.send_error(413)
                return
            body = self.rfile.read(length)
            status, line = describe(body, dict(self.headers.items()), secret)
            with lock:
                echo(line)
            payload = b"ok" if status == 200 else line.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    echo(f"listening on http://{host}:{server.server_port}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
