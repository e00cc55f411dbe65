"""`moncreneau listen`'s server on a real socket: malformed numbers are a 400, not a crash."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from moncreneau.integrator.listen import Listener, serve


@pytest.fixture
def listening() -> Iterator[tuple[int, list[str]]]:
    lines: list[str] = []
    server = serve("127.0.0.1", 0, Listener(None, lines.append, None, 0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port, lines
    server.shutdown()
    server.server_close()


def exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("length", ["9" * 5_000, "-1", "ten", "1e3"])
def test_a_content_length_that_is_no_whole_number_is_a_400(
    listening: tuple[int, list[str]], length: str
) -> None:
    port, _lines = listening
    answer = exchange(
        port, f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{{}}".encode()
    )
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


@pytest.mark.parametrize("count", ["9" * 5_000, "-3", "many"])
def test_a_fail_count_that_is_no_whole_number_is_a_400_and_changes_nothing(
    listening: tuple[int, list[str]], count: str
) -> None:
    port, lines = listening
    request = f"POST /_listen/fail?count={count} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    assert exchange(port, request.encode()).startswith(b"HTTP/1.1 400 ")
    assert lines == []
    ok = "POST /_listen/fail?count=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    assert exchange(port, ok.encode()).startswith(b"HTTP/1.1 200 ")
