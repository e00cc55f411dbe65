"""What a worker hands back when an endpoint is at its cap, and for how long."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from moncreneau import clock
from moncreneau.db import make_engine, make_session_factory
from moncreneau.delivery import schedule, sender
from moncreneau.delivery.attempts import outcome
from moncreneau.delivery.dispatcher import HEALTHY_ROUNDS, RELEASE_DELAY, Dispatcher
from moncreneau.delivery.recorder import PAUSE, PAUSE_AFTER_FAILURES
from moncreneau.delivery.store import FAILED, Claimed, Settlement
from tests.conftest import make_settings
from tests.receiver import Received, Receiver, answer, hang, sequence, start_receiver

CAP = 2
TIMEOUT = 3.0
# How long a drain may take at most: it returns as soon as all is recorded, and a loaded
# machine may need far more than one request's time.
SETTLED = 30.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = start_receiver()
    yield rec
    rec.server.shutdown()


def _claimed(
    n: int, url: str, lease: float, subscription_id: int = 1, organization_id: int = 1
) -> Claimed:
    return Claimed(
        seq=n,
        id=f"msg_{n}",
        subscription_id=subscription_id,
        event_id=f"evt_{n}",
        event_type="appointment.created",
        payload_version="2.0",
        body=b"{}",
        attempt=1,
        attempt_budget=3,
        locked_until=clock.now() + timedelta(seconds=lease),
        url=url,
        secrets=("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",),
        organization_id=organization_id,
    )


class Monotonic:
    """Real monotonic time, plus however far a test has moved it on."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skew

    def advance(self, seconds: float) -> None:
        self.skew += seconds


class Released(list[tuple[list[str], timedelta]]):
    """What a dispatcher handed back: ids and delay, call by call."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def __call__(self, items: list[Claimed], delay: timedelta) -> None:
        with self._lock:
            self.append(([i.id for i in items], delay))


@pytest.fixture
def monotonic() -> Monotonic:
    return Monotonic()


@pytest.fixture
def dispatching(
    sqlite_template: Path, tmp_path: Path, monotonic: Monotonic
) -> Iterator[tuple[Dispatcher, Released]]:
    """A dispatcher with a cap of CAP per endpoint, recording what it hands back."""
    shutil.copy(sqlite_template, tmp_path / "db.sqlite")
    settings = make_settings(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        endpoint_concurrency=CAP,
        delivery_timeout=TIMEOUT,
    )
    engine = make_engine(settings.database_url)
    released = Released()
    dispatcher = Dispatcher(make_session_factory(engine), settings, released, monotonic)
    try:
        yield dispatcher, released
    finally:
        assert dispatcher.drain(TIMEOUT + 5)
        engine.dispose()


def test_an_endpoint_holding_its_slots_without_answering_gets_its_overflow_back_after_a_timeout(
    receiver: Receiver, dispatching: tuple[Dispatcher, Released], monotonic: Monotonic
) -> None:
    dispatcher, released = dispatching
    url = receiver.on("hang", hang(TIMEOUT + 1))
    # A lease long enough to send the first round, too short for what waits behind it:
    # that is given back when its turn comes instead of being sent (the test ends sooner).
    lease = TIMEOUT + 3
    held = CAP + CAP * HEALTHY_ROUNDS
    dispatcher.submit([_claimed(n, url, lease) for n in range(held + 1)])
    # Not a word from the endpoint yet: the job does not wait for a place that may never
    # come; what does not fit is tried again shortly.
    assert released == [([f"msg_{held}"], RELEASE_DELAY)]
    # Silent for RELEASE_DELAY, it counts as stalled: overflow comes back after a timeout.
    monotonic.advance(RELEASE_DELAY.total_seconds() + 0.2)
    dispatcher.submit([_claimed(held + 1, url, lease)])
    assert released[-1] == ([f"msg_{held + 1}"], timedelta(seconds=TIMEOUT))
    receiver.wait_for(lambda got: len(got) >= CAP)
    assert dispatcher.drain(TIMEOUT + 5)
    # What waited behind the endpoint was given back unsent when its lease ran short.
    given_back = {i for ids, _ in released for i in ids}
    assert given_back == {f"msg_{n}" for n in range(CAP, held + 2)}
    assert len(receiver.received) == CAP


def test_an_endpoint_failing_many_times_in_a_row_is_paused_and_a_success_ends_its_streak(
    receiver: Receiver, dispatching: tuple[Dispatcher, Released], monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher, released = dispatching
    # Pausing it for every worker is the recorder's (tests/integration/test_delivery_store.py).
    shared: list[int] = []
    monkeypatch.setattr(dispatcher.recorder, "pause", shared.append)
    streak = PAUSE_AFTER_FAILURES - 1
    # One short of a pause, then a success, then failures until one pauses it.
    url = receiver.on("flaky", sequence(*[answer(500)] * streak, answer(200), answer(500)))
    lease = 60.0
    for n in range(streak + 1 + PAUSE_AFTER_FAILURES):
        dispatcher.submit([_claimed(n, url, lease)])
        assert dispatcher.drain(SETTLED)
    assert released == []
    sent = len(receiver.received)
    assert sent == streak + 1 + PAUSE_AFTER_FAILURES
    assert shared == [1]
    # a wake-up leaves its deliveries alone while the pause lasts
    assert dispatcher.refusing() == ([1], [])

    later = [_claimed(n, url, lease) for n in range(sent, sent + 5)]
    dispatcher.submit(later)
    # Handed back unsent, due again once the pause is over.
    assert released == [([c.id for c in later], PAUSE)]
    assert dispatcher.drain(SETTLED)
    assert len(receiver.received) == sent


def _slowly(request: Received, handler: BaseHTTPRequestHandler) -> None:
    time.sleep(0.1)
    answer(200)(request, handler)


def test_a_full_line_behind_an_endpoint_that_answers_waits_for_room_instead_of_going_back(
    receiver: Receiver, dispatching: tuple[Dispatcher, Released]
) -> None:
    dispatcher, released = dispatching
    url = receiver.on("steady", _slowly)
    held = CAP + CAP * HEALTHY_ROUNDS
    # It has answered before: a place frees up soon.
    dispatcher.submit([_claimed(2 * held, url, 60.0)])
    assert dispatcher.drain(SETTLED)
    dispatcher.submit([_claimed(n, url, 60.0) for n in range(held)])
    # What does not fit in flight or in line waits for a place.
    dispatcher.submit([_claimed(n, url, 60.0) for n in range(held, 2 * held)])
    assert released == []
    assert dispatcher.drain(SETTLED)
    assert sorted(r.headers["X-Moncreneau-Delivery"] for r in receiver.received) == sorted(
        f"msg_{n}" for n in range(2 * held + 1)
    )


def test_an_unreadable_retry_after_is_a_recorded_attempt_and_frees_its_place(
    receiver: Receiver, dispatching: tuple[Dispatcher, Released], monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher, released = dispatching
    recorded: list[Settlement] = []
    record = dispatcher.recorder.add

    def add(settlement: Settlement) -> None:
        recorded.append(settlement)
        record(settlement)

    monkeypatch.setattr(dispatcher.recorder, "add", add)
    # "\u00b2" is a digit to str.isdigit(), not to float(); it goes out as the byte 0xb2.
    odd = receiver.on("odd", answer(429, b"slow down", {"Retry-After": "\u00b2"}))
    # Twice the endpoint's cap: half of them wait for a place the first ones must free.
    dispatcher.submit([_claimed(n, odd, 60.0) for n in range(2 * CAP)])
    assert dispatcher.drain(SETTLED)
    assert dispatcher.in_flight == 0
    assert released == []
    assert len(receiver.received) == 2 * CAP
    assert sorted(s.claimed.id for s in recorded) == [f"msg_{n}" for n in range(2 * CAP)]
    for settlement in recorded:
        assert (settlement.status, settlement.status_code) == (FAILED, 429)
        assert settlement.next_attempt_at is not None
    # The endpoint's places are all free: the next deliveries go out at once.
    healthy = receiver.on("healthy", answer(200))
    dispatcher.submit([_claimed(n, healthy, 60.0) for n in range(2 * CAP, 3 * CAP)])
    assert dispatcher.drain(SETTLED)
    assert len(receiver.at("healthy")) == CAP


def test_an_attempt_whose_next_try_cannot_be_computed_is_still_settled_a_day_later() -> None:
    # A delay past what a datetime can hold: the next attempt's time overflows.
    settings = make_settings("sqlite://", retry_schedule=(1e12,))
    failed = sender.Response(500, "HTTP 500", "oops", None, 5)
    before = clock.now()
    settlement = outcome(_claimed(1, "http://127.0.0.1:9/hook", 60.0), failed, before, settings)
    assert (settlement.status, settlement.status_code, settlement.error) == (
        FAILED,
        500,
        "HTTP 500",
    )
    assert settlement.next_attempt_at is not None
    delay = settlement.next_attempt_at - before
    assert (
        timedelta(seconds=schedule.MAX_RETRY_AFTER)
        <= delay
        < timedelta(seconds=schedule.MAX_RETRY_AFTER + 60)
    )


def test_a_send_task_that_breaks_frees_its_place_and_hands_back_what_waited_behind_it(
    receiver: Receiver, dispatching: tuple[Dispatcher, Released], monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher, released = dispatching

    def broken(_settlement: Settlement) -> None:
        raise RuntimeError("the recorder is broken")

    monkeypatch.setattr(dispatcher.recorder, "add", broken)
    url = receiver.on("steady", answer(200))
    dispatcher.submit([_claimed(n, url, 60.0) for n in range(2 * CAP)])
    assert dispatcher.drain(SETTLED)
    assert dispatcher.in_flight == 0
    assert len(receiver.received) == CAP
    # Unsent, given back to be tried again shortly rather than held until their lease ends.
    assert released == [([f"msg_{n}" for n in range(CAP, 2 * CAP)], RELEASE_DELAY)]


SLOTS = 8
SHARE = SLOTS // 2


def _fair_dispatcher(
    tmp_path: Path, sqlite_template: Path, monotonic: Monotonic, **overrides: object
) -> tuple[Dispatcher, Released]:
    shutil.copy(sqlite_template, tmp_path / "db.sqlite")
    settings = make_settings(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        worker_concurrency=SLOTS,
        endpoint_concurrency=CAP,
        delivery_timeout=TIMEOUT,
        **overrides,
    )
    released = Released()
    sessions = make_session_factory(make_engine(settings.database_url))
    return Dispatcher(sessions, settings, released, monotonic), released


def test_a_host_that_hangs_holds_its_share_while_another_hosts_delivery_goes_out(
    tmp_path: Path, sqlite_template: Path, monotonic: Monotonic
) -> None:
    hanging, fast = start_receiver(), start_receiver(host="127.0.0.2")
    dispatcher, released = _fair_dispatcher(
        tmp_path, sqlite_template, monotonic, host_concurrency=SHARE
    )
    try:
        url = hanging.on("hang", hang(TIMEOUT + 1))
        # as many webhooks (of as many organizations) to it as the process has slots
        dispatcher.submit([_claimed(n, url, 60, n, n) for n in range(SLOTS)])
        assert released == [([f"msg_{n}" for n in range(SHARE, SLOTS)], RELEASE_DELAY)]
        hanging.wait_for(lambda got: len(got) == SHARE)

        dispatcher.submit([_claimed(100, fast.on("ok", answer(200)), 60, 100, 100)])
        fast.wait_for(lambda got: len(got) == 1)

        # sent while the hanging requests still held their places
        assert dispatcher.in_flight >= SHARE
        assert len(hanging.received) == SHARE
        assert dispatcher.drain(TIMEOUT + 5)
    finally:
        hanging.server.shutdown()
        fast.server.shutdown()


def test_an_organization_with_many_hanging_webhooks_leaves_room_for_another_on_the_same_host(
    receiver: Receiver, tmp_path: Path, sqlite_template: Path, monotonic: Monotonic
) -> None:
    # the default shares: an organization alone cannot fill its host's
    dispatcher, released = _fair_dispatcher(tmp_path, sqlite_template, monotonic)
    url = receiver.on("hang", hang(TIMEOUT + 1))
    dispatcher.submit([_claimed(n, url, 60, subscription_id=n) for n in range(SLOTS)])
    assert released == [([f"msg_{n}" for n in range(SHARE, SLOTS)], RELEASE_DELAY)]
    receiver.wait_for(lambda got: len(got) == SHARE)
    # Silent for a while, its organization's overflow comes back after a whole timeout.
    monotonic.advance(RELEASE_DELAY.total_seconds() + 0.2)
    dispatcher.submit([_claimed(SLOTS, url, 60, subscription_id=SLOTS)])
    assert released[-1] == ([f"msg_{SLOTS}"], timedelta(seconds=TIMEOUT))

    dispatcher.submit([_claimed(100, receiver.on("ok", answer(200)), 60, 100, 2)])
    receiver.wait_for(lambda got: any(r.path == "/ok" for r in got))

    assert dispatcher.in_flight >= SHARE
    assert len(receiver.at("hang")) == SHARE
    assert dispatcher.drain(TIMEOUT + 5)


def test_a_burst_beyond_an_organizations_share_waits_a_moment_for_its_first_answers(
    receiver: Receiver, tmp_path: Path, sqlite_template: Path, monotonic: Monotonic
) -> None:
    """A fan-out to a host that answers: what does not fit in the organization's share while
    its first requests are out goes as they are answered, not back to the database for
    RELEASE_DELAY (which made a 1,000-webhook fan-out take three times as long)."""
    dispatcher, released = _fair_dispatcher(tmp_path, sqlite_template, monotonic)
    url = receiver.on("ok", answer(200))
    dispatcher.submit([_claimed(n, url, 60, subscription_id=n) for n in range(SLOTS)])
    receiver.wait_for(lambda got: len(got) == SLOTS)
    assert released == []
    assert dispatcher.drain(SETTLED)


def test_what_it_would_hand_back_for_a_while_is_what_a_wake_up_leaves_out(
    receiver: Receiver, tmp_path: Path, sqlite_template: Path, monotonic: Monotonic
) -> None:
    """A stalled endpoint with every place taken and a silent organization at its share: their
    deliveries would only be written back, so no wake-up claims them (a paused webhook's:
    the pause test above)."""
    dispatcher, released = _fair_dispatcher(tmp_path, sqlite_template, monotonic)
    url = receiver.on("hang", hang(TIMEOUT + 1))
    held = CAP + CAP * HEALTHY_ROUNDS
    # too short a lease for what waits behind the first round: given back, not sent
    lease = TIMEOUT + 3
    dispatcher.submit(
        [_claimed(n, url, lease, subscription_id=7, organization_id=1) for n in range(held)]
    )
    # Full, but it may still answer in a moment: nothing is refused yet.
    assert dispatcher.refusing() == ([], [])
    # Organization 2's hanging webhooks fill its share (half the process).
    dispatcher.submit(
        [
            _claimed(100 + n, url, 60, subscription_id=200 + n, organization_id=2)
            for n in range(SHARE)
        ]
    )
    receiver.wait_for(lambda got: len(got) == CAP + SHARE)
    monotonic.advance(RELEASE_DELAY.total_seconds() + 0.2)
    assert dispatcher.refusing() == ([7], [2])
    assert released == []
    # What it refuses, it would indeed hand back for a whole timeout.
    dispatcher.submit([_claimed(held, url, 60, subscription_id=7, organization_id=1)])
    dispatcher.submit([_claimed(300, url, 60, subscription_id=300, organization_id=2)])
    assert [delay for _ids, delay in released] == [timedelta(seconds=TIMEOUT)] * 2
    assert dispatcher.drain(TIMEOUT + 5)
    # Answered (timed out) and done: nothing is refused any more.
    assert dispatcher.refusing() == ([], [])
