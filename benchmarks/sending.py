"""Timing deliveries end to end: backlogs drained by workers, and a raw urllib3 POST loop."""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass

import urllib3

from benchmarks.harness import Pipeline, Receiver
from moncreneau.delivery import signing
from moncreneau.delivery.attempts import request_headers
from moncreneau.delivery.store import Claimed
from tests.services import wait_until


@dataclass(frozen=True)
class Drain:
    """`deliveries` received between the first and the last arrival, `seconds` apart."""

    deliveries: int
    seconds: float

    @property
    def rate(self) -> float:
        return (self.deliveries - 1) / self.seconds


def prepare_backlog(pipe: Pipeline, events: int, fanout: int) -> int:
    """Append events while the relay runs and no worker does; wait until all are created and
    a wake-up waits in the queue.

    Returns how many deliveries the relay created for them.
    """
    before = pipe.deliveries()
    total = events * fanout
    pipe.append_events(events)
    wait_until(lambda: pipe.deliveries() >= before + total, 600, f"{total} deliveries created", 0.2)
    wait_until(lambda: pipe.queued_jobs() >= 1, 60, "a wake-up queued", 0.05)
    return total


def arrival_span(receiver: Receiver, kind: str) -> Drain:
    stamps = sorted(a[0] for a in receiver.arrivals() if a[1] == kind)
    return Drain(len(stamps), stamps[-1] - stamps[0])


def drain(
    pipe: Pipeline,
    receiver: Receiver,
    kind: str,
    events: int,
    fanout: int = 1,
    workers: int = 1,
    timeout: float = 300.0,
) -> Drain:
    """A backlog made first, then `workers` fresh worker processes timed through it."""
    receiver.reset()
    total = prepare_backlog(pipe, events, fanout)
    started = [pipe.procs.moncreneau("worker") for _ in range(workers)]
    try:
        receiver.wait_for(kind, total, timeout)
    finally:
        for worker in started:
            pipe.procs.stop(worker)
    return arrival_span(receiver, kind)


def sample_body(pipe: Pipeline) -> tuple[bytes, dict[str, str]]:
    """A body the relay rendered, and the headers a worker would sign it with."""
    row = pipe.sql("SELECT body FROM deliveries ORDER BY seq DESC LIMIT 1")
    body = str(row).encode()
    claimed = Claimed(
        seq=1,
        id="msg_benchmark",
        subscription_id=1,
        event_id="evt_benchmark",
        event_type="appointment.created",
        payload_version="2.0",
        body=body,
        attempt=1,
        attempt_budget=10,
        locked_until=None,  # type: ignore[arg-type]
        secrets=(signing.generate_secret(),),
    )
    return body, request_headers(claimed, int(time.time()))


def raw_rate(url: str, body: bytes, headers: dict[str, str], seconds: float) -> float:
    """POSTs per second of one thread reusing one pooled connection: no signing, no database."""
    http = urllib3.PoolManager(maxsize=1, retries=False)
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        response = http.request("POST", url, body=body, headers=headers)
        if response.status != 200:
            raise RuntimeError(f"the receiver answered {response.status} to the raw loop")
        count += 1
    return count / (time.perf_counter() - started)


def _raw_rate_args(args: tuple[str, bytes, dict[str, str], float]) -> float:
    return raw_rate(*args)


def receiver_ceiling(url: str, body: bytes, headers: dict[str, str], seconds: float) -> float:
    """Requests per second the receiver answers to two raw loops in parallel processes."""
    with multiprocessing.Pool(2) as pool:
        rates = pool.map(_raw_rate_args, [(url, body, headers, seconds)] * 2)
    return sum(rates)
