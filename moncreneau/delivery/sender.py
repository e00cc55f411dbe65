"""One signed HTTP POST with a hard deadline, a bounded read and no redirects."""

from __future__ import annotations

import contextlib
import heapq
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from moncreneau.webhooks.urls import RefusedAddress, public_address

USER_AGENT = "MonCreneau-Webhooks/1.0"
# Kept from each response for the delivery log.
EXCERPT_BYTES = 1024
# Read at most this much of a response; the rest is dropped with the connection.
MAX_READ_BYTES = 64 * 1024

_deadline = threading.local()
_policy = threading.local()


class _Watchdog:
    """Shuts the socket of any request still running at its deadline.

    Socket timeouts bound each read, not the request: a receiver that drips one byte a
    second would otherwise hold a delivery for as long as it likes.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._done: set[int] = set()
        self._cut: set[int] = set()
        self._lock = threading.Condition()
        self._counter = 0
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, deadline: float) -> int:
        with self._lock:
            self._counter += 1
            token = self._counter
            heapq.heappush(self._heap, (deadline, token, sock))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadline", daemon=True)
                self._thread.start()
            self._lock.notify()
            return token

    def done(self, token: int) -> bool:
        """Stop watching; True if the deadline cut the request (its socket is not reusable)."""
        with self._lock:
            if token in self._cut:
                self._cut.discard(token)
                return True
            self._done.add(token)
            return False

    def was_cut(self, token: int) -> bool:
        with self._lock:
            return token in self._cut

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._heap:
                    self._lock.wait()
                deadline, token, sock = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._lock.wait(min(delay, 1.0))
                    continue
                heapq.heappop(self._heap)
                if token in self._done:
                    self._done.discard(token)
                    continue
                self._cut.add(token)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


_watchdog = _Watchdog()


class _GuardedConnect:
    """Connects only to the address it vetted: no second lookup for DNS rebinding to use.

    With private URLs refused (production), a host that resolves to a loopback, private,
    link-local or otherwise non-public address is never connected to.
    """

    _dns_host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        if getattr(_policy, "allow_private", True):
            return super()._new_conn()  # type: ignore[misc]
        try:
            address = public_address(self._dns_host, self.port, getattr(_policy, "allowed", ()))
        except socket.gaierror as error:
            raise urllib3.exceptions.NameResolutionError(self._dns_host, self, error) from error  # type: ignore[arg-type]
        except RefusedAddress as error:
            raise urllib3.exceptions.NewConnectionError(self, f"refused: {error}") from error  # type: ignore[arg-type]
        try:
            return urllib3.util.connection.create_connection(
                (address, self.port),
                self.timeout,
                source_address=self.source_address,
                socket_options=self.socket_options,
            )
        except TimeoutError as error:
            raise urllib3.exceptions.ConnectTimeoutError(self, "connection timed out") from error
        except OSError as error:
            raise urllib3.exceptions.NewConnectionError(self, f"Failed: {error}") from error  # type: ignore[arg-type]


class _DeadlineMixin:
    sock: socket.socket | None

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        # Watched until `post` has read what it wants of the body, not just the headers.
        deadline: float | None = getattr(_deadline, "value", None)
        token = None
        if deadline and self.sock is not None:
            token = _deadline.token = _watchdog.watch(self.sock, deadline)
        response = super().getresponse(*args, **kwargs)  # type: ignore[misc]
        if token is not None and _watchdog.was_cut(token):
            # http.client takes the closed socket for the end of the headers: a status
            # line that came alone is no answer.
            raise TimeoutError("the deadline passed while the response headers were read")
        return response


class _DeadlineHTTPConnection(_GuardedConnect, _DeadlineMixin, HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_GuardedConnect, _DeadlineMixin, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


def make_pool_manager(connections_per_host: int) -> urllib3.PoolManager:
    manager = urllib3.PoolManager(
        num_pools=1000,
        maxsize=connections_per_host,
        block=False,
        retries=False,
        headers={"User-Agent": USER_AGENT},
    )
    manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return manager


@dataclass(frozen=True)
class Response:
    status_code: int | None
    error: str | None
    excerpt: str | None
    retry_after: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(
    manager: urllib3.PoolManager,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    allow_private: bool = False,
    allowed: tuple[str, ...] = (),
) -> Response:
    """POST and classify; never raises for what a receiver or the network does."""
    started = time.monotonic()
    deadline = started + timeout
    _deadline.value = deadline
    _policy.allow_private = allow_private
    _policy.allowed = allowed
    response = None
    status: int | None = None
    error: str | None = None
    excerpt: str | None = None
    retry_after: str | None = None
    try:
        response = manager.request(
            "POST",
            url,
            body=body,
            headers=headers,
            timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout),
            redirect=False,
            retries=False,
            preload_content=False,
        )
        status = response.status
        retry_after = response.headers.get("Retry-After")
        chunks: list[bytes] = []
        received = 0
        while received < MAX_READ_BYTES and time.monotonic() < deadline:
            chunk = response.read(min(8192, MAX_READ_BYTES - received), decode_content=False)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
            if received >= EXCERPT_BYTES:
                break
        excerpt = _printable(b"".join(chunks)[:EXCERPT_BYTES].decode("utf-8", "replace"))
        if 300 <= status < 400:
            location = _printable(str(response.headers.get("Location", "?"))[:500])
            error = f"redirect to {location} (not followed)"
        elif not 200 <= status < 300:
            error = f"HTTP {status}"
    except urllib3.exceptions.NewConnectionError as exc:
        error = _connection_error(exc)
    except urllib3.exceptions.ConnectTimeoutError:
        error = "connection timed out"
    except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
        error = f"no response within {timeout:g}s"
    except urllib3.exceptions.HTTPError as exc:
        late = time.monotonic() >= deadline
        error = f"no response within {timeout:g}s" if late else f"{exc.__class__.__name__}: {exc}"
    except OSError as exc:
        late = time.monotonic() >= deadline
        error = f"no response within {timeout:g}s" if late else f"{exc.__class__.__name__}: {exc}"
    finally:
        _deadline.value = None
        token = getattr(_deadline, "token", None)
        cut = token is not None and _watchdog.done(token)
        _deadline.token = None
        if response is not None:
            _finish(response, reusable=not cut)
    duration_ms = int((time.monotonic() - started) * 1000)
    return Response(status, error, excerpt, retry_after, duration_ms)


def _printable(text: str) -> str:
    """Receiver-chosen text as the database can store it (PostgreSQL refuses NUL)."""
    return text.replace("\x00", "\ufffd")


def _finish(response: Any, reusable: bool) -> None:
    """Keep the connection only if the body was read to its end and no deadline cut it."""
    try:
        if reusable and (response.isclosed() or response.length_remaining == 0):
            response.release_conn()
        else:
            response.close()
            if response.connection is not None:
                response.connection.close()
            response.release_conn()
    except Exception:
        response.close()


def _connection_error(exc: Exception) -> str:
    text = str(exc)
    if any(
        m in text for m in ("Name or service not known", "nodename nor servname", "getaddrinfo")
    ):
        return "DNS lookup failed"
    if "Connection refused" in text:
        return "connection refused"
    return f"connection failed: {text}"
