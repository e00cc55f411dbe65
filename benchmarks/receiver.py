"""A minimal asyncio HTTP/1.1 keep-alive receiver that stamps every delivery's arrival.

The path picks the behaviour: `/fast/...` answers 200 at once, `/slow/...` after 100 ms,
`/fail/...` answers 500, `/hang/...` never answers, and `/trace/...` answers 200 and keeps
the body. Control: `GET /_counts`, `GET /_arrivals`, `POST /_reset`.
Run with `python -m benchmarks.receiver --port P`; it prints `ready` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

SLOW_SECONDS = 0.1
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
FAILED = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nfail"

# (arrival time.time(), first path segment, webhook-id header, body kept by /trace)
Arrival = tuple[float, str, str, str | None]


class State:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.arrivals: list[Arrival] = []

    def reset(self) -> None:
        self.counts.clear()
        self.arrivals.clear()


class Connection(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            lines = head.split("\r\n")
            length = 0
            webhook_id = ""
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "webhook-id":
                    webhook_id = value.strip()
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            method, path = lines[0].split(" ", 2)[:2]
            self.handle(method, path, webhook_id, body)

    def handle(self, method: str, path: str, webhook_id: str, body: bytes) -> None:
        assert self.transport is not None
        if path.startswith("/_"):
            self.control(method, path)
            return
        kind = path.split("/", 2)[1]
        now = time.time()
        self.state.counts[kind] += 1
        kept = body.decode() if kind == "trace" else None
        self.state.arrivals.append((now, kind, webhook_id, kept))
        if kind == "slow":
            asyncio.get_running_loop().call_later(SLOW_SECONDS, self.write, OK)
        elif kind == "fail":
            self.transport.write(FAILED)
        elif kind != "hang":
            self.transport.write(OK)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def control(self, method: str, path: str) -> None:
        if path == "/_reset" and method == "POST":
            self.state.reset()
            payload: object = {"reset": True}
        elif path == "/_arrivals":
            payload = self.state.arrivals
        else:
            payload = dict(self.state.counts)
        raw = json.dumps(payload).encode()
        self.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(raw)).encode()
            + b"\r\n\r\n"
            + raw
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int) -> None:
    state = State()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(state), host, port, backlog=2048)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
