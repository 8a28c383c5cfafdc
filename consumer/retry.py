"""When to send a batch again, and how long to wait first: a value object.

Modelled on urllib3's ``Retry`` and posthog-python's backoff: capped, jittered
exponential backoff; ``Retry-After`` is honoured as a *minimum* wait, itself capped
so a misbehaving proxy cannot park a shard for hours. By default there is no cap on
the number of attempts: an undelivered batch is never dropped, and while we wait the
daemon keeps renewing our lease, so the shard stays ours (see README "Delivery
guarantees"). :meth:`RetryPolicy.call` is the one retry loop of the package: delivery,
dead-lettering and checkpointing all go through it.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeVar

_T = TypeVar("_T")
_E = TypeVar("_E", bound=Exception)

# 408 Request Timeout, 429 Too Many Requests and every 5xx may succeed on a resend
# (posthog-python's _send.is_retryable uses the same set).
RETRYABLE_STATUSES = frozenset({408, 429})
_SERVER_ERROR_FLOOR = 500


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Backoff schedule; ``attempt`` counts failures of the same batch so far.

    Usage::

        policy = RetryPolicy()
        delay = policy.delay(attempt=3, retry_after=None)
        answer = policy.call(send, retryable=RetryableDeliveryError, sleep=time.sleep)
    """

    #: First wait, doubled on every further failure.
    backoff_base: float = 0.5
    #: Longest wait between two attempts (posthog-python uses 30 s).
    backoff_max: float = 30.0
    #: Longest ``Retry-After`` we honour; a larger value is clamped to this.
    retry_after_max: float = 120.0
    #: Fraction of the delay that is randomised (full jitter on that fraction), so that
    #: many shards that failed together do not come back together.
    jitter: float = 0.5
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def delay(self, *, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt number ``attempt + 1``."""
        exponent = min(max(attempt - 1, 0), 32)
        backoff = min(self.backoff_base * (2.0**exponent), self.backoff_max)
        backoff -= backoff * self.jitter * self.random()
        if retry_after is not None:
            backoff = max(backoff, min(max(retry_after, 0.0), self.retry_after_max))
        return backoff

    def call(  # noqa: PLR0913 - every knob is keyword-only and optional but sleep
        self,
        operation: Callable[[], _T],
        *,
        retryable: type[_E] | tuple[type[_E], ...],
        sleep: Callable[[float], None],
        on_retry: Callable[[int, float, _E], None] | None = None,
        max_attempts: int | None = None,
        retry_after: Callable[[_E], float | None] | None = None,
    ) -> _T:
        """Run ``operation`` until it returns, backing off while it raises ``retryable``.

        Args:
            operation: called with no arguments; its result is returned.
            retryable: the exception type(s) worth another attempt. Anything else
                propagates at once, untouched.
            sleep: waits between attempts (injected, so tests never really wait; the
                shard process passes one that exits when its daemon is gone).
            on_retry: told ``(attempt, delay, exc)`` before each wait: ``attempt`` counts
                the failures so far (1 for the first), ``delay`` is the wait in seconds.
            max_attempts: calls of ``operation`` before giving up; ``None`` (the
                default) never gives up. After the last failed attempt nothing is
                waited and ``on_retry`` is not called: its exception is raised.
            retry_after: reads the server's requested wait (seconds) from a failure;
                honoured as a minimum, capped at :attr:`retry_after_max`.

        Returns:
            What ``operation`` returned.

        Raises:
            ValueError: ``max_attempts`` is below 1.
        """
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        attempt = 0
        while True:
            try:
                return operation()
            except retryable as exc:
                attempt += 1
                if max_attempts is not None and attempt >= max_attempts:
                    raise
                wait = self.delay(
                    attempt=attempt, retry_after=retry_after(exc) if retry_after else None
                )
                if on_retry is not None:
                    on_retry(attempt, wait, exc)
            sleep(wait)

    def with_random(self, source: Callable[[], float]) -> RetryPolicy:
        """Return a copy drawing its jitter from ``source`` (for tests)."""
        return replace(self, random=source)


def is_retryable_status(status: int) -> bool:
    """True for statuses where the same request may succeed later."""
    return status in RETRYABLE_STATUSES or status >= _SERVER_ERROR_FLOOR


def parse_retry_after(value: str | None, now: Callable[[], datetime] | None = None) -> float | None:
    """Read ``Retry-After`` as delta-seconds or an HTTP-date; ``None`` if absent or garbled."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    current = (now or (lambda: datetime.now(UTC)))()
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - current).total_seconds(), 0.0)
