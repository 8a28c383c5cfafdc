"""When to send a batch again, and how long to wait first: a value object.

Modelled on urllib3's ``Retry`` and posthog-python's backoff: capped, jittered
exponential backoff; ``Retry-After`` is honoured as a *minimum* wait, itself capped
so a misbehaving proxy cannot park a shard for hours. There is no cap on the number
of attempts: an undelivered batch is never dropped, and while we wait the daemon
keeps renewing our lease, so the shard stays ours (see README "Delivery guarantees").
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

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
