"""P4r's step search: which step it reports as held, and which one above it."""

from __future__ import annotations

from benchmarks.latency import STEP_FACTOR, STEP_FIRST, Receipts, Step, step_search


def _step(k: int, p99: float) -> Step:
    rate = STEP_FIRST * STEP_FACTOR**k
    return Step(
        rate=rate,
        booked=100,
        errors=0,
        answered_rate=rate,
        receipts=Receipts([p99] * 100, [p99 + 5] * 100, 0),
        api_p99=10.0,
        deliveries_per_second=rate,
        worker_cores=0.1,
    )


def _search(limit: int, first: int, highest: int = 14) -> tuple[int | None, int | None, list[int]]:
    """Steps up to `limit` keep p99 at 50 ms, those above at 500 ms."""
    tried: list[int] = []

    def measure(k: int) -> Step | None:
        if k > highest:
            return None
        tried.append(k)
        return _step(k, 50.0 if k <= limit else 500.0)

    held, above = step_search(measure, first)
    number = {round(STEP_FIRST * STEP_FACTOR**k): k for k in range(-10, 20)}
    return (
        number[round(held.rate)] if held else None,
        number[round(above.rate)] if above else None,
        tried,
    )


def test_it_goes_up_while_steps_are_held() -> None:
    assert _search(limit=3, first=0) == (3, 4, [0, 1, 2, 3, 4])


def test_it_goes_down_when_the_first_step_is_not_held() -> None:
    assert _search(limit=-2, first=1) == (-2, -1, [1, 0, -1, -2])


def test_nothing_held_down_to_the_lowest_step() -> None:
    held, above, tried = _search(limit=-100, first=0)
    assert held is None
    assert above == tried[-1] == -6


def test_every_step_held_up_to_the_highest() -> None:
    assert _search(limit=100, first=12) == (14, None, [12, 13, 14])


def test_a_missing_delivery_or_a_refused_booking_is_not_held() -> None:
    fast = _step(0, 10.0)
    assert fast.shortfall() == ""
    missing = Step(**{**fast.__dict__, "receipts": Receipts([10.0] * 99, [10.0] * 99, 1)})
    assert "not received" in missing.shortfall()
    refused = Step(**{**fast.__dict__, "errors": 2})
    assert "refused" in refused.shortfall()
    slow_api = Step(**{**fast.__dict__, "answered_rate": fast.rate * 0.5})
    assert "the API answered" in slow_api.shortfall()
