"""Retry policy: capped, jittered exponential backoff; Retry-After as a capped minimum."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumer.retry import RetryPolicy, is_retryable_status, parse_retry_after

NO_JITTER = RetryPolicy(jitter=0.0)


class TestDelay:
    @pytest.mark.parametrize(
        ("attempt", "expected"),
        [
            (1, 0.5),  # first retry waits the base
            (2, 1.0),  # then doubles
            (4, 4.0),
            (7, 30.0),  # capped at backoff_max
            (10_000, 30.0),  # and never overflows
        ],
    )
    def test_exponential_and_capped(self, attempt: int, expected: float) -> None:
        """Without jitter the delay is base * 2**(attempt-1), capped."""
        assert expected == NO_JITTER.delay(attempt=attempt)

    @pytest.mark.parametrize(
        ("retry_after", "expected"),
        [
            (10.0, 10.0),  # longer than backoff: honoured
            (0.1, 0.5),  # shorter than backoff: backoff wins (it is a minimum)
            (900.0, 120.0),  # absurdly long: capped at retry_after_max
            (-5.0, 0.5),  # negative: ignored
        ],
    )
    def test_retry_after_is_a_capped_minimum(self, retry_after: float, expected: float) -> None:
        """Retry-After raises the wait to at least its value, up to the cap."""
        assert expected == NO_JITTER.delay(attempt=1, retry_after=retry_after)

    def test_jitter_only_shortens_within_its_fraction(self) -> None:
        """Jitter takes at most `jitter` of the delay off, drawing from the injected source."""
        policy = RetryPolicy(jitter=0.5).with_random(lambda: 1.0)
        assert policy.delay(attempt=3) == 1.0
        assert policy.with_random(lambda: 0.0).delay(attempt=3) == 2.0


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (408, True),  # request timeout
        (429, True),  # rate limited
        (500, True),  # server error
        (503, True),  # PostHog's "transient error, please retry"
        (400, False),  # bad event: bisect, do not resend as is
        (401, False),  # wrong key
        (413, False),  # too large: split
        (301, False),  # a redirect: posthogHost is wrong, resending cannot help
        (308, False),  # likewise
    ],
)
def test_retryable_statuses(status: int, retryable: bool) -> None:
    """Network-ish and server statuses are retried; client errors are not."""
    assert retryable == is_retryable_status(status)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),  # delta seconds
        ("1.5", 1.5),  # fractional seconds
        ("Wed, 01 May 2024 10:00:30 GMT", 30.0),  # HTTP-date
        ("Wed, 01 May 2024 09:00:00 GMT", 0.0),  # a date in the past
        ("soon", None),  # garbage
        (None, None),  # absent
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    """Retry-After is read as seconds or an HTTP-date against the injected clock."""
    now = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
    assert expected == parse_retry_after(header, now=lambda: now)
