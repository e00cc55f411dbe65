"""`moncreneau listen`: a local receiver that verifies each delivery and prints a line for it."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from moncreneau.receiver import WebhookVerificationError, verify

MAX_BODY = 1_048_576
# POST here (not a delivery) to make the next N deliveries fail: `?count=N`.
FAIL_PATH = "/_listen/fail"
# Not passed on when forwarding: they describe this hop, not the delivery.
HOP_HEADERS = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te"}
)


@dataclass
class Listener:
    """What the receiver does with each delivery; shared by the server's threads."""

    secret: str | None
    echo: Callable[[str], None]
    forward_to: str | None = None
    fail_next: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_failure(self) -> bool:
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return True
            return False

    def handle(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """The status and body to answer one delivery with; prints its line."""
        status, line = describe(body, headers, self.secret)
        if status == 200 and self.take_failure():
            status, line = 500, f"{line}  -> answered 500 (told to fail)"
        elif status == 200 and self.forward_to:
            status = forward(self.forward_to, body, headers)
            line = f"{line}  -> {self.forward_to} answered {status}"
        with self.lock:
            self.echo(line)
        return status, (b"ok" if status == 200 else line.encode())


def describe(body: bytes, headers: dict[str, str], secret: str | None) -> tuple[int, str]:
    """The status to answer and the line to print for one delivery."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        event: Any = json.loads(body)
    except ValueError:
        return 400, "! body is not JSON"
    if not isinstance(event, dict):
        return 400, "! body is not an event envelope"
    if secret is None:
        verdict, status = "unverified (no --secret)", 200
    else:
        try:
            verify(body, headers, secret)
            verdict, status = "verified", 200
        except WebhookVerificationError as error:
            verdict, status = f"NOT VERIFIED: {error}", 401
    data = event.get("data")
    obj = data.get("object", {}) if isinstance(data, dict) else {}
    subject = f"appointment {obj.get('id')} v{obj.get('version')}" if "status" in obj else ""
    line = (
        f"{lowered.get('x-moncreneau-event', event.get('type', '?')):<24} {subject:<22} "
        f"delivery {lowered.get('x-moncreneau-delivery', '?')} "
        f"attempt {lowered.get('x-moncreneau-attempt', '?')}  {verdict}"
    )
    return status, line


def forward(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST the delivery unchanged to `url`; its status, or 502 if it cannot be reached."""
    kept = {k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS}
    request = urllib.request.Request(url, data=body, headers=kept, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 502


def _count(raw: str) -> int | None:
    """A whole number as HTTP writes one; None for anything else (signs, spaces, 4,300 digits)."""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


def serve(host: str, port: int, listener: Listener) -> ThreadingHTTPServer:
    """Bind the receiver (port 0 picks a free one); the caller runs `serve_forever`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = _count(self.headers.get("Content-Length") or "0")
            if length is None:
                self.close_connection = True
                self._answer(400, b"bad Content-Length")
                return
            if length > MAX_BODY:
                self._answer(413, b"too large")
                return
            body = self.rfile.read(length)
            target = urlsplit(self.path)
            if target.path == FAIL_PATH:
                count = _count((parse_qs(target.query).get("count") or ["1"])[0])
                if count is None:
                    self._answer(400, b"count must be a whole number")
                    return
                with listener.lock:
                    listener.fail_next = count
                listener.echo(f"the next {count} delivery(ies) will be answered 500")
                self._answer(200, b"ok")
                return
            self._answer(*listener.handle(body, dict(self.headers.items())))

        def _answer(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def api_call(api: str, key: str, method: str, path: str, body: Any = None) -> Any:
    """One call to a running MonCréneau API; raises RuntimeError with its error message."""
    request = urllib.request.Request(
        f"{api.rstrip('/')}/api/v1{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")
        raise RuntimeError(f"{method} {path} answered {error.code}: {detail}") from None
    except OSError as error:
        raise RuntimeError(f"cannot reach {api}: {error}") from None
    return json.loads(raw) if raw else None
