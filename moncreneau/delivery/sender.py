"""HTTP POSTs on asyncio: many in flight, pooled keep-alive, a hard deadline, no redirects."""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from moncreneau.delivery.urls import RefusedAddress, public_address

USER_AGENT = "MonCreneau-Webhooks/1.0"
# Kept from each response for the delivery log.
EXCERPT_BYTES = 1024
# Read at most this much of an answer, every byte counted: status line, headers, body, chunk
# framing and trailers. An answer that has not ended by then is no answer.
MAX_READ_BYTES = 64 * 1024
# A body is cut once this much of it has arrived, well within MAX_READ_BYTES: the rest is
# dropped with the connection, and the status still counts.
MAX_BODY_BYTES = 32 * 1024
# Connecting gets at most this much of the request's deadline.
CONNECT_SECONDS = 5.0
# Keep-alive connections idle for this long are closed, whether or not their host is sent to
# again.
IDLE_SECONDS = 30.0
# The idle connections' reaper runs at most this often.
REAP_EVERY = 1.0
# Host lookups run on threads of their own, at most this many at once, and at most
# LOOKUPS_PER_HOST for one host: a resolver that hangs for one host leaves the others room.
RESOLVER_THREADS = 16
LOOKUPS_PER_HOST = 2
# A lookup that has not answered by then is given up on (its thread may still be stuck).
RESOLVE_SECONDS = CONNECT_SECONDS

# A blocking lookup: (host, port) -> the address to connect to.
Lookup = Callable[[str, int], str]


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


@dataclass(frozen=True)
class Target:
    """Where a URL's requests go: the connection's key and the request line's parts."""

    https: bool
    host: str
    port: int
    path: str
    host_header: str


@functools.lru_cache(maxsize=4096)
def target_of(url: str) -> Target:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    default = 443 if https else 80
    port = parts.port or default
    shown = f"[{host}]" if ":" in host else host
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(https, host, port, path, shown if port == default else f"{shown}:{port}")


class ConnectFailed(Exception):
    """The connection could not be opened; `str()` is the attempt's error."""


class Resolver:
    """Blocking host lookups, run so that one host's cannot starve another's.

    They get a pool of `threads` of their own, not the event loop's default executor. The
    lookups of one host run one at a time, shared by every request that wants the host
    meanwhile; one running for `timeout` is given up on and another may start, up to
    `per_host`: lookups that hang occupy that many threads at most, and past that the
    host's requests fail at once. Used from the event loop thread only.
    """

    def __init__(
        self,
        lookup: Lookup,
        threads: int = RESOLVER_THREADS,
        per_host: int = LOOKUPS_PER_HOST,
        timeout: float = RESOLVE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock`: monotonic seconds, for how long a lookup has been running."""
        self._lookup = lookup
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="resolver")
        self._per_host = per_host
        self._timeout = timeout
        self._clock = clock
        # per host, the latest lookup and when it started; and how many are running
        self._latest: dict[str, tuple[asyncio.Future[str], float]] = {}
        self._running: dict[str, int] = {}

    async def resolve(self, host: str, port: int) -> str:
        latest = self._latest.get(host)
        if latest is None or latest[1] + self._timeout <= self._clock():
            latest = self._start(host, port)
        try:
            # shielded: a request that gives up does not cancel the lookup others wait for
            async with asyncio.timeout(self._timeout):
                return await asyncio.shield(latest[0])
        except TimeoutError:
            raise ConnectFailed("DNS lookup timed out") from None

    def _start(self, host: str, port: int) -> tuple[asyncio.Future[str], float]:
        running = self._running.get(host, 0)
        if running >= self._per_host:
            raise ConnectFailed("DNS lookup timed out")
        self._running[host] = running + 1
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._lookup, host, port)
        started = self._latest[host] = (future, self._clock())

        def finished(done: asyncio.Future[str]) -> None:
            self._running[host] -= 1
            if not self._running[host]:
                del self._running[host]
            if self._latest.get(host) is started:
                del self._latest[host]
            if not done.cancelled():
                done.exception()  # retrieved: a lookup nobody waits for any more is no error

        future.add_done_callback(finished)
        return started

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class _Answer:
    """What is kept of one response."""

    __slots__ = ("excerpt", "location", "received", "retry_after", "reusable", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.retry_after: str | None = None
        self.location: str | None = None
        self.excerpt = bytearray()
        self.received = 0
        self.reusable = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[_Answer] | None = None
        self._answer = _Answer()
        self._read = 0  # bytes of the current response read so far
        self.answered = False  # any byte of the current response arrived

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            self.close()
            return
        self.answered = True
        # Nothing past the cap reaches the parser, which copies a header or trailer line
        # each time it grows.
        room = MAX_READ_BYTES - self._read
        over = len(data) > room
        if over:
            data = data[:room]
        self._read += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the receiver switched protocols"))
            return
        except httptools.HttpParserError as error:
            self._fail(ProtocolError(str(error) or error.__class__.__name__))
            return
        if over:
            # Unless the answer ended within the cap (the bytes dropped then make the
            # connection unusable), its headers, chunk framing or trailers ran past it.
            part = "headers" if self._answer.status is None else "answer"
            self._fail(ProtocolError(f"{part} longer than {MAX_READ_BYTES} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self._waiter is not None and not self._waiter.done():
            if self._answer.status is not None:
                # A body delimited by the end of the connection, or cut short: what
                # arrived is the answer.
                self._answer.reusable = False
                self._waiter.set_result(self._answer)
            else:
                self._waiter.set_exception(exc or ConnectionResetError("connection closed"))

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():
            # Bytes after the answer, in the same read: the connection's framing is lost.
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._answer.status is not None:
            return  # a trailer: it may not change how the answer is read
        lowered = name.lower()
        if lowered == b"retry-after":
            self._answer.retry_after = value.decode("latin-1")
        elif lowered == b"location":
            self._answer.location = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._waiter is None or self._waiter.done():
            # A second answer to one request: the connection's framing is lost.
            self.close()
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._answer = _Answer()
            return
        self._answer.status = status

    def on_body(self, body: bytes) -> None:
        answer = self._answer
        if answer.status is None:
            return
        room = EXCERPT_BYTES - len(answer.excerpt)
        if room > 0:
            answer.excerpt += body[:room]
        answer.received += len(body)
        if answer.received >= MAX_BODY_BYTES:
            self._finish(reusable=False)

    def on_message_complete(self) -> None:
        if self._answer.status is not None:
            self._finish(reusable=self._parser.should_keep_alive())

    # --- used by the client ---

    def send(self, request: bytes) -> asyncio.Future[_Answer]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._answer = _Answer()
        self._read = 0
        self.answered = False
        self.transport.write(request)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, reusable: bool) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._answer.reusable = reusable
            self._waiter.set_result(self._answer)
            self._answer = _Answer()
        if not reusable:
            self.close()

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self.close()


class ProtocolError(Exception):
    """The receiver's bytes are not an HTTP/1.1 response."""


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    address: str,
    port: int,
    tls: ssl.SSLContext | None,
    server_hostname: str | None,
) -> _Connection:
    """One TCP (and TLS) connection; the one place a socket is opened."""
    _transport, connection = await loop.create_connection(
        _Connection, address, port, ssl=tls, server_hostname=server_hostname
    )
    return connection


_Key = tuple[bool, str, int]


class Client:
    """POSTs from one event loop, keeping idle connections per host for the next request.

    At most `connections_per_host` idle connections are kept for one host and `max_idle`
    (by default as many) for all hosts together, the oldest closed first; one idle for
    `idle_seconds` is closed even if its host is never sent to again.

    With private URLs refused (production), a host is resolved once per connection and the
    socket opened to that vetted address: no second lookup for DNS rebinding to use, and a
    host resolving to a loopback, private, link-local or otherwise non-public address is
    never connected to.
    """

    def __init__(
        self,
        connections_per_host: int,
        allow_private: bool = False,
        allowed_networks: tuple[str, ...] = (),
        max_idle: int | None = None,
        idle_seconds: float = IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        lookup: Lookup | None = None,
    ) -> None:
        """`clock`: monotonic seconds, for how long a connection has been idle.

        `lookup`: how a host is resolved; by default, with private URLs refused, to its
        vetted public address (with them allowed, the connection resolves it).
        """
        self._keep = connections_per_host
        self._max_idle = connections_per_host if max_idle is None else max_idle
        self._idle_seconds = idle_seconds
        self._clock = clock
        # per host, the most recently used last: the one to reuse
        self._idle: dict[_Key, deque[_Connection]] = {}
        # every idle connection and its host, the oldest first: the one to close
        self._idle_order: dict[_Connection, _Key] = {}
        self._reaper: asyncio.TimerHandle | None = None
        self._tls: ssl.SSLContext | None = None
        if lookup is None and not allow_private:
            lookup = functools.partial(public_address, allowed=allowed_networks)
        self._resolver = None if lookup is None else Resolver(lookup)

    @property
    def idle(self) -> int:
        """How many connections are kept idle."""
        return len(self._idle_order)

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> Response:
        """POST and classify; never raises for what a receiver or the network does."""
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        excerpt: str | None = None
        retry_after: str | None = None
        try:
            async with asyncio.timeout(timeout):
                answer = await self._exchange(target_of(url), body, headers, timeout)
            status = answer.status
            retry_after = answer.retry_after
            excerpt = _printable(answer.excerpt.decode("utf-8", "replace"))
            if status is not None and 300 <= status < 400:
                error = f"redirect to {_printable((answer.location or '?')[:500])} (not followed)"
            elif status is None or not 200 <= status < 300:
                error = f"HTTP {status}"
        except ConnectFailed as failed:
            error = str(failed)
        except TimeoutError:
            error = f"no response within {timeout:g}s"
        except ProtocolError as invalid:
            error = f"invalid response: {invalid}"
        except OSError as exc:
            late = time.monotonic() - started >= timeout
            error = f"no response within {timeout:g}s" if late else _network_error(exc)
        duration_ms = int((time.monotonic() - started) * 1000)
        return Response(status, error, excerpt, retry_after, duration_ms)

    async def _exchange(
        self, target: Target, body: bytes, headers: dict[str, str], timeout: float
    ) -> _Answer:
        request = _request(target, body, headers)
        key = (target.https, target.host, target.port)
        while True:
            connection = self._checkout(key)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(target, min(timeout, CONNECT_SECONDS))
            try:
                answer = await connection.send(request)
            except ConnectionError:
                connection.close()
                if reused and not connection.answered:
                    # A kept connection the receiver closed just as it was reused: the
                    # request reached no application, so it goes again, on the next kept
                    # connection or a new one.
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            if answer.reusable and not connection.closed:
                self._checkin(key, connection)
            else:
                connection.close()
            return answer

    def _checkout(self, key: _Key) -> _Connection | None:
        idle = self._idle.get(key)
        now = self._clock()
        while idle:
            connection = idle.pop()
            del self._idle_order[connection]
            if not idle:
                del self._idle[key]
            if not self._expired(connection, now):
                return connection
            connection.close()
        return None

    def _checkin(self, key: _Key, connection: _Connection) -> None:
        connection.idle_since = self._clock()
        idle = self._idle.setdefault(key, deque())
        idle.append(connection)
        self._idle_order[connection] = key
        if len(idle) > self._keep:
            self._drop(idle[0])
        while len(self._idle_order) > self._max_idle:
            self._drop(next(iter(self._idle_order)))
        self._reap_later()

    def reap(self) -> None:
        """Close the connections idle for `idle_seconds`, and those their host closed."""
        now = self._clock()
        for connection in [c for c in self._idle_order if self._expired(c, now)]:
            self._drop(connection)

    def _expired(self, connection: _Connection, now: float) -> bool:
        return connection.closed or now - connection.idle_since >= self._idle_seconds

    def _drop(self, connection: _Connection) -> None:
        """Close an idle connection; the oldest of its host's, as a rule."""
        key = self._idle_order.pop(connection)
        idle = self._idle[key]
        idle.remove(connection)
        if not idle:
            del self._idle[key]
        connection.close()

    def _reap_later(self) -> None:
        """Make sure the reaper runs when the oldest idle connection has been idle too long."""
        if self._reaper is not None or not self._idle_order:
            return
        oldest = next(iter(self._idle_order))
        due = oldest.idle_since + self._idle_seconds - self._clock()
        self._reaper = asyncio.get_running_loop().call_later(max(due, REAP_EVERY), self._reap_now)

    def _reap_now(self) -> None:
        self._reaper = None
        self.reap()
        self._reap_later()

    async def _connect(self, target: Target, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                address = target.host
                if self._resolver is not None:
                    address = await self._resolver.resolve(target.host, target.port)
                tls = self._tls_context() if target.https else None
                return await open_connection(
                    loop, address, target.port, tls, target.host if target.https else None
                )
        except TimeoutError:
            raise ConnectFailed("connection timed out") from None
        except RefusedAddress as refused:
            raise ConnectFailed(f"connection failed: {refused}") from None
        except ssl.SSLError as failed:
            reason = getattr(failed, "verify_message", None) or failed.reason or failed
            raise ConnectFailed(f"TLS handshake failed: {reason}") from None
        except OSError as exc:
            raise ConnectFailed(_network_error(exc)) from None

    def _tls_context(self) -> ssl.SSLContext:
        # Made on first use: it reads the system's certificate store (and SSL_CERT_FILE).
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def close(self) -> None:
        if self._resolver is not None:
            self._resolver.close()
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for connection in self._idle_order:
            connection.close()
        self._idle.clear()
        self._idle_order.clear()


def _request(target: Target, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {target.path} HTTP/1.1",
        f"Host: {target.host_header}",
        f"Content-Length: {len(body)}",
    ]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    head = "\r\n".join(lines)
    breaks = len(lines) - 1
    if head.count("\n") != breaks or head.count("\r") != breaks:
        raise ValueError("a header holds a line break")
    return (head + "\r\n\r\n").encode("latin-1") + body


def _printable(text: str) -> str:
    """Receiver-chosen text as the database can store it (PostgreSQL refuses NUL)."""
    return text.replace("\x00", "\ufffd")


def _network_error(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return "DNS lookup failed"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc) or exc.__class__.__name__
    if "Connection refused" in text:
        return "connection refused"
    return f"connection failed: {text}"
