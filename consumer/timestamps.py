"""Event times: read what a record says (ISO 8601 or epoch) and write the form PostHog stores.

Kept apart from the mapping so the rules for reading a moment (and for giving up on one
that :class:`~datetime.datetime` cannot hold) are in one place, and ``preview``, the
mapping and the tests all format times alike.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

# Epoch numbers at or above this are milliseconds (1e11 s is the year 5138).
EPOCH_MILLIS_THRESHOLD = 1e11


def parse_timestamp(value: Any) -> datetime | None:
    """Read ISO 8601 text or epoch seconds/milliseconds as a UTC datetime.

    ``None`` when ``value`` is neither, or is a moment outside what :class:`datetime`
    holds in UTC (years 1 to 9999): the caller then uses the arrival time. The result
    is already in UTC, so :func:`format_timestamp` cannot overflow converting it.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is not None:
            return _in_utc(moment)
        try:
            value = float(text)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        # An integer beyond a double overflows in the division or in isfinite.
        if not math.isfinite(value):
            return None
        seconds = value / 1000 if abs(value) >= EPOCH_MILLIS_THRESHOLD else value
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, the form PostHog stores."""
    if moment.tzinfo is not UTC:  # what parse_timestamp returns is already in UTC
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _in_utc(moment: datetime) -> datetime | None:
    """``moment`` in UTC (naive means UTC), or ``None`` if that is before year 1 or after 9999."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        # 0001-01-01T00:00:00+01:00 is in year 0 in UTC, 9999-12-31T23:00:00-01:00 in 10000.
        return moment.astimezone(UTC)
    except OverflowError:
        return None
