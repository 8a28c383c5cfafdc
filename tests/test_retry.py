"""Retry policy: capped, jittered exponential backoff; Retry-After as a capped minimum."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from consumer.retry import RetryPolicy, is_retryable_status, parse_retry_after

NO_JITTER = RetryPolicy(jitter=0.0)


class FlakyError(Exception):
    """A failure worth retrying; carries an optional server-requested wait."""

    def __init__(self, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(f"flaky (retry_after={retry_after})")


class BrokenError(Exception):
    """A failure that retrying cannot help."""


def scripted(*outcomes: BaseException | str) -> tuple[Callable[[], str], list[int]]:
    """An operation that raises or returns each outcome in turn, and the count of its calls."""
    script: Iterator[BaseException | str] = iter(outcomes)
    calls = [0]

    def operation() -> str:
        calls[0] += 1
        outcome = next(script)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return operation, calls


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


class TestCall:
    def test_unbounded_by_default_retries_until_success(self) -> None:
        """With no max_attempts it never gives up; the sleeps follow the backoff, capped."""
        operation, calls = scripted(*[FlakyError() for _ in range(12)], "done")
        sleeps: list[float] = []
        assert NO_JITTER.call(operation, retryable=FlakyError, sleep=sleeps.append) == "done"
        assert calls[0] == 13
        assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0] + [30.0] * 6

    def test_success_at_once_never_sleeps(self) -> None:
        """A first success returns its value with no wait and no on_retry."""
        operation, calls = scripted("done")
        sleeps: list[float] = []
        retried: list[int] = []
        result = NO_JITTER.call(
            operation,
            retryable=FlakyError,
            sleep=sleeps.append,
            on_retry=lambda attempt, _delay, _exc: retried.append(attempt),
        )
        assert (result, calls[0], sleeps, retried) == ("done", 1, [], [])

    def test_bounded_attempts_then_the_last_error(self) -> None:
        """max_attempts calls at most; the last failure is raised with no wait after it."""
        errors = [FlakyError(), FlakyError(), FlakyError(retry_after=1.0)]
        operation, calls = scripted(*errors, "never reached")
        sleeps: list[float] = []
        with pytest.raises(FlakyError) as caught:
            NO_JITTER.call(operation, retryable=FlakyError, sleep=sleeps.append, max_attempts=3)
        assert caught.value is errors[-1]
        assert calls[0] == 3
        assert sleeps == [0.5, 1.0]

    def test_bounded_success_within_the_bound(self) -> None:
        """A success on the last allowed attempt is returned."""
        operation, _ = scripted(FlakyError(), FlakyError(), "done")
        assert NO_JITTER.call(operation, retryable=FlakyError, sleep=lambda _: None, max_attempts=3)

    def test_max_attempts_below_one_is_refused(self) -> None:
        """A bound that would never call the operation is a programming error."""
        operation, calls = scripted("done")
        with pytest.raises(ValueError, match="max_attempts"):
            NO_JITTER.call(operation, retryable=FlakyError, sleep=lambda _: None, max_attempts=0)
        assert calls[0] == 0

    @pytest.mark.parametrize(
        ("retry_after", "expected"),
        [
            (7.0, [7.0, 1.0]),  # longer than the backoff: honoured
            (0.1, [0.5, 1.0]),  # shorter: the backoff wins (it is a minimum)
            (900.0, [120.0, 1.0]),  # absurd: capped at retry_after_max
            (None, [0.5, 1.0]),  # absent: plain backoff
        ],
    )
    def test_retry_after_is_a_capped_minimum(
        self, retry_after: float | None, expected: list[float]
    ) -> None:
        """The wait read by retry_after raises that one delay, up to the cap."""
        operation, _ = scripted(FlakyError(retry_after), FlakyError(), "done")
        sleeps: list[float] = []
        NO_JITTER.call(
            operation,
            retryable=FlakyError,
            sleep=sleeps.append,
            retry_after=lambda exc: exc.retry_after,
        )
        assert sleeps == expected

    def test_retry_after_ignored_without_a_reader(self) -> None:
        """Without retry_after, an exception's own wait is not looked at."""
        operation, _ = scripted(FlakyError(60.0), "done")
        sleeps: list[float] = []
        NO_JITTER.call(operation, retryable=FlakyError, sleep=sleeps.append)
        assert sleeps == [0.5]

    @pytest.mark.parametrize("max_attempts", [None, 5])
    def test_non_retryable_passes_through_untouched(self, max_attempts: int | None) -> None:
        """Another exception propagates at once, the same object, with no wait or on_retry."""
        broken = BrokenError("no")
        operation, calls = scripted(FlakyError(), broken, "never reached")
        sleeps: list[float] = []
        retried: list[BaseException] = []
        with pytest.raises(BrokenError) as caught:
            NO_JITTER.call(
                operation,
                retryable=FlakyError,
                sleep=sleeps.append,
                on_retry=lambda _attempt, _delay, exc: retried.append(exc),
                max_attempts=max_attempts,
            )
        assert caught.value is broken
        assert caught.value.__cause__ is None
        assert calls[0] == 2
        assert sleeps == [0.5]
        assert len(retried) == 1

    def test_a_tuple_of_retryable_types(self) -> None:
        """Each type in a tuple is retried."""
        operation, _ = scripted(FlakyError(), BrokenError(), "done")
        sleeps: list[float] = []
        assert (
            NO_JITTER.call(operation, retryable=(FlakyError, BrokenError), sleep=sleeps.append)
            == "done"
        )
        assert sleeps == [0.5, 1.0]

    def test_on_retry_sees_attempt_delay_and_error_before_each_sleep(self) -> None:
        """on_retry gets (failures so far, the wait about to be slept, the failure), in order."""
        errors = [FlakyError(), FlakyError(retry_after=9.0), FlakyError()]
        operation, _ = scripted(*errors, "done")
        events: list[tuple[object, ...]] = []
        NO_JITTER.call(
            operation,
            retryable=FlakyError,
            sleep=lambda delay: events.append(("sleep", delay)),
            on_retry=lambda attempt, delay, exc: events.append(("retry", attempt, delay, exc)),
            retry_after=lambda exc: exc.retry_after,
        )
        assert events == [
            ("retry", 1, 0.5, errors[0]),
            ("sleep", 0.5),
            ("retry", 2, 9.0, errors[1]),
            ("sleep", 9.0),
            ("retry", 3, 2.0, errors[2]),
            ("sleep", 2.0),
        ]

    def test_jitter_comes_from_the_policy(self) -> None:
        """The helper waits what delay() says, jitter included."""
        policy = RetryPolicy(jitter=0.5).with_random(lambda: 1.0)
        operation, _ = scripted(FlakyError(), FlakyError(), "done")
        sleeps: list[float] = []
        policy.call(operation, retryable=FlakyError, sleep=sleeps.append)
        assert sleeps == [0.25, 0.5]

    def test_a_failing_sleep_ends_the_loop(self) -> None:
        """What sleep raises (the shard process exits when its daemon is gone) propagates."""
        operation, calls = scripted(FlakyError(), "never reached")

        def gone(_: float) -> None:
            raise SystemExit(75)

        with pytest.raises(SystemExit):
            NO_JITTER.call(operation, retryable=FlakyError, sleep=gone)
        assert calls[0] == 1


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
