"""The delivery HTTP client against raw loopback servers that script every byte."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from moncreneau.delivery.sender import (
    EXCERPT_BYTES,
    LOOKUPS_PER_HOST,
    MAX_BODY_BYTES,
    MAX_READ_BYTES,
    RESOLVER_THREADS,
    Client,
    ConnectFailed,
    Resolver,
    Response,
)


@dataclass(frozen=True)
class Request:
    line: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        assert len(values) == 1, f"{name}: {values}"
        return values[0]


class Peer:
    """One accepted connection, as its handler sees it."""

    def __init__(self, server: RawServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self._buffer = b""

    def read_request(self) -> Request | None:
        """The next request, recorded on the server; None if the client closed first."""
        while b"\r\n\r\n" not in self._buffer:
            if not self._fill():
                return None
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        line, *fields = head.decode("latin-1").split("\r\n")
        headers = [(name, value.strip()) for name, value in (f.split(":", 1) for f in fields)]
        length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
        while len(self._buffer) < length:
            if not self._fill():
                return None
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        request = Request(line, headers, body)
        self.server.requests.append(request)
        return request

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self._buffer += data
        return bool(data)


Handler = Callable[[Peer], None]


class RawServer:
    """A TCP (or TLS) server on 127.0.0.1 running `handler` on each connection in a thread."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.accepted = 0
        self.finished = 0  # connections closed, by the client or the handler
        self.requests: list[Request] = []
        self._count = threading.Lock()
        self.stopped = threading.Event()
        self._peers: list[Peer] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._start(self._accept_loop)

    @property
    def open(self) -> int:
        """Connections accepted and not closed yet."""
        with self._count:
            return self.accepted - self.finished

    def url(self, path: str = "/hook", scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self.stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._count:
                self.accepted += 1
            sock.settimeout(None)
            peer = Peer(self, sock)
            self._peers.append(peer)
            self._start(self._serve, peer)

    def _serve(self, peer: Peer) -> None:
        try:
            if self.tls is not None:
                peer.sock = self.tls.wrap_socket(peer.sock, server_side=True)
            self.handler(peer)
        except (OSError, ValueError):
            pass  # the client went away, or the server is stopping
        finally:
            peer.sock.close()
            with self._count:
                self.finished += 1

    def stop(self) -> None:
        self.stopped.set()
        self._listener.close()
        for peer in list(self._peers):
            with contextlib.suppress(OSError):
                peer.sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        assert not any(thread.is_alive() for thread in self._threads)


Serve = Callable[..., RawServer]


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[RawServer] = []

    def start(handler: Handler, tls: ssl.SSLContext | None = None) -> RawServer:
        servers.append(RawServer(handler, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def post_all(
    url: str,
    bodies: list[bytes],
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> list[Response]:
    """POSTs in sequence on one fresh Client, closed at the end."""

    async def scenario() -> list[Response]:
        client = Client(connections_per_host=4, allow_private=True)
        try:
            return [await client.post(url, body, headers or {}, timeout) for body in bodies]
        finally:
            client.close()
            await asyncio.sleep(0)

    return asyncio.run(scenario())


def post(
    url: str, body: bytes = b"{}", headers: dict[str, str] | None = None, timeout: float = 5.0
) -> Response:
    return post_all(url, [body], headers, timeout)[0]


def answering(*responses: bytes, pause: float = 0.0) -> Handler:
    """Answers every request on the connection with `responses`, written one by one."""

    def handler(peer: Peer) -> None:
        while peer.read_request() is not None:
            for piece in responses:
                peer.send(piece)
                time.sleep(pause)

    return handler


def ok(body: bytes = b"ok", status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def test_a_chunked_answer_is_decoded_and_its_connection_reused(serve: Serve) -> None:
    server = serve(
        answering(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            b"6\r\n world\r\n",
            b"0\r\n\r\n",
            pause=0.01,
        )
    )
    first, second = post_all(server.url(), [b"1", b"2"])
    for response in (first, second):
        assert (response.status_code, response.error, response.excerpt) == (
            200,
            None,
            "hello world",
        )
    assert server.accepted == 1
    assert [r.body for r in server.requests] == [b"1", b"2"]


def test_a_body_ended_by_the_connection_closing_is_read_and_not_reused(serve: Serve) -> None:
    def handler(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall ")
        time.sleep(0.02)
        peer.send(b"of it")

    server = serve(handler)
    first, second = post_all(server.url(), [b"1", b"2"])
    for response in (first, second):
        assert (response.status_code, response.error, response.excerpt) == (200, None, "all of it")
    assert server.accepted == 2
    assert len(server.requests) == 2


def test_an_interim_100_continue_is_skipped_for_the_real_answer(serve: Serve) -> None:
    server = serve(
        answering(b"HTTP/1.1 100 Continue\r\n\r\n", ok(b"made", "201 Created"), pause=0.01)
    )
    first, second = post_all(server.url(), [b"1", b"2"])
    for response in (first, second):
        assert (response.status_code, response.error, response.excerpt) == (201, None, "made")
    assert server.accepted == 1


def test_keep_alive_carries_sequential_posts_on_one_connection_byte_for_byte(serve: Serve) -> None:
    server = serve(answering(ok(b'{"received": true}')))
    bodies = [b'{"n": %d}' % n + bytes(range(256)) + b"\r\n\r\nend" for n in range(5)]
    headers = {"Content-Type": "application/json", "Webhook-Id": "msg_1", "X-Custom": "a b"}
    responses = post_all(server.url("/path?q=1"), bodies, headers)
    assert [(r.status_code, r.error, r.excerpt) for r in responses] == [
        (200, None, '{"received": true}')
    ] * 5
    assert server.accepted == 1
    assert len(server.requests) == 5
    for request, body in zip(server.requests, bodies, strict=True):
        assert request.line == "POST /path?q=1 HTTP/1.1"
        assert request.header("Host") == f"127.0.0.1:{server.port}"
        assert request.header("Content-Length") == str(len(body))
        assert request.body == body
        for name, value in headers.items():
            assert request.header(name) == value


@pytest.mark.parametrize("close_when", ["after the answer", "as the next request arrives"])
def test_a_kept_connection_closed_by_the_server_is_retried_once_on_a_new_one(
    serve: Serve, close_when: str
) -> None:
    def handler(peer: Peer) -> None:
        if peer.read_request() is None:
            return
        peer.send(ok())  # keep-alive by default: no Connection: close
        if close_when == "as the next request arrives":
            # Wait for the next request's bytes, then close without reading them (a RST):
            # the request went out on the kept connection and never reached the handler.
            select.select([peer.sock], [], [], 5)

    server = serve(handler)
    first, second = post_all(server.url(), [b"first", b"second"])
    assert (first.status_code, first.error) == (200, None)
    assert (second.status_code, second.error, second.excerpt) == (200, None, "ok")
    assert server.accepted == 2
    assert [r.body for r in server.requests] == [b"first", b"second"]


def test_a_server_that_never_answers_times_out(serve: Serve) -> None:
    def handler(peer: Peer) -> None:
        peer.read_request()
        peer.server.stopped.wait()

    server = serve(handler)
    response = post(server.url(), timeout=0.5)
    assert (response.status_code, response.error) == (None, "no response within 0.5s")
    assert 500 <= response.duration_ms < 5000
    assert len(server.requests) == 1


def test_headers_longer_than_the_limit_are_an_invalid_response(serve: Serve) -> None:
    def handler(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Padding: " + b"a" * 1000 + b"\r\n"
        for _ in range(MAX_READ_BYTES // len(line) + 2):
            peer.send(line)
        peer.server.stopped.wait()

    server = serve(handler)
    response = post(server.url(), timeout=5)
    assert response.status_code is None
    assert response.error == f"invalid response: headers longer than {MAX_READ_BYTES} bytes"
    assert response.duration_ms < 4000


def test_garbage_bytes_are_an_invalid_response(serve: Serve) -> None:
    server = serve(answering(b"hello\r\n\r\n"))
    response = post(server.url())
    assert response.status_code is None
    assert response.error is not None
    assert response.error.startswith("invalid response"), response.error


def _chunked(body: bytes, size: int) -> bytes:
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"


@pytest.mark.parametrize("framing", ["Content-Length", "chunks of 100 bytes"])
def test_a_body_over_the_read_limit_is_cut_to_an_excerpt_and_drops_the_connection(
    serve: Serve, framing: str
) -> None:
    size = 1024 * 1024
    assert size > MAX_READ_BYTES > MAX_BODY_BYTES
    body = b"a" * size
    server = serve(answering(ok(body) if framing == "Content-Length" else _chunked(body, 100)))
    first, second = post_all(server.url(), [b"1", b"2"])
    for response in (first, second):
        assert (response.status_code, response.error) == (200, None)
        assert response.excerpt == "a" * EXCERPT_BYTES
    assert server.accepted == 2


# Past the last chunk of a 200, trailers that never end: (one piece, repeated forever).
ENDLESS_TRAILERS = {
    "trailer lines": b"X-Trailer: " + b"t" * 1000 + b"\r\n",
    "one trailer line that never ends": b"t" * 1000,
    "many short trailer lines": b"a:b\r\n" * 200,
}


@pytest.mark.parametrize("name", ENDLESS_TRAILERS)
def test_endless_trailers_are_cut_at_the_read_limit_and_fail_the_attempt(
    serve: Serve, name: str
) -> None:
    piece = ENDLESS_TRAILERS[name]
    sent: list[int] = []

    def handler(peer: Peer) -> None:
        peer.read_request()
        # What the kernel buffers between the two ends is all that may pass the cap.
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        total = 0
        try:
            peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            peer.send(b"5\r\nhello\r\n0\r\n" + (b"X-Open: " if name.startswith("one") else b""))
            while not peer.server.stopped.is_set():
                peer.send(piece)
                total += len(piece)
        finally:
            sent.append(total)

    server = serve(handler)
    response = post(server.url(), timeout=5)
    # The client hung up: the receiver's writes failed soon after the cap.
    deadline = time.monotonic() + 10
    while not sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sent, "the receiver could write on and on"
    assert sent[0] < 16 * MAX_READ_BYTES, sent
    assert response.status_code is None
    assert response.error == f"invalid response: answer longer than {MAX_READ_BYTES} bytes"


def test_a_trailer_does_not_change_how_the_answer_is_read(serve: Serve) -> None:
    server = serve(
        answering(
            b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n"
            b"4\r\nbusy\r\n0\r\nRetry-After: 86400\r\nLocation: /elsewhere\r\n\r\n"
        )
    )
    response = post(server.url())
    assert (response.status_code, response.error, response.retry_after, response.excerpt) == (
        503,
        "HTTP 503",
        "7",
        "busy",
    )


def test_bytes_after_the_answer_in_the_same_read_drop_the_connection(serve: Serve) -> None:
    # A second answer nobody asked for, cut short: it must not be read as the next one's.
    server = serve(answering(ok(b"first") + b"HTTP/1.1 500 Oops\r\nContent-Le"))
    first, second = post_all(server.url(), [b"1", b"2"])
    for response in (first, second):
        assert (response.status_code, response.error, response.excerpt) == (200, None, "first")
    assert server.accepted == 2


def test_a_redirect_is_reported_not_followed(serve: Serve) -> None:
    server = serve(answering(ok(b"", "302 Found", "Location: https://example.test/moved\r\n")))
    response = post(server.url())
    assert response.status_code == 302
    assert response.error == "redirect to https://example.test/moved (not followed)"
    assert len(server.requests) == 1


def test_a_503_keeps_its_retry_after(serve: Serve) -> None:
    server = serve(answering(ok(b"busy", "503 Service Unavailable", "Retry-After: 7\r\n")))
    response = post(server.url())
    assert (response.status_code, response.error, response.retry_after, response.excerpt) == (
        503,
        "HTTP 503",
        "7",
        "busy",
    )


def test_a_closed_port_is_connection_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    response = post(f"http://127.0.0.1:{port}/hook")
    assert (response.status_code, response.error) == (None, "connection refused")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
) -> x509.Certificate:
    """A CA when `issuer` is None, else a server certificate for localhost and 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    if issuer is None:
        signer = key
        builder = builder.issuer_name(_name(subject)).add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
        usage = {"key_cert_sign": True, "crl_sign": True}
    else:
        ca, signer = issuer
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key())
        builder = (
            builder.issuer_name(ca.subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(aki, critical=False)
        )
        usage = {"digital_signature": True}
    flags = dict.fromkeys(
        [
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ],
        False,
    )
    builder = builder.add_extension(x509.KeyUsage(**(flags | usage)), critical=True)
    return builder.sign(signer, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[ssl.SSLContext, Path, Path]:
    """A server context for localhost, the CA that signed it, and an unrelated CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Test CA", ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate("localhost", server_key, (ca, ca_key))
    other = _certificate("Unrelated CA", ec.generate_private_key(ec.SECP256R1()))
    chain, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    chain.write_bytes(_pem(server_cert))
    key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    (tmp_path / "other.pem").write_bytes(_pem(other))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key_file)
    return context, tmp_path / "ca.pem", tmp_path / "other.pem"


def test_https_verifies_the_receiver_against_the_trusted_certificates(
    serve: Serve, tls_files: tuple[ssl.SSLContext, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    context, ca, other = tls_files
    server = serve(answering(ok(b"secure")), tls=context)
    url = server.url("/x", scheme="https", host="localhost")

    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    first, second = post_all(url, [b"1", b"2"])
    for response in (first, second):
        assert (response.status_code, response.error, response.excerpt) == (200, None, "secure")
    assert server.accepted == 1
    assert [r.line for r in server.requests] == ["POST /x HTTP/1.1"] * 2
    assert server.requests[0].header("Host") == f"localhost:{server.port}"

    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    response = post(url)
    assert response.status_code is None
    assert response.error is not None
    assert response.error.startswith("TLS handshake failed"), response.error
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Evil": "a\r\nInjected: yes"},
        {"X-Evil": "a\nInjected: yes"},
        {"X-Evil": "a\rInjected: yes"},
        {"X-Evil\r\nInjected": "yes"},
    ],
)
def test_a_header_holding_a_line_break_is_refused_before_sending(
    serve: Serve, headers: dict[str, str]
) -> None:
    server = serve(answering(ok()))
    with pytest.raises(ValueError, match="line break"):
        post(server.url(), headers=headers)
    time.sleep(0.1)  # room for a connection that should never come
    assert server.accepted == 0
    assert server.requests == []


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _post_at_once(client: Client, servers: list[RawServer], each: int) -> None:
    """`each` POSTs in parallel to every server: as many connections, kept idle after."""
    posts = [client.post(s.url(), b"{}", {}, 5.0) for s in servers for _ in range(each)]
    responses = await asyncio.gather(*posts)
    assert [r.status_code for r in responses] == [200] * len(posts)


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run until `condition` holds (liveness: no time is asserted)."""
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def test_connections_idle_for_the_keep_alive_are_closed_without_another_request(
    serve: Serve,
) -> None:
    servers = [serve(answering(ok())) for _ in range(3)]
    clock = Clock()

    async def scenario() -> None:
        client = Client(4, allow_private=True, max_idle=16, idle_seconds=30.0, clock=clock)
        try:
            await _post_at_once(client, servers, 3)
            assert [s.open for s in servers] == [3, 3, 3]
            clock.now += 29.0
            client.reap()
            assert client.idle == 9
            clock.now += 1.0
            client.reap()
            assert client.idle == 0
            await _until(lambda: all(s.open == 0 for s in servers), "receivers left open")
        finally:
            client.close()

    asyncio.run(scenario())
    assert [s.accepted for s in servers] == [3, 3, 3]


def test_idle_connections_over_the_cap_for_all_hosts_are_closed_oldest_first(
    serve: Serve,
) -> None:
    first, second, third = (serve(answering(ok())) for _ in range(3))

    async def scenario() -> None:
        client = Client(4, allow_private=True, max_idle=4)
        try:
            await _post_at_once(client, [first], 3)
            await _post_at_once(client, [second], 3)
            await _post_at_once(client, [third], 2)
            assert client.idle == 4
            # The first host's three and one of the second's were the oldest.
            await _until(lambda: (first.open, second.open) == (0, 2), "oldest left open")
            assert third.open == 2
            # What is kept is reused: no new connection to the newest hosts.
            await _post_at_once(client, [second, third], 2)
        finally:
            client.close()

    asyncio.run(scenario())
    assert (first.accepted, second.accepted, third.accepted) == (3, 3, 2)


def test_the_reaper_closes_idle_connections_by_itself(serve: Serve) -> None:
    servers = [serve(answering(ok())) for _ in range(2)]

    async def scenario() -> None:
        client = Client(4, allow_private=True, idle_seconds=0.1)
        try:
            await _post_at_once(client, servers, 2)
            # No request, no call: the loop alone closes them.
            await _until(lambda: all(s.open == 0 for s in servers), "receivers left open")
            assert client.idle == 0
        finally:
            client.close()

    asyncio.run(scenario())


class SlowLookups:
    """A resolver that answers 127.0.0.1 at once, except for `slow.test`, which hangs until
    released; it counts every lookup, on whatever thread it runs."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, host: str, port: int) -> str:
        with self._lock:
            self.calls.append(host)
        if host == "slow.test":
            assert self.release.wait(30)
        return "127.0.0.1"


def test_a_host_whose_lookups_hang_leaves_the_others_resolving(serve: Serve) -> None:
    server = serve(answering(ok()))
    lookups = SlowLookups()

    async def scenario() -> None:
        client = Client(4, allow_private=True, lookup=lookups)
        try:
            # more requests to the slow host than the event loop's default executor has threads
            slow = [
                asyncio.create_task(client.post(f"http://slow.test:{server.port}/", b"{}", {}, 30))
                for _ in range(RESOLVER_THREADS + 4)
            ]
            await _until(lambda: "slow.test" in lookups.calls, "no lookup of slow.test")
            fast = await client.post(f"http://fast.test:{server.port}/", b"{}", {}, 30)
            # answered while every request to the slow host still waits for its lookup
            assert fast.status_code == 200, fast.error
            assert not any(task.done() for task in slow)
            lookups.release.set()
            assert [r.status_code for r in await asyncio.gather(*slow)] == [200] * len(slow)
        finally:
            lookups.release.set()
            client.close()

    asyncio.run(scenario())
    # the slow host's requests shared one lookup
    assert lookups.calls.count("slow.test") == 1


def test_lookups_of_a_host_that_hang_take_at_most_their_share_of_threads() -> None:
    lookups = SlowLookups()
    clock = Clock()

    async def scenario() -> None:
        resolver = Resolver(lookups, threads=LOOKUPS_PER_HOST + 1, timeout=0.2, clock=clock)
        try:
            for _ in range(LOOKUPS_PER_HOST):
                # each waits for the lookup running, which is given up on after the timeout;
                # then another may start
                for _ in range(2):
                    with pytest.raises(ConnectFailed, match="DNS lookup timed out"):
                        await resolver.resolve("slow.test", 443)
                clock.now += 1.0
            assert lookups.calls == ["slow.test"] * LOOKUPS_PER_HOST
            # its share of threads is taken: it fails without another lookup
            with pytest.raises(ConnectFailed, match="DNS lookup timed out"):
                await resolver.resolve("slow.test", 443)
            assert lookups.calls == ["slow.test"] * LOOKUPS_PER_HOST
            # the thread left answers another host
            assert await resolver.resolve("fast.test", 443) == "127.0.0.1"
        finally:
            lookups.release.set()
            resolver.close()

    asyncio.run(scenario())
