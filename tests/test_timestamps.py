"""Event times (consumer/timestamps.py): what timestampKey reads, and moments it gives up on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from consumer.mapping import Mapper
from consumer.timestamps import parse_timestamp
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
