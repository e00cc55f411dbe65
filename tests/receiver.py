"""A real HTTP receiver on 127.0.0.1 that records every request and answers as scripted."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str:
        lowered = {k.lower(): v for k, v in self.headers.items()}
        return lowered[name.lower()]


# A behaviour gets the request and the handler; it answers through the handler itself.
Behaviour = Callable[[Received, BaseHTTPRequestHandler], None]


def answer(status: int, body: bytes = b"ok", headers: dict[str, str] | None = None) -> Behaviour:
    def behave(_request: Received, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return behave


def sequence(*behaviours: Behaviour) -> Behaviour:
    """The n-th request gets the n-th behaviour; the last one repeats."""
    calls = {"n": 0}
    lock = threading.Lock()

    def behave(request: Received, handler: BaseHTTPRequestHandler) -> None:
        with lock:
            index = min(calls["n"], len(behaviours) - 1)
            calls["n"] += 1
        behaviours[index](request, handler)

    return behave


def hang(seconds: float) -> Behaviour:
    def behave(_request: Received, _handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)

    return behave


def drip(head: bytes, tail: bytes, every: float, ended: list[float] | None = None) -> Behaviour:
    """Raw bytes: `head` at once, then `tail` one byte every `every` seconds.

    When the client hangs up, the drip stops and the time goes to `ended`.
    """

    def behave(_request: Received, handler: BaseHTTPRequestHandler) -> None:
        try:
            handler.wfile.write(head)
            handler.wfile.flush()
            for byte in tail:
                time.sleep(every)
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
        except OSError:
            if ended is not None:
                ended.append(time.time())
        handler.close_connection = True

    return behave


def stream(
    size: int,
    status: int = 200,
    chunk_size: int = 64 * 1024,
    written: list[int] | None = None,
) -> Behaviour:
    """Answer `status` with a `size`-byte body written chunk by chunk, never all in memory.

    How many bytes went out before the client hung up (or all of them) goes to `written`.
    """
    chunk = b"x" * chunk_size

    def behave(_request: Received, handler: BaseHTTPRequestHandler) -> None:
        sent = 0
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "text/plain")
            handler.send_header("Content-Length", str(size))
            handler.end_headers()
            while sent < size:
                piece = chunk[: min(chunk_size, size - sent)]
                handler.wfile.write(piece)
                sent += len(piece)
        finally:
            if written is not None:
                written.append(sent)

    return behave


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a worker opening a hundred connections at
    # once saw most of them wait for SYN retries (1 s, then 3 s), as no real server does.
    request_queue_size = 1024
    daemon_threads = True


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def on(self, path: str, behaviour: Behaviour) -> str:
        self.behaviours["/" + path.lstrip("/")] = behaviour
        return self.url(path)

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == "/" + path.lstrip("/")]

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 30.0
    ) -> list[Received]:
        """Poll until `predicate(received)` holds; fails with what arrived otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                snapshot = list(self.received)
            if predicate(snapshot):
                return snapshot
            time.sleep(0.05)
        with self.lock:
            got = [(r.path, r.headers.get("X-Moncreneau-Event")) for r in self.received]
        raise AssertionError(f"receiver condition not met within {timeout}s; received {got}")


def start_receiver(port: int = 0, host: str = "127.0.0.1") -> Receiver:
    """Listen on `port` (0: any free one) of `host` (any of 127.0.0.0/8 is loopback)."""
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = Received(
                self.path, dict(self.headers.items()), self.rfile.read(length), time.time()
            )
            receiver = holder[0]
            with receiver.lock:
                receiver.received.append(request)
            behaviour = receiver.behaviours.get(self.path, answer(200))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                behaviour(request, self)

        def log_message(self, *args: Any) -> None:
            pass

    server = _Server((host, port), Handler)
    receiver = Receiver(server)
    holder.append(receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver
