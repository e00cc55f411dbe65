"""HTTP load from several client processes, each with several keep-alive threads."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import random
import resource
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

# Client processes and threads per process: enough to keep 5 gunicorn workers x 4 threads busy.
PROCESSES = 2
THREADS = 8
# Random slots over centuries of 30-minute slots: a department never fills one.
FIRST_SLOT = datetime(2100, 1, 1)
SLOTS = 800 * 365 * 48


@dataclass(frozen=True)
class Target:
    """Where to POST and what: bookings when `departments` is set, else a bare row.

    With `others`, each request goes to one organization drawn at random: the first
    (`headers`, `departments`) or one of the others (headers, departments).
    """

    url: str
    headers: dict[str, str]
    departments: tuple[int, ...] = ()
    others: tuple[tuple[dict[str, str], tuple[int, ...]], ...] = ()

    def request(self, rng: random.Random) -> tuple[dict[str, str], bytes]:
        """The headers and body of one request."""
        headers, departments = self.headers, self.departments
        if self.others:
            pick = rng.randrange(len(self.others) + 1)
            if pick:
                headers, departments = self.others[pick - 1]
        return headers, self._body(rng, departments)

    @staticmethod
    def _body(rng: random.Random, departments: tuple[int, ...]) -> bytes:
        if not departments:
            return json.dumps({"name": "bench"}).encode()
        start = FIRST_SLOT + timedelta(minutes=30 * rng.randrange(SLOTS))
        return json.dumps(
            {
                "departmentId": rng.choice(departments),
                "dateTime": start.isoformat(),
                "name": "Bench",
            }
        ).encode()


@dataclass
class Outcome:
    """What one client process saw: 2xx count, errors, latencies and, if asked, responses."""

    ok: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    # (time.time() when the answer was read, the created resource's id, seconds the request took)
    answered: list[tuple[float, int, float]] = field(default_factory=list)
    cpu_seconds: float = 0.0

    def merge(self, other: Outcome) -> None:
        self.ok += other.ok
        self.errors += other.errors
        self.latencies += other.latencies
        self.answered += other.answered
        self.cpu_seconds += other.cpu_seconds


def _client(
    target: Target,
    seconds: float,
    rate: float | None,
    threads: int,
    seed: int,
    keep_ids: bool,
    begin_at: float,
) -> Outcome:
    """Closed loop when `rate` is None; else requests scheduled `1/rate` apart (open loop)."""
    parts = urlsplit(target.url)
    outcome = Outcome()
    lock = threading.Lock()
    # Every client process starts together, whenever its interpreter was ready.
    time.sleep(max(0.0, begin_at - time.time()))
    started = time.perf_counter()
    deadline = started + seconds
    counter = iter(range(10**9))

    def run(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        ok = errors = 0
        latencies: list[float] = []
        answered: list[tuple[float, int, float]] = []
        while True:
            if rate is not None:
                with lock:
                    n = next(counter)
                due = started + n / rate
                if due >= deadline:
                    break
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            elif time.perf_counter() >= deadline:
                break
            headers, body = target.request(rng)
            headers = {"Content-Type": "application/json", **headers}
            sent = time.perf_counter()
            answer: tuple[http.client.HTTPResponse, bytes] | None = None
            # gunicorn closes a keep-alive connection idle for 2 s, which slow paced loads
            # leave idle: a request that fails on a reused connection goes once more on a
            # new one before it counts as an error.
            for _attempt in range(2):
                try:
                    conn.request("POST", parts.path, body, headers)
                    response = conn.getresponse()
                    answer = response, response.read()
                    break
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
            if answer is None:
                errors += 1
                continue
            response, raw = answer
            now = time.time()
            took = time.perf_counter() - sent
            latencies.append(took)
            if 200 <= response.status < 300:
                ok += 1
                if keep_ids:
                    answered.append((now, int(json.loads(raw)["id"]), took))
            else:
                errors += 1
        conn.close()
        with lock:
            outcome.ok += ok
            outcome.errors += errors
            outcome.latencies += latencies
            outcome.answered += answered

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    outcome.cpu_seconds = usage.ru_utime + usage.ru_stime
    return outcome


def _client_args(args: tuple[Target, float, float | None, int, int, bool, float]) -> Outcome:
    return _client(*args)


@dataclass(frozen=True)
class Load:
    outcome: Outcome
    seconds: float

    @property
    def rate(self) -> float:
        return self.outcome.ok / self.seconds

    @property
    def client_cpu(self) -> float:
        """Cores the client processes kept busy, on average."""
        return self.outcome.cpu_seconds / self.seconds


def post_load(
    target: Target,
    seconds: float,
    rate: float | None = None,
    processes: int = PROCESSES,
    threads: int = THREADS,
    keep_ids: bool = False,
) -> Load:
    """POST for `seconds` from `processes` x `threads` connections; `rate` in total per second."""
    share = rate / processes if rate is not None else None
    begin_at = time.time() + 2.0
    jobs = [
        (target, seconds, share, threads, seed, keep_ids, begin_at) for seed in range(processes)
    ]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_client_args, jobs)
    total = Outcome()
    for part in parts:
        total.merge(part)
    # The pool's start-up is not load: the requested duration, not the wall clock, counts.
    return Load(total, seconds)
