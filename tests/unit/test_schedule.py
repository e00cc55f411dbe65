"""Retry timing: the configured schedule with bounded jitter, and Retry-After."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moncreneau.config import DEFAULT_RETRY_SCHEDULE, ConfigError, Settings
from moncreneau.delivery.schedule import (
    JITTER,
    MAX_RETRY_AFTER,
    delay_after,
)
from moncreneau.retry_after import parse_retry_after

NOW = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)


def test_each_delay_stays_within_the_jitter_of_its_step() -> None:
    schedule = (10.0, 100.0, 1000.0)
    for attempt, base in enumerate(schedule, start=1):
        delays = [delay_after(attempt, schedule, None) for _ in range(200)]
        assert min(delays) >= base * (1 - JITTER)
        assert max(delays) <= base * (1 + JITTER)
        assert len(set(delays)) > 1, "no jitter"


def test_attempts_past_the_schedule_reuse_its_last_step() -> None:
    assert delay_after(9, (0.0, 0.0, 5.0), None) >= 5.0 * (1 - JITTER)


def test_retry_after_pushes_the_next_attempt_later_but_never_earlier() -> None:
    assert delay_after(1, (0.0,), 30.0) == 30.0
    assert delay_after(1, (100.0,), 1.0) >= 100.0 * (1 - JITTER)


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(format_datetime(NOW + timedelta(seconds=90), usegmt=True), NOW) == 90
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


@pytest.mark.parametrize(
    "value",
    [
        "\u00b2",  # a digit to str.isdigit(), not to float()
        "1\u00b3",
        "\u00b9\u00b2\u00b3",
        "-5",
        "+5",
        "1.5",
        "nan",
        "inf",
        "1e9",
        "0x10",
        "Mon, 01 Jan 99999999999999999999 00:00:00 GMT",
        "Dec  9999 00:00:00 2026 999999999999999999999999999999",
        "Mon, 01 Jan " + "9" * 5000 + " 00:00:00 GMT",
        "Mon, 01 Jan 2026 99:99:99 GMT",
        "Mon, 01 Jan 2026 00:00:00 +99999999",
    ],
)
def test_a_retry_after_that_is_neither_seconds_nor_a_date_is_ignored(value: str) -> None:
    assert parse_retry_after(value, NOW) is None


def test_a_huge_retry_after_is_capped_and_a_past_date_means_now() -> None:
    huge = parse_retry_after("9" * 5000, NOW)
    assert huge is not None
    assert delay_after(1, (0.0,), huge) == MAX_RETRY_AFTER
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", NOW) == 0.0


# What the sender hands over: the header's bytes read as Latin-1.
@given(st.text(st.characters(max_codepoint=0xFF)))
def test_any_retry_after_a_receiver_sends_reads_as_none_or_a_delay(value: str) -> None:
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or (not math.isnan(seconds) and seconds >= 0)


def test_the_default_schedule_spans_about_three_days() -> None:
    total = sum(DEFAULT_RETRY_SCHEDULE)
    assert 2.5 * 86400 <= total <= 3.5 * 86400


def test_the_schedule_comes_from_the_environment() -> None:
    settings = Settings.from_env({"MONCRENEAU_RETRY_SCHEDULE": "0, 1,2"})
    assert settings.retry_schedule == (0.0, 1.0, 2.0)
    with pytest.raises(ConfigError, match="MONCRENEAU_RETRY_SCHEDULE"):
        Settings.from_env({"MONCRENEAU_RETRY_SCHEDULE": "1,soon"})
    with pytest.raises(ConfigError, match="MONCRENEAU_ALLOW_PRIVATE_URLS"):
        Settings.from_env({"MONCRENEAU_ALLOW_PRIVATE_URLS": "maybe"})
