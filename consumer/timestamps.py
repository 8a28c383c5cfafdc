"""Event times: read what a record says (ISO 8601 or epoch) and write the form PostHog stores.

Kept apart from the mapping so the rules for reading a moment (and for giving up on one
that :class:`~datetime.datetime` cannot hold) are in one place, and ``preview``, the
mapping and the tests all format times alike.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
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


# Fast paths. The mapper needs one event time per record, and going through a datetime
# (parse, convert, isoformat, replace) costs 2-3 us; these build the same text from integer
# arithmetic and small tables. Each fast path yields only a result it has proved equal to
# parse_timestamp + format_timestamp; anything else is left to those two, the reference.

# For an int v, v >= t exactly when v >= ceil(t): the same test without int/float compares.
_EPOCH_MILLIS_THRESHOLD_INT = math.ceil(EPOCH_MILLIS_THRESHOLD)
# datetime.fromtimestamp(s, tz=UTC) for the first and last whole seconds it can hold.
_FIRST_SECOND = -62_135_596_800  # 0001-01-01T00:00:00Z
_LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z
# Below 2**33 s (years 1697 to 2242) doubles are at most 2**-20 s apart, so millis / 1000
# is within 2**-21 s (0.48 us; scaling the fraction adds 1e-10 us) of the exact
# milliseconds, and fromtimestamp, rounding to the nearest microsecond (a tie needs
# 0.5 us), lands exactly on them: there divmod(millis, 1000) is what it gives. Beyond, it
# may not (at year 9999 doubles are 30 us apart): _from_timestamp repeats its rounding.
_EXACT_MILLIS_LIMIT = 2**33 * 1000
# 10**15 ms is some 31,700 years either side of 1970: out of range whatever the rounding.
# Below it int / 1000 cannot overflow, so the fast path may divide.
_MILLIS_BEYOND_YEAR_9999 = 10**15
_MICROS_PER_SECOND = 1_000_000
_SECONDS_PER_HOUR = 3600
_MICROS_PER_MILLI = 1000

# "MM:SS." for each second of an hour and "mmmZ" for each millisecond: two table lookups
# instead of formatting numbers (f"{n:02d}" costs about 0.1 us a field). About 290 kB.
_MINUTE_SECOND = tuple(
    f"{minute:02d}:{second:02d}." for minute in range(60) for second in range(60)
)
_MILLIS_Z = tuple(f"{millis:03d}Z" for millis in range(1000))
# "YYYY-MM-DDTHH:" per hour since the epoch. Records of a shard cluster in time, so a
# handful of entries serve a whole batch; emptied when full, so at most about 530 kB.
_HOUR_PREFIXES: dict[int, str] = {}
_MAX_HOUR_PREFIXES = 4096
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The form PostHog stores, which format_timestamp writes: returned as is once valid. ASCII
# digits only ([0-9]: a str pattern's \d also matches other scripts' digits).
_CANONICAL_LENGTH = len("2023-11-14T22:13:20.123Z")  # checked first: cheaper than the pattern
_CANONICAL = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z"
).fullmatch
# Other ISO 8601 in UTC as most producers write it: "T" or " ", seconds, optionally a
# fraction of 1 to 9 digits, then "Z", "+00:00" or nothing (naive means UTC). Tried second:
# its optional parts make it slower than the canonical pattern. Possessive (+): giving
# back a digit or the fraction could only leave a digit or "." for the suffix, which no
# alternative takes, so they match the same texts, without backtracking on "+01:00".
_ISO_UTC = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.([0-9]{1,9}+))?+(?:Z|\+00:00|)"
).fullmatch
# Whether the date and time exist (month 13, February 30, hour 24, year 0) neither pattern
# says: datetime.fromisoformat, which the reference calls on the same text, decides.
_fromisoformat = datetime.fromisoformat


def event_time(value: Any) -> str | None:
    """What ``format_timestamp(parse_timestamp(value))`` gives, ``None`` where that is ``None``.

    The same for every value; much cheaper for int epoch seconds and milliseconds, floats,
    and ISO 8601 text in UTC (returned as is when already in the form PostHog stores).
    """
    kind = type(value)  # exact types: bool is an int, and a str subclass may strip otherwise
    if kind is int:
        if _FIRST_SECOND <= value < _EPOCH_MILLIS_THRESHOLD_INT:
            return _format(value, 0)  # epoch seconds: fromtimestamp(int) is exact
        text = _from_millis(value)
    elif kind is str:
        text = _from_iso(value.strip())
    elif kind is float:
        text = _from_timestamp(value / 1000 if abs(value) >= EPOCH_MILLIS_THRESHOLD else value)
    else:
        text = None
    return _reference(value) if text is None else text


def arrival_time(millis: int) -> str:
    """What ``format_timestamp(datetime.fromtimestamp(millis / 1000, tz=UTC))`` gives.

    Raises as that does where it raises (beyond the years 1 to 9999).
    """
    if type(millis) is int:
        if -_EXACT_MILLIS_LIMIT < millis < _EXACT_MILLIS_LIMIT:
            seconds, rest = divmod(millis, 1000)
            return _format(seconds, rest)
        if abs(millis) < _MILLIS_BEYOND_YEAR_9999:
            text = _from_timestamp(millis / 1000)
            if text is not None:
                return text
    return format_timestamp(datetime.fromtimestamp(millis / 1000, tz=UTC))


def _reference(value: Any) -> str | None:
    """The slow path, and the definition: parse, then format."""
    moment = parse_timestamp(value)
    return None if moment is None else format_timestamp(moment)


def _from_millis(value: int) -> str | None:
    """Epoch milliseconds as the reference formats them; ``None`` if not (or out of range)."""
    magnitude = abs(value)
    if not _EPOCH_MILLIS_THRESHOLD_INT <= magnitude < _MILLIS_BEYOND_YEAR_9999:
        return None
    if magnitude < _EXACT_MILLIS_LIMIT:
        seconds, millis = divmod(value, 1000)
        return _format(seconds, millis)
    return _from_timestamp(value / 1000)


def _from_iso(text: str) -> str | None:
    """ISO 8601 text in UTC as the reference formats it; ``None`` if not of that kind."""
    if len(text) == _CANONICAL_LENGTH and _CANONICAL(text) is not None:
        return text if _exists(text) else None
    match = _ISO_UTC(text)
    if match is None or not _exists(text):
        return None
    head = text[:19] if text[10] == "T" else text[:10] + "T" + text[11:19]
    fraction = match[1]
    if fraction is None:
        return head + ".000Z"
    # isoformat writes the microseconds fromisoformat kept (the first 6 digits, zeros
    # appended) cut to milliseconds: the first 3 digits, zeros appended.
    return head + "." + (fraction + "00")[:3] + "Z"


def _exists(text: str) -> bool:
    """Whether ``datetime.fromisoformat`` reads ``text`` (the pattern has fixed its shape)."""
    try:
        _fromisoformat(text)
    except ValueError:
        return False
    return True


def _from_timestamp(seconds: float) -> str | None:
    """``format_timestamp(datetime.fromtimestamp(seconds, tz=UTC))``, ``None`` out of range.

    fromtimestamp splits a float as its C code (pytime_double_to_denominator, rounding
    _PyTime_ROUND_HALF_EVEN) and its pure-Python twin (``datetime._fromtimestamp`` in the
    standard library) do: math.modf, then the fraction times 1e6 rounded half to even,
    which is what round() on a float does, then a carry into the seconds. The same double
    operations in the same order give the same microseconds; isoformat(timespec=
    "milliseconds") then drops the last three digits. tests/test_timestamps.py compares.
    """
    # Also refuses NaN and infinities, which modf and round() would not take.
    if not _FIRST_SECOND - 1 <= seconds <= _LAST_SECOND + 1:
        return None
    fraction, whole = math.modf(seconds)
    micros = round(fraction * _MICROS_PER_SECOND)
    second = int(whole)
    if micros >= _MICROS_PER_SECOND:
        second += 1
        micros -= _MICROS_PER_SECOND
    elif micros < 0:
        second -= 1
        micros += _MICROS_PER_SECOND
    if not _FIRST_SECOND <= second <= _LAST_SECOND:
        return None
    return _format(second, micros // _MICROS_PER_MILLI)


def _format(second: int, millis: int) -> str:
    """``format_timestamp`` of ``second`` (epoch, within years 1-9999) plus ``millis`` ms."""
    hour, rest = divmod(second, _SECONDS_PER_HOUR)
    prefix = _HOUR_PREFIXES.get(hour)
    if prefix is None:
        if len(_HOUR_PREFIXES) >= _MAX_HOUR_PREFIXES:
            _HOUR_PREFIXES.clear()
        # isoformat() starts "YYYY-MM-DDTHH:", the year zero-padded to 4 digits.
        prefix = (_EPOCH + timedelta(hours=hour)).isoformat()[:14]
        _HOUR_PREFIXES[hour] = prefix
    return prefix + _MINUTE_SECOND[rest] + _MILLIS_Z[millis]
