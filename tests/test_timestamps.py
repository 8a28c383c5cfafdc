"""Event times (consumer/timestamps.py): what timestampKey reads, and moments it gives up on.

And the fast paths: event_time and arrival_time must give exactly what parse_timestamp
and format_timestamp (the reference) give, for every value, only cheaper.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from unittest import mock

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer import timestamps
from consumer.mapping import Mapper
from consumer.timestamps import arrival_time, event_time, format_timestamp, parse_timestamp
from tests.support import (
    ARRIVAL_TEXT,
    RecordFactory,
    RulesFactory,
    event_for,
    event_of,
    record_of,
    rules_of,
)


class TestTimestampKey:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00.000Z"),  # ISO 8601 with Z
            ("2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00.000Z"),  # offset converted to UTC
            ("2024-05-01 10:00:00", "2024-05-01T10:00:00.000Z"),  # naive means UTC
            (1714557600, "2024-05-01T10:00:00.000Z"),  # epoch seconds
            (1714557600.5, "2024-05-01T10:00:00.500Z"),  # fractional seconds
            (1714557600123, "2024-05-01T10:00:00.123Z"),  # epoch milliseconds
            ("1714557600", "2024-05-01T10:00:00.000Z"),  # epoch seconds as text
            ("yesterday", "2023-11-14T22:13:20.123Z"),  # unparsable: arrival time
            (True, "2023-11-14T22:13:20.123Z"),  # not a time: arrival time
            (None, "2023-11-14T22:13:20.123Z"),  # null: arrival time
        ],
    )
    def test_timestamp_key(
        self, make_rules: RulesFactory, make_record: RecordFactory, value: Any, expected: str
    ) -> None:
        """timestampKey accepts ISO 8601 and epoch s/ms, else falls back to arrival."""
        mapper = Mapper(make_rules(timestampKey="ts"), "s")
        event = event_of(mapper, make_record({"properties": {"eventName": "e"}, "ts": value}))
        assert expected == event["timestamp"]


def test_parse_timestamp_rejects_out_of_range() -> None:
    """Epoch values beyond datetime's range give None, not an exception."""
    assert parse_timestamp(1e300) is None


class TestKnownHostileRecords:
    """Each record here once ended the shard process (exit 70), and every worker after it."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ('"0001-01-01T00:00:00+01:00"', ARRIVAL_TEXT),  # year 0 in UTC: astimezone overflowed
            ('"9999-12-31T23:30:00-01:00"', ARRIVAL_TEXT),  # year 10000 in UTC
            ("9" * 400, ARRIVAL_TEXT),  # 400-digit integer: int / 1000 overflowed
            ("-" + "9" * 400, ARRIVAL_TEXT),  # and its negative
            ("1e400", ARRIVAL_TEXT),  # a float literal beyond a double decodes to inf
            ('"1e400"', ARRIVAL_TEXT),  # epoch text that reads as inf
            ('"' + "9" * 400 + '"', ARRIVAL_TEXT),  # 400 digits as text
            ("253402300800000", ARRIVAL_TEXT),  # epoch milliseconds of 10000-01-01
            ("-62135596801", ARRIVAL_TEXT),  # a second before 0001-01-01
            ('"\\ud800"', ARRIVAL_TEXT),  # a lone surrogate is no timestamp either
            ('"0001-01-01T00:00:00"', "0001-01-01T00:00:00.000Z"),  # the first writable moment
            ('"9999-12-31T23:59:59.999999Z"', "9999-12-31T23:59:59.999Z"),  # the last
            ('"0001-01-01T01:00:00+01:00"', "0001-01-01T00:00:00.000Z"),  # just inside, offset
        ],
    )
    def test_unreadable_timestamps_fall_back_to_arrival(self, value: str, expected: str) -> None:
        """timestampKey values outside years 1-9999 in UTC mean the arrival time, as documented."""
        rules = rules_of((("timestampKey", "ts"),))
        event = event_for(
            rules, record_of(f'{{"properties": {{"eventName": "e"}}, "ts": {value}}}')
        )
        assert event["timestamp"] == expected

    @pytest.mark.parametrize(
        "value",
        [
            "0001-01-01T00:00:00+01:00",  # overflows converting to UTC
            "9999-12-31T23:30:00-01:00",  # likewise, at the other end
            10**400,  # beyond a double
            -(10**400),  # beyond a double, negative
            float("inf"),  # what 1e400 decodes to
            "nan",  # text float() reads as NaN
        ],
    )
    def test_parse_timestamp_gives_none_out_of_range(self, value: Any) -> None:
        """parse_timestamp never raises; out of range is None."""
        assert parse_timestamp(value) is None

    def test_parse_timestamp_returns_utc(self) -> None:
        """The result is already in UTC, so format_timestamp cannot overflow converting it."""
        assert parse_timestamp("0001-01-01T01:00:00+01:00") == datetime(1, 1, 1, tzinfo=UTC)


# The fast paths: event_time and arrival_time against the reference.

FIRST_SECOND = -62_135_596_800  # 0001-01-01T00:00:00Z
LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z
FIRST_MILLIS = FIRST_SECOND * 1000
LAST_MILLIS = LAST_SECOND * 1000 + 999
MILLIS_THRESHOLD = 10**11  # EPOCH_MILLIS_THRESHOLD as an int
EXACT_MILLIS_LIMIT = 2**33 * 1000  # where millis / 1000 stops being exact to the microsecond
# Where the integer paths change: each is tried with both signs and small offsets.
INTEGER_EDGES = (
    0,
    MILLIS_THRESHOLD,
    EXACT_MILLIS_LIMIT,
    -FIRST_SECOND,
    LAST_SECOND,
    -FIRST_MILLIS,
    LAST_MILLIS,
    10**15,  # where the fast path stops dividing
    2**53,  # the last run of integers a double holds exactly
    2**63,  # time_t
    2**1024,  # beyond a double: the reference's isfinite overflows
)
PROPERTY_SETTINGS = hypothesis.settings(max_examples=1000, deadline=None)


def reference_event_time(value: Any) -> str | None:
    """The definition event_time must meet: parse, then format."""
    moment = parse_timestamp(value)
    return None if moment is None else format_timestamp(moment)


def reference_arrival(millis: int) -> str | type[Exception]:
    """What the mapper wrote for an arrival time before arrival_time, or the error it met."""
    try:
        return format_timestamp(datetime.fromtimestamp(millis / 1000, tz=UTC))
    except (OverflowError, OSError, ValueError) as exc:
        return type(exc)


def arrival_outcome(millis: int) -> str | type[Exception]:
    """arrival_time's text, or the type of error it raised."""
    try:
        return arrival_time(millis)
    except (OverflowError, OSError, ValueError) as exc:
        return type(exc)


near_integer_edges = st.builds(
    lambda edge, sign, offset: sign * edge + offset,
    st.sampled_from(INTEGER_EDGES),
    st.sampled_from((1, -1)),
    st.integers(-3000, 3000),
)
integers = (
    st.integers()
    | st.integers(FIRST_MILLIS - 10**6, LAST_MILLIS + 10**6)  # every moment, as milliseconds
    | st.integers(-MILLIS_THRESHOLD, MILLIS_THRESHOLD)  # every moment, as seconds
    | st.integers(-(2**1100), 2**1100)  # beyond a double
    # Milliseconds where the double of millis / 1000 is coarser than a microsecond, both signs.
    | st.integers(EXACT_MILLIS_LIMIT, LAST_MILLIS).flatmap(lambda m: st.sampled_from((m, -m)))
    | near_integer_edges
)
floats = (
    st.floats()  # NaN, infinities, -0.0, subnormals
    | st.floats(-7e10, 1e11)  # epoch seconds, fractional
    | st.floats(-3e14, 3e14)  # epoch milliseconds, fractional
    | near_integer_edges.filter(lambda edge: abs(edge) < 2**1000).map(float)
    | st.builds(
        lambda edge, offset: edge + offset, st.sampled_from((0.0, 1e11, -1e11)), st.floats(-1, 1)
    )
    # Halfway between two microseconds: fromtimestamp rounds those half to even.
    | st.builds(
        lambda s, k: s + (2 * k + 1) / 2e6, st.integers(-(10**10), 10**10), st.integers(0, 10**6)
    )
)
moments = st.datetimes()  # naive, years 1 to 9999
offsets = st.sampled_from(("", "Z", "+00:00", "-00:00", "+0000", "+00", "z", "+01:00", "-23:59"))


@st.composite
def iso_texts(draw: st.DrawFn) -> str:
    """ISO 8601 as producers write it: any separator and precision, UTC or not, padded."""
    moment = draw(moments)
    precision = draw(
        st.sampled_from(("auto", "minutes", "seconds", "milliseconds", "microseconds"))
    )
    text = moment.isoformat(sep=draw(st.sampled_from("T ")), timespec=precision)
    if "." in text and draw(st.booleans()):  # any number of digits: fromisoformat keeps 6
        text = text[: text.index(".") + 1] + draw(st.text(string.digits, max_size=12))
    padding = draw(st.sampled_from(("", " ", "\t", "\n ", "\u3000")))
    return padding + text + draw(offsets) + padding


@st.composite
def damaged_iso_texts(draw: st.DrawFn) -> str:
    """ISO 8601 with one character replaced: digits out of range, other scripts' digits."""
    text = draw(iso_texts())
    where = draw(st.integers(0, len(text) - 1))
    character = draw(st.sampled_from("0123456789-:T .,Z+Wz\u0660\uff10") | st.characters())
    return text[:where] + character + text[where + 1 :]


# Canonical in shape, any digits: month 13, February 30, hour 24, second 60, year 0000.
canonical_shapes = st.from_regex(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z", fullmatch=True
)
json_values = st.recursive(
    st.none() | st.booleans() | integers | floats | st.text() | iso_texts(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=5,
)
any_values = (
    st.booleans()  # bool is an int subclass, and no time
    | st.none()
    | integers
    | floats
    | iso_texts()
    | damaged_iso_texts()
    | canonical_shapes
    | st.text()
    | integers.map(str)  # epoch numbers as text go through float()
    | floats.map(repr)
    | json_values
)


@PROPERTY_SETTINGS
@given(value=any_values)
def test_event_time_is_the_reference(value: Any) -> None:
    """event_time(v) is format_timestamp(parse_timestamp(v)), None where that is None."""
    assert event_time(value) == reference_event_time(value)


@PROPERTY_SETTINGS
@given(millis=integers)
def test_arrival_time_is_the_reference(millis: int) -> None:
    """arrival_time(ms) is what fromtimestamp(ms / 1000) formats to, and raises where it does."""
    assert arrival_outcome(millis) == reference_arrival(millis)


@PROPERTY_SETTINGS
@given(moment=st.datetimes())  # naive, years 1 to 9999
def test_canonical_text_is_returned_as_is(moment: datetime) -> None:
    """What format_timestamp writes reads back as itself: the form PostHog stores."""
    text = format_timestamp(moment.replace(tzinfo=UTC))
    assert event_time(text) is text


class TestEventTimeEdges:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (1_700_000_000, "2023-11-14T22:13:20.000Z"),  # epoch seconds
            (99_999_999_999, "5138-11-16T09:46:39.000Z"),  # the last epoch second read as seconds
            (100_000_000_000, "1973-03-03T09:46:40.000Z"),  # 1e11: read as milliseconds
            (-99_999_999_999, None),  # seconds, before year 1
            (-100_000_000_000, "1966-10-31T14:13:20.000Z"),  # milliseconds, before 1970
            (FIRST_SECOND, "0001-01-01T00:00:00.000Z"),  # the first second
            (FIRST_SECOND - 1, None),  # a second before it
            (1_700_000_000_123, "2023-11-14T22:13:20.123Z"),  # epoch milliseconds
            (-1, "1969-12-31T23:59:59.000Z"),  # a negative second
            (-100_000_000_001, "1966-10-31T14:13:19.999Z"),  # negative milliseconds floor
            (EXACT_MILLIS_LIMIT - 1, "2242-03-16T12:56:31.999Z"),  # the last exact millisecond
            # The first past it: the double of 8589934592.001 is 0.48 us short, so
            # fromtimestamp rounds to ...32.000 - the slow rounding, not divmod.
            (EXACT_MILLIS_LIMIT + 1, "2242-03-16T12:56:32.000Z"),
            (LAST_MILLIS, "9999-12-31T23:59:59.998Z"),  # 30 us doubles: .999 becomes .998
            (LAST_MILLIS + 1, None),  # year 10000
            (FIRST_MILLIS, "0001-01-01T00:00:00.000Z"),  # the first millisecond
            (FIRST_MILLIS - 1, None),  # year 0
            (10**15, None),  # where the fast path stops dividing: far out of range
            (10**400, None),  # beyond a double
            (True, None),  # bool is an int, but not a time
            (False, None),  # likewise
            (None, None),  # null
            ([1_700_000_000], None),  # a list holding a time is not one
            ({"t": 1}, None),  # nor is an object
            (1714557600.5, "2024-05-01T10:00:00.500Z"),  # fractional seconds
            (1714557600.9995, "2024-05-01T10:00:00.999Z"),  # .9995 is 999499.99 us: .999
            (1714557600.9999996, "2024-05-01T10:00:01.000Z"),  # rounds up into the next second
            (0.0000005, "1970-01-01T00:00:00.000Z"),  # half a microsecond: half to even, 0
            (-0.0005, "1969-12-31T23:59:59.999Z"),  # negative fraction borrows a second
            (-0.0, "1970-01-01T00:00:00.000Z"),  # negative zero
            (5e-324, "1970-01-01T00:00:00.000Z"),  # the smallest subnormal
            (1e11, "1973-03-03T09:46:40.000Z"),  # float 1e11: milliseconds too
            (float("nan"), None),  # NaN
            (float("-inf"), None),  # infinity
            ("2023-11-14T22:13:20.123Z", "2023-11-14T22:13:20.123Z"),  # canonical: as is
            (" 2023-11-14T22:13:20.123Z\n", "2023-11-14T22:13:20.123Z"),  # stripped first
            ("2023-11-14T22:13:20Z", "2023-11-14T22:13:20.000Z"),  # no fraction
            ("2023-11-14T22:13:20.1Z", "2023-11-14T22:13:20.100Z"),  # one digit: tenths
            ("2023-11-14T22:13:20.123456789Z", "2023-11-14T22:13:20.123Z"),  # nanoseconds cut
            ("2023-11-14 22:13:20.123+00:00", "2023-11-14T22:13:20.123Z"),  # space, +00:00
            ("2023-11-14T22:13:20", "2023-11-14T22:13:20.000Z"),  # naive means UTC
            ("2023-11-14T22:13:20,123Z", "2023-11-14T22:13:20.123Z"),  # comma: reference path
            ("2023-11-14T23:13:20.123+01:00", "2023-11-14T22:13:20.123Z"),  # offset: reference
            ("2023-11-14T22:13:20.Z", "2023-11-14T22:13:20.000Z"),  # empty fraction: reference
            ("2023-02-29T00:00:00.000Z", None),  # canonical shape, no such day
            ("2023-11-14T24:00:00.000Z", None),  # hour 24
            ("2023-11-14T22:13:60.000Z", None),  # leap second
            ("0000-01-01T00:00:00.000Z", None),  # year 0
            ("0001-01-01T00:00:00.000Z", "0001-01-01T00:00:00.000Z"),  # the first moment
            ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),  # the last
            ("\uff12023-11-14T22:13:20.123Z", None),  # a fullwidth digit
            ("2023-11-14T22:13:20z", None),  # lower-case z: fromisoformat refuses it
            ("1714557600", "2024-05-01T10:00:00.000Z"),  # epoch text: reference (float)
            ("1e400", None),  # epoch text reading as infinity
        ],
    )
    def test_edges(self, value: Any, expected: str | None) -> None:
        """Each edge gives its documented text, which is also the reference's."""
        assert event_time(value) == expected
        assert reference_event_time(value) == expected


class TestArrivalTimeEdges:
    @pytest.mark.parametrize(
        ("millis", "expected"),
        [
            (1_700_000_000_123, "2023-11-14T22:13:20.123Z"),  # now-ish
            (0, "1970-01-01T00:00:00.000Z"),  # the epoch
            (-1, "1969-12-31T23:59:59.999Z"),  # just before: floor, not truncation
            (999, "1970-01-01T00:00:00.999Z"),  # small values are milliseconds too
            (-EXACT_MILLIS_LIMIT + 1, "1697-10-17T11:03:28.001Z"),  # last exact, negative
            (EXACT_MILLIS_LIMIT - 1, "2242-03-16T12:56:31.999Z"),  # last exact
            (
                EXACT_MILLIS_LIMIT + 1,
                "2242-03-16T12:56:32.000Z",
            ),  # past it: fromtimestamp's rounding
            (FIRST_MILLIS, "0001-01-01T00:00:00.000Z"),  # the first moment
            (LAST_MILLIS, "9999-12-31T23:59:59.998Z"),  # the last, as the double rounds it
            (FIRST_MILLIS - 1, ValueError),  # year 0: raises as fromtimestamp does
            (LAST_MILLIS + 1, ValueError),  # year 10000
            (10**18, ValueError),  # far beyond
            (10**400, OverflowError),  # beyond a double: the division overflows
        ],
    )
    def test_edges(self, millis: int, expected: str | type[Exception]) -> None:
        """Each edge gives its documented text or error, which is also the reference's."""
        assert arrival_outcome(millis) == expected
        assert reference_arrival(millis) == expected


@pytest.mark.interpreted
@pytest.mark.parametrize(
    "value",
    [
        1_700_000_000,  # epoch seconds
        1_700_000_000_123,  # epoch milliseconds
        250_000_000_000_123,  # epoch milliseconds beyond 2**33 s: fromtimestamp's rounding
        1_700_000_000.25,  # float seconds
        "2023-11-14T22:13:20.123Z",  # canonical text
        "2023-11-14 22:13:20.123456+00:00",  # other UTC text
    ],
)
def test_common_values_take_the_fast_path(value: Any) -> None:
    """The common forms never reach parse_timestamp: a regression there would be silent."""
    expected = reference_event_time(value)
    with mock.patch.object(timestamps, "parse_timestamp", side_effect=AssertionError):
        assert event_time(value) == expected


@pytest.mark.interpreted
def test_arrival_time_takes_the_fast_path() -> None:
    """Arrival times in range never go through a datetime and format_timestamp."""
    expected = reference_arrival(1_700_000_000_123)
    with mock.patch.object(timestamps, "format_timestamp", side_effect=AssertionError):
        assert arrival_time(1_700_000_000_123) == expected
        assert arrival_time(LAST_MILLIS) == "9999-12-31T23:59:59.998Z"


def test_hour_cache_stays_bounded() -> None:
    """Times spread over more hours than the cache holds still read right, in bounded memory."""
    start = 1_700_000_000 - 3600 * timestamps._MAX_HOUR_PREFIXES
    for hour in range(timestamps._MAX_HOUR_PREFIXES + 10):
        second = start + hour * 3600 + 7
        assert event_time(second) == reference_event_time(second)
        assert len(timestamps._HOUR_PREFIXES) <= timestamps._MAX_HOUR_PREFIXES


def test_offsets_other_than_utc_match() -> None:
    """Fixed offsets at the ends of the range take the reference path and agree with it."""
    for hours in (-23, -1, 1, 23):
        zone = timezone(timedelta(hours=hours))
        for moment in (datetime(1, 1, 1, tzinfo=zone), datetime(9999, 12, 31, 23, tzinfo=zone)):
            text = moment.isoformat()
            assert event_time(text) == reference_event_time(text)
