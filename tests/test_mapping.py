"""Record -> event: the seed's semantics, kept types, typed errors, deterministic identity.

And hostile records: whatever the bytes, mapping gives an event PostHog's capture can
read or a RecordError with a known reason, never anything that would end a shard.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import gzip
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from consumer import capture_rules, config, mapping, wiring
from consumer.capture_rules import (
    CAPTURED_EVENT_FIXED_BYTES,
    DOUBLE_OVERFLOW_INT,
    MAX_EVENT_BYTES,
    MAX_EVENT_DEPTH,
)
from consumer.errors import RecordError
from consumer.mapping import MAX_DECOMPRESSED_BYTES, REASONS, Mapper, MappingRules
from consumer.record import KinesisRecord, MappedEvent
from consumer.timestamps import parse_timestamp
from local.capture_rules import FILTERED_EVENT_NAMES
from local.captured_event import CaptureEnvelope, captured_distinct_id, captured_message_bytes
from tests.support import BASE_PROPERTIES, RecordFactory, RulesFactory

SEED_RECORD = {"properties": {"eventName": "my posthog event", "userId": "$userId", "foo": "bar"}}


def event_of(mapper: Mapper, record: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(mapper.map(record).payload)
    return result


class TestSeedSemantics:
    def test_readme_example(self, make_rules: RulesFactory, make_record: RecordFactory) -> None:
        """The seed README's record and configuration give its documented event."""
        rules = make_rules(
            additionalPropertyMappings="properties.userId:distinct_id,properties.foo:foo"
        )
        event = event_of(Mapper(rules, "shardId-0"), make_record(SEED_RECORD))
        assert event["event"] == "my posthog event"
        assert event["distinct_id"] == "$userId"
        assert event["properties"]["distinct_id"] == "$userId"
        assert event["properties"]["foo"] == "bar"

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (42, 42),  # numbers keep their type (the seed dropped them)
            (True, True),  # booleans too
            ({"a": [1, 2]}, {"a": [1, 2]}),  # objects and arrays
            (None, None),  # an explicit null is forwarded as null
        ],
    )
    def test_values_keep_their_json_type(
        self, make_rules: RulesFactory, make_record: RecordFactory, value: Any, expected: Any
    ) -> None:
        """Mapped values are forwarded as they are."""
        rules = make_rules(additionalPropertyMappings="v:v")
        event = event_of(
            Mapper(rules, "s"), make_record({"properties": {"eventName": "e"}, "v": value})
        )
        assert expected == event["properties"]["v"]

    def test_absent_source_is_not_set(
        self, make_rules: RulesFactory, make_record: RecordFactory
    ) -> None:
        """A mapping whose source is absent adds no property (not 'undefined')."""
        rules = make_rules(additionalPropertyMappings="nope.here:x")
        assert "x" not in event_of(Mapper(rules, "s"), make_record(SEED_RECORD))["properties"]

    def test_include_all_properties(
        self, make_rules: RulesFactory, make_record: RecordFactory
    ) -> None:
        """includeAllProperties forwards the whole object, with mappings applied on top."""
        rules = make_rules(
            includeAllProperties="true", additionalPropertyMappings="properties.foo:top"
        )
        properties = event_of(Mapper(rules, "s"), make_record(SEED_RECORD))["properties"]
        assert properties["properties"] == SEED_RECORD["properties"]
        assert properties["top"] == "bar"

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("signup", "signup"),  # plain string
            (0, "0"),  # falsy numbers are names too (the seed dropped them)
            (1.5, "1.5"),  # floats become strings
        ],
    )
    def test_event_names(
        self, make_rules: RulesFactory, make_record: RecordFactory, name: Any, expected: str
    ) -> None:
        """Strings and numbers become event names."""
        event = event_of(
            Mapper(make_rules(), "s"), make_record({"properties": {"eventName": name}})
        )
        assert expected == event["event"]


class TestIdentity:
    def test_replay_is_byte_identical(
        self, make_rules: RulesFactory, make_record: RecordFactory
    ) -> None:
        """Mapping the same record twice gives the same bytes (uuid and timestamp included)."""
        mapper = Mapper(make_rules(), "shardId-000000000001")
        assert (
            mapper.map(make_record(SEED_RECORD)).payload
            == mapper.map(make_record(SEED_RECORD)).payload
        )

    @pytest.mark.parametrize(
        "change",
        [
            {"sequence": "2"},  # another sequence number
            {"sub_sequence": 1},  # another subsequence (KPL aggregation)
        ],
    )
    def test_uuid_depends_on_position(
        self, make_rules: RulesFactory, make_record: RecordFactory, change: dict[str, Any]
    ) -> None:
        """Different positions give different uuids."""
        mapper = Mapper(make_rules(), "shardId-0")
        assert (
            mapper.map(make_record(SEED_RECORD)).uuid
            != mapper.map(make_record(SEED_RECORD, **change)).uuid
        )

    def test_uuid_depends_on_shard_and_stream(
        self, make_rules: RulesFactory, make_record: RecordFactory
    ) -> None:
        """The same sequence number in another shard or stream is another event."""
        record = make_record(SEED_RECORD)
        base = Mapper(make_rules(), "shardId-0").map(record).uuid
        assert base != Mapper(make_rules(), "shardId-1").map(record).uuid
        assert base != Mapper(make_rules(streamName="other"), "shardId-0").map(record).uuid

    def test_timestamp_defaults_to_arrival(
        self, make_rules: RulesFactory, make_record: RecordFactory
    ) -> None:
        """Without timestampKey the approximate arrival time is the event time."""
        event = event_of(
            Mapper(make_rules(), "s"), make_record(SEED_RECORD, arrival_millis=1_700_000_000_123)
        )
        assert event["timestamp"] == "2023-11-14T22:13:20.123Z"

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


class TestDistinctId:
    @pytest.mark.parametrize(
        ("overrides", "document", "expected"),
        [
            ({"distinctIdKey": "user.id"}, {"user": {"id": "u1"}}, "u1"),  # nested distinctIdKey
            ({"distinctIdKey": "user.id"}, {"user": {"id": 7}}, "7"),  # numbers become strings
            ({"distinctIdKey": "user.id"}, {}, "pk-1"),  # absent: partition key (default)
            ({"distinctIdKey": "user.id"}, {"user": {"id": ""}}, "pk-1"),  # empty counts as absent
            ({"distinctIdKey": "u"}, {"u": " \t\n"}, "pk-1"),  # so does blank: capture trims
            ({"distinctIdKey": "u"}, {"u": "\u3000\u00a0"}, "pk-1"),  # Unicode White_Space too
            ({"distinctIdKey": "u"}, {"u": " u1 "}, " u1 "),  # capture keeps the id as sent
            (
                {"distinctIdKey": "u"},
                {"u": "\x1c"},
                "\x1c",
            ),  # not White_Space (str.strip() is wrong)
            ({"distinctIdKey": "u"}, {"u": "\x00"}, "\x00"),  # NUL: capture makes it U+FFFD
            (
                {"distinctIdKey": "x", "missingDistinctId": "fixed", "fallbackDistinctId": "anon"},
                {},
                "anon",
            ),  # fixed
            (
                {"additionalPropertyMappings": "uid:distinct_id"},
                {"uid": "m1"},
                "m1",
            ),  # the seed's mapping form
        ],
    )
    def test_resolution(
        self,
        make_rules: RulesFactory,
        make_record: RecordFactory,
        overrides: dict[str, str],
        document: dict[str, Any],
        expected: str,
    ) -> None:
        """distinct_id comes from distinctIdKey, the mapping, or the missing-id policy."""
        event = event_of(
            Mapper(make_rules(**overrides), "s"),
            make_record({"properties": {"eventName": "e"}, **document}),
        )
        assert expected == event["distinct_id"]


class TestRecordErrors:
    @pytest.mark.parametrize(
        ("data", "overrides", "reason"),
        [
            (b"\xff\xfe", {}, "not_utf8"),  # not UTF-8
            (b"{not json", {}, "not_json"),  # not JSON
            (b'{"a": NaN}', {}, "not_json"),  # NaN is not JSON (PostHog would refuse the batch)
            (b"[1, 2]", {}, "not_object"),  # JSON but not an object
            (b'"text"', {}, "not_object"),  # a JSON string
            (b"\x1f\x8bnot really gzip", {}, "bad_gzip"),  # gzip magic, corrupt body
            (b'{"properties": {}}', {}, "missing_event"),  # no event key
            (b'{"properties": {"eventName": null}}', {}, "missing_event"),  # null event
            (b'{"properties": {"eventName": "  "}}', {}, "invalid_event"),  # blank event name
            (b'{"properties": {"eventName": ["a"]}}', {}, "invalid_event"),  # array event name
            (b'{"properties": {"eventName": false}}', {}, "invalid_event"),  # boolean event name
            (
                b'{"properties": {"eventName": "e"}}',
                {"distinctIdKey": "u", "missingDistinctId": "deadLetter"},
                "missing_distinct_id",
            ),  # no id and the policy says dead-letter
            (
                b'{"properties": {"eventName": "e"}, "u": {"x": 1}}',
                {"distinctIdKey": "u"},
                "invalid_distinct_id",
            ),  # object id
        ],
    )
    def test_reasons(
        self,
        make_rules: RulesFactory,
        make_record: RecordFactory,
        data: bytes,
        overrides: dict[str, str],
        reason: str,
    ) -> None:
        """Each kind of bad record raises RecordError with its stable reason."""
        with pytest.raises(RecordError) as caught:
            Mapper(make_rules(**overrides), "s").map(make_record(data=data))
        assert reason == caught.value.reason

    def test_too_large(self, make_rules: RulesFactory, make_record: RecordFactory) -> None:
        """An event over PostHog's per-event limit is a record error, not a failed batch."""
        rules = make_rules(includeAllProperties="true")
        record = make_record({"properties": {"eventName": "e"}, "blob": "x" * MAX_EVENT_BYTES})
        with pytest.raises(RecordError) as caught:
            Mapper(rules, "s").map(record)
        assert caught.value.reason == "event_too_large"

    def test_gzip_records_are_transparent(
        self, make_rules: RulesFactory, make_record: RecordFactory
    ) -> None:
        """A gzip-compressed record maps as its plain JSON would."""
        mapper = Mapper(make_rules(), "s")
        plain = make_record(SEED_RECORD)
        zipped = make_record(data=gzip.compress(plain.data))
        assert mapper.map(plain).payload == mapper.map(zipped).payload


def test_parse_timestamp_rejects_out_of_range() -> None:
    """Epoch values beyond datetime's range give None, not an exception."""
    assert parse_timestamp(1e300) is None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(
    document=st.dictionaries(st.text(max_size=8), json_values, max_size=6),
    include_all=st.booleans(),
)
def test_any_object_maps_to_an_event_or_a_typed_error(
    document: dict[str, Any], include_all: bool
) -> None:
    """Any JSON object yields an event or a RecordError with a known reason, nothing else."""
    rules = wiring.mapping_rules(
        config.from_mapping(
            {
                **BASE_PROPERTIES,
                "eventKey": "e",
                "distinctIdKey": "d",
                "timestampKey": "t",
                "additionalPropertyMappings": "a.b:x, c.0:y",
                "includeAllProperties": str(include_all).lower(),
            }
        )
    )
    record = KinesisRecord(json.dumps(document).encode(), "pk", "1", 0, 1_700_000_000_000)
    try:
        event = json.loads(Mapper(rules, "s").map(record).payload)
    except RecordError as exc:
        assert exc.reason in REASONS  # noqa: PT017 - either outcome is allowed; raises() cannot say that
        return
    assert isinstance(event["event"], str)
    assert event["event"]
    assert isinstance(event["distinct_id"], str)


# --- Hostile records ---------------------------------------------------------------------
#
# The promise under test: Mapper.map returns a MappedEvent that PostHog's capture can read,
# or raises RecordError with a reason in REASONS, and nothing else, whatever the bytes.

SHARD = "shardId-000000000007"
ARRIVAL_MILLIS = 1_700_000_000_123
ARRIVAL_TEXT = "2023-11-14T22:13:20.123Z"
TIMESTAMP_FORM = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
EVENT_KEYS = {"event", "distinct_id", "properties", "timestamp", "uuid"}
# The seed README's configuration: properties.foo is forwarded, properties.userId is the id.
SEED_MAPPINGS = "properties.userId:distinct_id,properties.foo:foo"
# includeAllProperties: the record's own keys become properties.
ALL = {"includeAllProperties": "true"}
# The longest client address capture can put in a message (IPv6 with an IPv4 tail).
LONGEST_IP = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"


def deep(levels: int, leaf: str = "1", *, kind: str = "[") -> str:
    """JSON text of ``leaf`` inside ``levels`` arrays (or objects), built without recursion."""
    if kind == "[":
        return "[" * levels + leaf + "]" * levels
    return '{"k":' * levels + leaf + "}" * levels


def record_of(
    text: str | bytes, *, partition_key: str = "pk-1", arrival_millis: int = ARRIVAL_MILLIS
) -> KinesisRecord:
    """A record holding ``text`` verbatim (str is encoded as UTF-8)."""
    data = text.encode() if isinstance(text, str) else text
    return KinesisRecord(data, partition_key, "4959033827", 0, arrival_millis)


def _refuse_constant(name: str) -> Any:
    raise AssertionError(f"{name} in a payload: PostHog's capture refuses it")


def _finite_float(text: str) -> float:
    value = float(text)
    assert abs(value) != float("inf"), "a number beyond a double: capture refuses it"
    return value


def _double_range_int(text: str) -> int:
    value = int(text)
    assert -DOUBLE_OVERFLOW_INT < value < DOUBLE_OVERFLOW_INT, "capture refuses this integer"
    return value


def check_readable_by_capture(value: Any) -> None:
    """Fail unless ``value`` nests at most MAX_EVENT_DEPTH deep and all its text is UTF-8."""
    level, depth = [value], 1
    while level:
        assert depth <= MAX_EVENT_DEPTH, "nested deeper than capture's serde_json reads"
        below = []
        for item in level:
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                for text in (key, child):
                    if isinstance(text, str):
                        text.encode("utf-8")  # raises on a lone surrogate
                if isinstance(child, dict | list):
                    below.append(child)
        level, depth = below, depth + 1


def check_event(mapped: MappedEvent) -> dict[str, Any]:
    """Read ``mapped`` as strictly as PostHog's capture would, and check the event's shape
    and capture's per-event rules (as the stand-in applies them)."""
    assert len(mapped.payload) <= MAX_EVENT_BYTES
    text = mapped.payload.decode("utf-8")  # strict: no invalid UTF-8, no encoded surrogate
    event = json.loads(
        text,
        parse_constant=_refuse_constant,
        parse_float=_finite_float,
        parse_int=_double_range_int,
    )
    assert isinstance(event, dict)
    assert set(event) == EVENT_KEYS
    assert isinstance(event["event"], str)
    assert event["event"].strip()
    assert isinstance(event["distinct_id"], str)
    assert event["distinct_id"]
    assert event["uuid"] == mapped.uuid
    assert uuid.UUID(mapped.uuid).version == 5
    assert TIMESTAMP_FORM.fullmatch(event["timestamp"])
    check_readable_by_capture(event)
    # capture's rules: a distinct id not blank once trimmed as Rust trims, a boolean
    # $cookieless_mode if any, a name it does not filter out, a message within the limit.
    assert captured_distinct_id(event) is not None, "capture finds no distinct id"
    cookieless = event["properties"].get("$cookieless_mode", False)
    assert isinstance(cookieless, bool), "capture refuses a $cookieless_mode not boolean"
    assert event["event"] not in FILTERED_EVENT_NAMES
    assert standin_measure(mapped.payload) <= MAX_EVENT_BYTES
    return event


def outcome(rules: MappingRules, record: KinesisRecord) -> MappedEvent | RecordError:
    """Map ``record``; fail the test on anything but a readable event or a known reason."""
    error: RecordError | None = None
    try:
        mapped = Mapper(rules, SHARD).map(record)
    except RecordError as exc:
        error = exc
    if error is not None:
        assert error.reason in REASONS, error.reason
        return error
    check_event(mapped)
    return mapped


@functools.cache
def rules_of(overrides: tuple[tuple[str, str], ...] = ()) -> MappingRules:
    """The mapping rules of BASE_PROPERTIES and ``overrides`` (cached: Hypothesis asks often)."""
    values = {**BASE_PROPERTIES, "fallbackDistinctId": "anon", **dict(overrides)}
    return wiring.mapping_rules(config.from_mapping(values))


def reason_of(rules: MappingRules, record: KinesisRecord) -> str | None:
    """The RecordError reason for ``record``, or None when it maps (checked) to an event."""
    result = outcome(rules, record)
    return result.reason if isinstance(result, RecordError) else None


def event_for(rules: MappingRules, record: KinesisRecord) -> dict[str, Any]:
    """The (checked) event ``record`` maps to; fails if it is refused."""
    result = outcome(rules, record)
    assert isinstance(result, MappedEvent), result
    return check_event(result)


class TestKnownHostileRecords:
    """Each record here once ended the shard process (exit 70), and every worker after it."""

    @pytest.mark.parametrize(
        ("text", "overrides", "partition_key", "where"),
        [
            (
                r'{"properties": {"eventName": "x", "foo": "\ud800"}}',
                {"additionalPropertyMappings": SEED_MAPPINGS},
                "pk-1",
                "a property",
            ),  # the production record: a lone high surrogate in a forwarded value
            (
                r'{"properties": {"eventName": "x"}, "\udfff": 1}',
                {"includeAllProperties": "true"},
                "pk-1",
                "a property",
            ),  # a lone low surrogate in a key, forwarded by includeAllProperties
            (
                r'{"properties": {"eventName": "x\ud83d"}}',
                {},
                "pk-1",
                "the event name",
            ),  # half an emoji pair at the end of the event name
            (
                r'{"properties": {"eventName": "x", "userId": "\udc00\ud800"}}',
                {"additionalPropertyMappings": SEED_MAPPINGS},
                "pk-1",
                "the distinct id",
            ),  # a pair in the wrong order in the distinct id (the seed's mapping form)
            (
                r'{"properties": {"eventName": "x"}, "u": "\ud800x"}',
                {"distinctIdKey": "u"},
                "pk-1",
                "the distinct id",
            ),  # a lone surrogate in the distinct id at distinctIdKey
            (
                r'{"properties": {"eventName": "x"}}',
                {},
                "pk\udc80",
                "the distinct id",
            ),  # the partition key (used as distinct id) carries one
        ],
    )
    def test_lone_surrogates_become_replacement_characters(
        self, text: str, overrides: dict[str, str], partition_key: str, where: str
    ) -> None:
        """A lone surrogate anywhere in the event becomes U+FFFD, as PostHog's capture
        rewrites it; the event is delivered, as valid UTF-8, and maps the same every time."""
        del where  # the table names the place for the reader
        rules = rules_of(tuple(overrides.items()))
        record = record_of(text, partition_key=partition_key)
        result = outcome(rules, record)
        assert isinstance(result, MappedEvent), result
        decoded = result.payload.decode("utf-8")  # strict
        assert "\ufffd" in decoded
        assert outcome(rules, record) == result

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (r'{"properties": {"eventName": "\ud83d\ude00"}}', None),  # a proper pair: an emoji
            (r'{"properties": {"eventName": "x"}, "foo": "\ud800"}', None),  # not forwarded
            (b'{"properties": {"eventName": "\xed\xa0\x80"}}', "not_utf8"),  # surrogate as bytes
        ],
    )
    def test_surrogates_that_are_fine_or_not_utf8(self, data: str | bytes, reason: str) -> None:
        """A proper pair is an emoji, an unforwarded one does not matter, raw bytes are not UTF-8."""
        assert reason == reason_of(rules_of(), record_of(data))

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

    @pytest.mark.parametrize(
        ("levels", "kind", "reason"),
        [
            (MAX_EVENT_DEPTH - 2, "[", None),  # as deep as capture reads: event, properties, 123
            (MAX_EVENT_DEPTH - 2, "{", None),  # the same with objects
            (MAX_EVENT_DEPTH - 1, "[", "too_deep"),  # one level more: capture would refuse
            (MAX_EVENT_DEPTH - 1, "{", "too_deep"),  # the same with objects
            (500, "[", "too_deep"),  # well inside what Python's decoder and encoder read
            (900, "{", "too_deep"),  # decodes; json.dumps of the event came near its limit
            (990, "[", "too_deep"),  # decodes at the top of a stack; json.dumps then overflowed
            (1000, "[", "too_deep"),  # at Python's recursion limit: the decoder gives up
            (100_000, "[", "too_deep"),  # far beyond it
        ],
    )
    def test_deep_nesting(self, levels: int, kind: str, reason: str | None) -> None:
        """Forwarded nesting beyond capture's parser is too_deep, however deep it goes."""
        rules = rules_of((("includeAllProperties", "true"),))
        text = f'{{"properties": {{"eventName": "e"}}, "deep": {deep(levels, kind=kind)}}}'
        assert reason == reason_of(rules, record_of(text))

    @pytest.mark.parametrize(
        ("overrides", "reason"),
        [
            ({}, None),  # not forwarded: the event is small and shallow
            ({"additionalPropertyMappings": "a.b:x"}, "too_deep"),  # forwarded by a mapping
            ({"includeAllProperties": "true"}, "too_deep"),  # forwarded whole
        ],
    )
    def test_deep_nesting_matters_only_when_sent(
        self, overrides: dict[str, str], reason: str | None
    ) -> None:
        """A record that decodes but nests deep elsewhere still maps."""
        text = f'{{"properties": {{"eventName": "e"}}, "a": {{"b": {deep(400)}}}}}'
        assert reason == reason_of(rules_of(tuple(overrides.items())), record_of(text))

    @pytest.mark.parametrize(
        ("value", "forwarded", "reason"),
        [
            ("1e400", True, "number_out_of_range"),  # decodes to inf; json.dumps then raised
            ("-1e400", True, "number_out_of_range"),  # and -inf
            ("1" + "0" * 309, True, "number_out_of_range"),  # 1e309 as an integer
            (str(DOUBLE_OVERFLOW_INT), True, "number_out_of_range"),  # the first int to overflow
            (str(DOUBLE_OVERFLOW_INT - 1), True, None),  # the last one capture reads (as 1.8e308)
            (str(2**64), True, None),  # beyond u64: capture reads it as a double
            ("9" * 5000, False, "number_out_of_range"),  # past Python's 4300 digits: unreadable
            ("1e400", False, None),  # not forwarded: harmless
            ("9" * 400, False, None),  # not forwarded: harmless
            ("NaN", False, "not_json"),  # not JSON at all
            ("Infinity", False, "not_json"),  # nor this
            ("-Infinity", False, "not_json"),  # nor this
        ],
    )
    def test_numbers(self, value: str, forwarded: bool, reason: str | None) -> None:
        """Numbers capture's serde_json refuses are number_out_of_range when they are sent."""
        rules = rules_of((("includeAllProperties", str(forwarded).lower()),))
        text = f'{{"properties": {{"eventName": "e"}}, "v": {value}}}'
        assert reason == reason_of(rules, record_of(text))

    @pytest.mark.parametrize(
        ("document", "overrides", "reason"),
        [
            ('{"properties": {"eventName": 1e400}}', {}, "number_out_of_range"),  # "inf" name
            (
                '{"properties": {"eventName": "e"}, "u": -1e400}',
                {"distinctIdKey": "u"},
                "number_out_of_range",
            ),  # "-inf" distinct id
            ('{"properties": {"eventName": ' + "9" * 400 + "}}", {}, None),  # long, but text
        ],
    )
    def test_numbers_as_names_and_ids(
        self, document: str, overrides: dict[str, str], reason: str | None
    ) -> None:
        """A name or id from a number that overflowed is refused, not sent as 'inf'."""
        assert reason == reason_of(rules_of(tuple(overrides.items())), record_of(document))

    @pytest.mark.parametrize(
        ("partition_key", "overrides", "document"),
        [
            ("", {}, {}),  # an empty partition key (Kinesis never sends one)
            (" ", {}, {}),  # a blank one: capture would find no id in it
            ("\u2003\t", {}, {}),  # blank in Unicode's sense
            (" ", {"distinctIdKey": "u"}, {"u": "  "}),  # blank id, then a blank partition key
            (
                "pk-1",
                {"distinctIdKey": "u", "missingDistinctId": "deadLetter"},
                {"u": "\n"},
            ),  # blank id, dead-lettered by policy
        ],
    )
    def test_blank_ids_are_missing(
        self, partition_key: str, overrides: dict[str, str], document: dict[str, Any]
    ) -> None:
        """No id, and no usable fallback: missing_distinct_id, not an event capture refuses."""
        text = json.dumps({"properties": {"eventName": "e"}, **document})
        record = record_of(text, partition_key=partition_key)
        assert reason_of(rules_of(tuple(overrides.items())), record) == "missing_distinct_id"

    def test_blank_fixed_id_is_no_id(self) -> None:
        """A blank fallbackDistinctId (the settings refuse one; rules built otherwise may
        hold one) is not sent as an id capture would refuse."""
        fixed = rules_of((("distinctIdKey", "u"), ("missingDistinctId", "fixed")))
        rules = dataclasses.replace(fixed, fallback_distinct_id="\u2003")
        record = record_of('{"properties": {"eventName": "e"}}')
        assert reason_of(rules, record) == "missing_distinct_id"

    @pytest.mark.parametrize(
        ("overrides", "document", "reason"),
        [
            (ALL, {"$cookieless_mode": True}, None),  # a boolean: fine
            (ALL, {"$cookieless_mode": False}, None),  # either boolean
            (ALL, {"$cookieless_mode": "true"}, "invalid_property"),  # text: capture refuses it
            (ALL, {"$cookieless_mode": None}, "invalid_property"),  # null is there, not boolean
            (ALL, {"$cookieless_mode": 1}, "invalid_property"),  # a number neither
            (
                {"additionalPropertyMappings": "c:$cookieless_mode"},
                {"c": {"on": True}},
                "invalid_property",
            ),  # forwarded by a mapping
            ({}, {"$cookieless_mode": "yes"}, None),  # not forwarded: harmless
        ],
    )
    def test_cookieless_mode_must_be_boolean(
        self, overrides: dict[str, str], document: dict[str, Any], reason: str | None
    ) -> None:
        """capture's extract_is_cookieless_mode refuses a $cookieless_mode that is not a bool."""
        text = json.dumps({"properties": {"eventName": "e"}, **document})
        assert reason == reason_of(rules_of(tuple(overrides.items())), record_of(text))

    @pytest.mark.parametrize(
        ("name", "reason"),
        [
            ("$performance_event", "invalid_event"),  # capture filters it: alone, a 400
            ("$performance_event ", None),  # another name
            ("$pageview", None),  # other $ events are fine
        ],
    )
    def test_names_capture_filters_out(self, name: str, reason: str | None) -> None:
        """An event capture drops from a batch, and refuses alone, is dead-lettered instead."""
        text = json.dumps({"properties": {"eventName": name}})
        assert reason == reason_of(rules_of(), record_of(text))


def filler_record(unit: str | float, count: int, *, as_name: bool = False) -> KinesisRecord:
    """A record whose event grows by ``count`` of ``unit``: in a forwarded string or list, or
    as the event name."""
    if as_name:
        return record_of(json.dumps({"properties": {"eventName": str(unit) * count}}))
    blob: Any = unit * count if isinstance(unit, str) else [unit] * count
    return record_of(json.dumps({"properties": {"eventName": "e"}, "blob": blob}))


def standin_measure(payload: bytes) -> int:
    """The Kafka message capture would build of ``payload``, as the stand-in measures it."""
    envelope = CaptureEnvelope(token=BASE_PROPERTIES["posthogApiKey"], ip=LONGEST_IP)
    return captured_message_bytes(json.loads(payload), envelope)


class TestCaptureSize:
    """The size limit applies to what capture measures, its Kafka message, not to our text."""

    @pytest.mark.parametrize(
        ("unit", "as_name", "message_bytes"),
        [
            ('"', False, 4),  # \" as sent, \\\" in capture's message
            ("\\", False, 4),  # likewise
            ("\x01", False, 7),  # \u0001 as sent, \\u0001 in the message
            ("x", False, 1),  # nothing to escape: the limit is near 900 KiB of text
            ("é", False, 2),  # two bytes of UTF-8, never escaped
            (1e-05, False, 8),  # "1e-05," as sent, "0.00001," as serde_json writes it
            (2**64, False, 22),  # beyond u64: serde_json writes 1.8446744073709552e19
            ("n", True, 3),  # the name is in the message three times
        ],
    )
    def test_limit_is_what_capture_measures(
        self, monkeypatch: pytest.MonkeyPatch, unit: str | float, as_name: bool, message_bytes: int
    ) -> None:
        """At the largest filler the mapper sends, capture's message (as the stand-in builds
        it) is within the limit; one more unit is refused, and its message is no more than the
        fixed allowance short of the limit: the check is neither too lax nor far too strict."""
        # A name is forwarded by the settings' mappings only, not again with the whole record.
        mapper = Mapper(rules_of(() if as_name else tuple(ALL.items())), SHARD)

        def maps(count: int) -> bool:
            try:
                mapper.map(filler_record(unit, count, as_name=as_name))
            except RecordError as exc:
                reason = exc.reason
            else:
                return True
            assert reason == "event_too_large"
            return False

        # The boundary lies within the fixed allowances below the limit (units of the filler).
        low = (MAX_EVENT_BYTES - 3 * CAPTURED_EVENT_FIXED_BYTES) // message_bytes
        high = MAX_EVENT_BYTES // message_bytes + 1
        assert maps(low)
        assert not maps(high)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if maps(middle) else (low, middle)
        largest = mapper.map(filler_record(unit, low, as_name=as_name)).payload
        assert standin_measure(largest) <= MAX_EVENT_BYTES
        monkeypatch.setattr(capture_rules, "MAX_EVENT_BYTES", 10 * MAX_EVENT_BYTES)
        refused = mapper.map(filler_record(unit, high, as_name=as_name)).payload
        assert standin_measure(refused) > MAX_EVENT_BYTES - CAPTURED_EVENT_FIXED_BYTES

    @pytest.mark.parametrize(
        ("unit", "count"),
        [
            ('"', 300_000),  # 600 KB as sent, 1.2 MB in capture's message
            ("\\", 300_000),  # likewise
            ("\x01", 140_000),  # 840 KB as sent, 980 KB in the message
            (1e-05, 125_000),  # 750 KB as sent, 1 MB in the message
        ],
    )
    def test_events_our_text_fits_but_capture_refuses(self, unit: str | float, count: int) -> None:
        """Under 900 KiB as we encode them, over it as capture measures: event_too_large."""
        rules = rules_of(tuple(ALL.items()))
        record = filler_record(unit, count)
        with pytest.raises(RecordError) as caught:
            Mapper(rules, SHARD).map(record)
        assert caught.value.reason == "event_too_large"
        assert "as PostHog's capture measures it" in caught.value.detail
        assert len(record.data) < MAX_EVENT_BYTES


@pytest.mark.parametrize(
    ("inflated", "reason"),
    [
        (MAX_DECOMPRESSED_BYTES, None),  # at the limit: decoded and mapped
        (MAX_DECOMPRESSED_BYTES + 1, "bad_gzip"),  # one byte more: refused before decoding
        (5 * 1024 * 1024, "bad_gzip"),  # 5 MiB of [],[],...: some 135 MB of Python objects
    ],
)
def test_gzip_records_inflate_no_further_than_the_limit(inflated: int, reason: str | None) -> None:
    """A gzip record inflating past MAX_DECOMPRESSED_BYTES (2 MiB: twice a Kinesis record) is
    bad_gzip, so no 10 KB record can make a shard process decode megabytes of objects."""
    head, tail = b'{"properties": {"eventName": "e"}, "a": [', b"[]]}"
    units, rest = divmod(inflated - len(head) - len(tail), 3)
    data = head + b"[]," * units + b" " * rest + tail
    assert len(data) == inflated
    assert reason == reason_of(rules_of(), record_of(gzip.compress(data, mtime=0)))


class TestLastResortGuard:
    @pytest.mark.parametrize(
        "error",
        [
            KeyError("secret-payload-text"),  # a bug somewhere in mapping
            RecursionError("secret-payload-text"),  # a nesting hazard not yet known
            UnicodeError("secret-payload-text"),  # an encoding hazard not yet known
            OverflowError("secret-payload-text"),  # a numeric hazard not yet known
        ],
    )
    def test_unexpected_errors_become_unmappable(
        self, monkeypatch: pytest.MonkeyPatch, error: Exception
    ) -> None:
        """Any other Exception is unmappable; the detail names it but never quotes it."""

        def fail(_data: bytes) -> dict[str, Any]:
            raise error

        monkeypatch.setattr(mapping, "decode", fail)
        with pytest.raises(RecordError) as caught:
            Mapper(rules_of(), SHARD).map(record_of("{}"))
        assert caught.value.reason == "unmappable"
        assert caught.value.detail.startswith(type(error).__name__)
        assert "fail (test_mapping.py:" in caught.value.detail
        assert "secret" not in caught.value.detail

    @pytest.mark.parametrize(
        "error",
        [
            MemoryError(),  # the process's condition, not the record's: let KCL restart it
            KeyboardInterrupt(),  # not an Exception: never swallowed
            SystemExit(1),  # likewise
        ],
    )
    def test_process_conditions_propagate(
        self, monkeypatch: pytest.MonkeyPatch, error: BaseException
    ) -> None:
        """MemoryError and BaseExceptions are not turned into dead letters."""

        def fail(_data: bytes) -> dict[str, Any]:
            raise error

        monkeypatch.setattr(mapping, "decode", fail)
        with pytest.raises(type(error)):
            Mapper(rules_of(), SHARD).map(record_of("{}"))

    def test_every_reason_raised_is_registered(self) -> None:
        """Each RecordError reason written in mapping.py or capture_rules.py is in REASONS."""
        raised = set()
        for module in (mapping, capture_rules):
            tree = ast.parse(Path(str(module.__file__)).read_text(encoding="utf-8"))
            raised |= {
                node.args[0].value
                for node in ast.walk(tree)
                if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "RecordError"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            }
        assert {"too_deep", "number_out_of_range", "unmappable", "event_too_large"} <= raised
        assert raised <= REASONS


# --- Property tests ----------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text written verbatim by :func:`to_json`: literals json.dumps will not write."""

    text: str


# Every code point, lone surrogates included (st.characters() leaves out category Cs).
any_char = st.characters(exclude_categories=()) | st.characters(categories=["Cs"])
hostile_text = st.text(any_char, max_size=8) | st.sampled_from(
    [
        *["", " ", "\ud800", "\udfff", "\udc00\ud800", "\ud83d\ude00", "\x00", "\u2028", '"'],
        *["\\", " \t\n", "\u3000\u00a0", "\x1c", "$performance_event"],
    ]
)
odd_keys = hostile_text | st.sampled_from(
    ["", ".", "a.b", "a\\.b", "\\", "0", "distinct_id", "$cookieless_mode"]
)
raw_numbers = st.sampled_from(
    [
        "1e400",  # beyond a double: decodes to inf
        "-1e400",  # and to -inf
        "1e-400",  # underflows to 0.0, which is fine
        "-0",  # negative zero
        "NaN",  # not JSON
        "Infinity",  # not JSON
        "-Infinity",  # not JSON
        str(DOUBLE_OVERFLOW_INT),  # the first integer beyond a double
        "9" * 4301,  # past Python's integer digit limit
    ]
) | st.builds(
    lambda sign, digits: sign + "9" * digits,  # hundreds to thousands of digits
    st.sampled_from(["", "-"]),
    st.integers(min_value=300, max_value=5000),
)
timestamp_texts = st.one_of(
    st.datetimes(timezones=st.none() | st.just(UTC)).map(datetime.isoformat),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",  # year 0 in UTC
            "9999-12-31T23:59:59-23:59",  # year 10000 in UTC
            "0001-01-01T00:00:00",  # the first moment
            "9999-12-31T23:59:59.999999",  # the last
            "2024-05-01T12:00:00+02:00",  # an ordinary offset
            "1714557600123",  # epoch milliseconds as text
            "yesterday",  # not a time
        ]
    ),
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**65),  # around the u64/i64 edges
    st.integers(min_value=DOUBLE_OVERFLOW_INT - 2, max_value=DOUBLE_OVERFLOW_INT + 2),
    st.integers(min_value=-(2**1100), max_value=2**1100),  # beyond a double both ways
    st.floats(),  # NaN and infinities included: written as NaN/Infinity literals
    hostile_text,
    timestamp_texts,
    raw_numbers.map(Raw),
    st.integers(min_value=1, max_value=3000).map(lambda n: Raw(deep(n))),  # hundreds to 1000s
    st.integers(min_value=1, max_value=3000).map(lambda n: Raw(deep(n, kind="{"))),
)
hostile_values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(odd_keys, children, max_size=3)
    ),
    max_leaves=12,
)
# Event names: ordinary ones often enough that records get past the event name.
event_names = st.one_of(st.sampled_from(["signup", "0"]), hostile_text, hostile_values)
# Documents with values at every path the settings below read, so paths hit hostile values.
documents = st.builds(
    lambda extra, hits: {**extra, **hits},
    st.dictionaries(odd_keys, hostile_values, max_size=3),
    st.fixed_dictionaries(
        {
            "e": event_names,
            "n": st.fixed_dictionaries({"e": event_names}),
            "properties": st.fixed_dictionaries({"eventName": event_names}),
        },
        optional={
            "d": hostile_text | hostile_values,
            "t": timestamp_texts | hostile_values,
            "a": st.fixed_dictionaries({}, optional={"b": hostile_values}) | hostile_values,
            "c": st.lists(hostile_values, max_size=2) | hostile_values,
            "w.z": hostile_values,
        },
    ),
)
# Mostly objects: a top-level array or scalar stops at not_object.
any_documents = st.one_of(documents, documents, documents, hostile_values)
# Every combination of the settings that decide what a record becomes.
setting_overrides = st.fixed_dictionaries(
    {
        "eventKey": st.sampled_from(["e", "n.e", "properties.eventName"]),
        "additionalPropertyMappings": st.sampled_from(
            ["", "a.b:x, c.0:y, w\\.z:dot", "d:distinct_id", "t:t, a:a, c:c", "c:$cookieless_mode"]
        ),
        "distinctIdKey": st.sampled_from(["", "d", "a.b"]),
        "missingDistinctId": st.sampled_from(["partitionKey", "fixed", "deadLetter"]),
        "timestampKey": st.sampled_from(["", "t", "c.0"]),
        "includeAllProperties": st.sampled_from(["true", "false"]),
    }
).map(lambda overrides: rules_of(tuple(sorted(overrides.items()))))
# Everything of a record but its data: partition key, sequence, subsequence, arrival.
Envelope = tuple[str, str, int, int]
envelopes = st.tuples(
    # may hold a lone surrogate, or be blank
    st.text(any_char, min_size=1, max_size=4) | st.sampled_from(["pk-1", " ", "\u2003\t"]),
    st.from_regex(r"[0-9]{1,56}", fullmatch=True),
    st.integers(min_value=0, max_value=2**31),
    # From the epoch to the year 9999: arrival times are the stream's, not the record's.
    st.integers(min_value=0, max_value=253_402_300_799_999),
)


# Mostly escaped: raw lone surrogates only make invalid UTF-8 (not_utf8), while their
# \udXXX escapes are valid JSON and reach the mapping (the production record's form).
escaped = st.sampled_from([True, True, True, False])


def to_json(value: Any, *, ascii_only: bool) -> str:
    """JSON text of ``value`` as a hostile producer writes it.

    ``ascii_only`` writes lone surrogates as \\udXXX escapes (valid JSON, the hostile
    form); otherwise they stay raw, and the text is later encoded with surrogatepass.
    Floats keep NaN/Infinity literals; Raw text goes in as it is.
    """
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        items = (
            f"{to_json(k, ascii_only=ascii_only)}:{to_json(v, ascii_only=ascii_only)}"
            for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v, ascii_only=ascii_only) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only)
    return json.dumps(value)  # None, booleans, ints (all under 4300 digits), floats


def as_bytes(document: Any, *, ascii_only: bool, gzipped: bool) -> bytes:
    """Encode ``document`` to record bytes, optionally gzip-compressed."""
    data = to_json(document, ascii_only=ascii_only).encode("utf-8", "surrogatepass")
    return gzip.compress(data, mtime=0) if gzipped else data


PROPERTY_SETTINGS = hypothesis.settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY_SETTINGS
@given(data=st.binary(max_size=64), gzipped=st.booleans(), mapper_rules=setting_overrides)
def test_any_bytes_map_or_fail_with_a_reason(
    data: bytes, gzipped: bool, mapper_rules: MappingRules
) -> None:
    """Arbitrary bytes, plain or gzipped: an event capture can read, or a known reason."""
    payload = gzip.compress(data, mtime=0) if gzipped else data
    outcome(mapper_rules, record_of(payload))


@PROPERTY_SETTINGS
@given(
    document=any_documents,
    ascii_only=escaped,
    gzipped=st.booleans(),
    mapper_rules=setting_overrides,
    envelope=envelopes,
)
def test_hostile_json_maps_or_fails_with_a_reason(
    document: Any,
    ascii_only: bool,
    gzipped: bool,
    mapper_rules: MappingRules,
    envelope: Envelope,
) -> None:
    """Hostile JSON under every combination of settings: a readable event or a known reason."""
    data = as_bytes(document, ascii_only=ascii_only, gzipped=gzipped)
    outcome(mapper_rules, KinesisRecord(data, *envelope))


@PROPERTY_SETTINGS
@given(
    document=documents,
    ascii_only=escaped,
    mapper_rules=setting_overrides,
    envelope=envelopes,
)
def test_mapping_is_deterministic(
    document: Any, ascii_only: bool, mapper_rules: MappingRules, envelope: Envelope
) -> None:
    """The same record maps to the same bytes (or the same refusal), by any mapper."""
    record = KinesisRecord(as_bytes(document, ascii_only=ascii_only, gzipped=False), *envelope)
    first, second = outcome(mapper_rules, record), outcome(mapper_rules, record)
    if isinstance(first, RecordError):
        assert isinstance(second, RecordError)
        assert (first.reason, first.detail) == (second.reason, second.detail)
    else:
        assert first == second
