"""Record -> event: the seed's semantics, kept types, typed errors, deterministic identity.

And hostile records: whatever the bytes, mapping gives an event PostHog's capture can
read or a RecordError with a known reason, never anything that would end a shard.
Capture's per-event rules are tested in test_capture_rules.py, event times in
test_timestamps.py; the checks every mapped event must pass are in tests/support.py.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from datetime import UTC, datetime
from typing import Any, NoReturn

import hypothesis
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer import capture_rules, config, mapping, wiring
from consumer.capture_rules import DOUBLE_OVERFLOW_INT, MAX_EVENT_BYTES
from consumer.decoding import MAX_DECOMPRESSED_BYTES
from consumer.errors import RecordError
from consumer.mapping import REASONS, Mapper, MappingRules
from consumer.record import KinesisRecord, MappedEvent
from consumer.timestamps import format_timestamp
from tests.hostile import (
    PROPERTY_SETTINGS,
    Raw,
    any_char,
    hostile_text,
    json_module_only,
    raw_numbers,
    to_json,
)
from tests.support import (
    BASE_PROPERTIES,
    SHARD,
    RecordFactory,
    RulesFactory,
    deep,
    event_of,
    outcome,
    reason_of,
    record_of,
    rules_of,
    source_of,
)

SEED_RECORD = {"properties": {"eventName": "my posthog event", "userId": "$userId", "foo": "bar"}}


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

        def fail(_data: bytes) -> NoReturn:
            raise error

        # The mapper's first call out of the package: orjson reading the record
        # (decoding.read_plainly). Not a function of ours: compiled by mypyc, the package
        # calls its own functions directly, past any monkeypatch.
        monkeypatch.setattr(orjson, "loads", fail)
        with pytest.raises(RecordError) as caught:
            Mapper(rules_of(), SHARD).map(record_of("{}"))
        assert caught.value.reason == "unmappable"
        assert caught.value.detail.startswith(type(error).__name__)
        assert "fail (test_mapping.py:" in caught.value.detail
        assert "secret" not in caught.value.detail

    def test_an_error_inside_the_package_is_named_where_it_was_raised(self) -> None:
        """Raised in the mapping's own (compiled) code: the function and line, no record text.

        An arrival time beyond the year 9999 (Kinesis gives none) fails in arrival_time.
        """
        record = record_of(
            '{"properties": {"eventName": "secret-payload-text"}}', arrival_millis=10**15
        )
        with pytest.raises(RecordError) as caught:
            Mapper(rules_of(), SHARD).map(record)
        assert caught.value.reason == "unmappable"
        assert re.fullmatch(
            r"ValueError in arrival_time \(timestamps\.py:\d+\): unexpected error while "
            r"mapping; please report it",
            caught.value.detail,
        ), caught.value.detail

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

        def fail(_data: bytes) -> NoReturn:
            raise error

        monkeypatch.setattr(orjson, "loads", fail)  # as above
        with pytest.raises(type(error)):
            Mapper(rules_of(), SHARD).map(record_of("{}"))

    def test_every_reason_raised_is_registered(self) -> None:
        """Each RecordError reason written in mapping.py or capture_rules.py is in REASONS."""
        raised = set()
        for module in (mapping, capture_rules):
            tree = ast.parse(source_of(module).read_text(encoding="utf-8"))
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


odd_keys = hostile_text | st.sampled_from(
    ["", ".", "a.b", "a\\.b", "\\", "0", "distinct_id", "$cookieless_mode"]
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


def as_bytes(document: Any, *, ascii_only: bool, gzipped: bool) -> bytes:
    """Encode ``document`` to record bytes, optionally gzip-compressed."""
    data = to_json(document, ascii_only=ascii_only).encode("utf-8", "surrogatepass")
    return gzip.compress(data, mtime=0) if gzipped else data


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


def same_outcome(first: MappedEvent | RecordError, second: MappedEvent | RecordError) -> None:
    if isinstance(first, RecordError):
        assert isinstance(second, RecordError), second
        assert (first.reason, first.detail) == (second.reason, second.detail)
    else:
        assert first == second  # uuid and payload, byte for byte


@PROPERTY_SETTINGS
@given(
    document=any_documents,
    ascii_only=escaped,
    gzipped=st.booleans(),
    mapper_rules=setting_overrides,
    envelope=envelopes,
)
def test_events_are_the_json_modules_bytes(
    document: Any,
    ascii_only: bool,
    gzipped: bool,
    mapper_rules: MappingRules,
    envelope: Envelope,
) -> None:
    """Hostile JSON under every setting: the same event bytes (or refusal) as with json alone."""
    record = KinesisRecord(as_bytes(document, ascii_only=ascii_only, gzipped=gzipped), *envelope)
    fast = outcome(mapper_rules, record)
    with json_module_only():
        slow = outcome(mapper_rules, record)
    same_outcome(fast, slow)


# Values where the mapper's reading by values (decoding.read_plainly) must step aside:
# integers orjson reads as floats, floats near 2**63 and below 1e-4, and containers.
EDGE_LITERALS = (
    "9223372036854775807",  # i64 max: an int either way
    "9223372036854775808",  # 2**63: an int in json and orjson (u64)
    "18446744073709551616",  # 2**64: a float in orjson
    "-9223372036854775809",  # below i64: orjson's float is exactly -2**63
    "9.223372036854776e18",  # a float at 2**63
    "9.2e18",  # a float just below it
    "1e19",  # a float above it
    "1e-4",  # the smallest float that needs no check
    "9.9e-5",  # a small float
    "0.0",  # zero
    "-0.0",  # negative zero
    "5e-324",  # the smallest subnormal
    '"1234567890123456789"',  # 19 digits in a string
    '"x"',  # text
    "true",  # a boolean
    "null",  # null
)
edge_literals = st.sampled_from(EDGE_LITERALS)
edge_values = st.one_of(
    edge_literals,
    edge_literals.map(lambda text: "[" + text + "]"),  # in an array
    edge_literals.map(lambda text: '{"k":' + text + "}"),  # in an object
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr).filter(lambda t: "inf" not in t),
    st.integers(min_value=1, max_value=4).map(lambda n: "[" * n + "1.5" + "]" * n),
)
# Around 2 * FAST_MAX_BRACKETS bytes, with brackets in strings or in nesting.
edge_padding = st.one_of(
    st.just('""'),
    st.integers(min_value=0, max_value=700).map(lambda n: '"' + "x" * n + '"'),
    st.integers(min_value=200, max_value=300).map(lambda n: '"' + "[" * n + '"'),
    st.integers(min_value=200, max_value=300).map(deep),
    st.sampled_from([980, 1000, 1030]).map(deep),  # where json, then orjson, gives up
    st.just('"' + "7" * 19 + '"'),  # a long digit run elsewhere in the record
)


def by_values_against_json(values: dict[str, str], *, distinct_by_key: bool = True) -> None:
    """Map a record of these JSON texts both ways; the outcomes must be the same.

    ``values``: "e" (event name), "d" (distinct id), "t" (time), "a" and "b" (mapped
    properties), "pad" (a value nothing takes).
    """
    overrides = {
        "eventKey": "e",
        "timestampKey": "t",
        "additionalPropertyMappings": "p.a:a, p.b:b"
        + ("" if distinct_by_key else ", d:distinct_id"),
        "distinctIdKey": "d" if distinct_by_key else "",
        "missingDistinctId": "fixed",
        "includeAllProperties": "false",
    }
    rules = rules_of(tuple(sorted(overrides.items())))
    text = (
        f'{{"e":{values["e"]},"d":{values["d"]},"t":{values["t"]},'
        f'"p":{{"a":{values["a"]},"b":{values["b"]}}},"pad":{values["pad"]}}}'
    )
    record = record_of(text)
    fast = outcome(rules, record)
    with json_module_only():
        slow = outcome(rules, record)
    same_outcome(fast, slow)


@hypothesis.settings(PROPERTY_SETTINGS, max_examples=1000)
@given(
    values=st.fixed_dictionaries(
        {
            "e": edge_values,
            "d": edge_values,
            "t": edge_values,
            "a": edge_values,
            "b": edge_values,
            "pad": edge_padding,
        }
    ),
    distinct_by_key=st.booleans(),
)
def test_reading_by_values_gives_the_json_modules_events(
    values: dict[str, str], distinct_by_key: bool
) -> None:
    """Without includeAllProperties the mapper looks at the values it takes, not the text.

    At every edge where orjson's reading of a value is not json's, or a value needs
    capture_rules.check_sendable, the events (or refusals) are those of json alone.
    """
    by_values_against_json(values, distinct_by_key=distinct_by_key)


@pytest.mark.parametrize(
    ("a", "b", "pad"),
    [
        ("18446744073709551616", "1", '""'),  # 2**64 mapped: orjson's float is not json's int
        ("-9223372036854775809", "1", '""'),  # below i64: orjson's -2**63 float
        ('{"k":18446744073709551616}', "1", '""'),  # 2**64 inside a mapped object
        ("[18446744073709551616]", "1", '""'),  # and inside a mapped array
        ("[9.9e-5]", "1", '""'),  # a small float in an array: checked, written as json does
        ("[1.5]", '"' + "7" * 19 + '"', '""'),  # a container, and a 19-digit run in text
        ("[1.5]", "1", '""'),  # a container, no digit run: checked, read once
        ("9.9e-5", "1", '""'),  # a small float: written as json writes it
        ("1", "2", '"' + "[" * 300 + '"'),  # under 512 bytes, 300 brackets in a string
        ("1", "2", deep(1000)),  # nesting json cannot read, orjson can: refused, as json
        ("1", "2", deep(300)),  # nesting both read, over 512 bytes: counted, same event
    ],
)
def test_reading_by_values_edges(a: str, b: str, pad: str) -> None:
    """The edges of decoding.read_plainly and plain_values, each once for certain."""
    by_values_against_json(
        {"e": '"signup"', "d": '"user-1"', "t": "1700000000", "a": a, "b": b, "pad": pad}
    )


@pytest.mark.parametrize(
    "value",
    [
        "18446744073709551616",  # 2**64: orjson's float, json's exact integer
        "-9223372036854775809",  # below i64: orjson's -2**63 float
        "[18446744073709551616]",  # in an array
        '{"k":1}',  # an object
        "9.9e-5",  # a small float
    ],
)
@pytest.mark.parametrize(
    ("where", "distinct_by_key"),
    [
        ("e", True),  # the event name: a number becomes its text
        ("d", True),  # the distinct id, by distinctIdKey: likewise
        ("d", False),  # the distinct id, by a mapping to distinct_id
        ("t", True),  # the event time
    ],
)
def test_reading_by_values_checks_each_value_taken(
    value: str, where: str, distinct_by_key: bool
) -> None:
    """Every value the mapper takes is looked at, not only the mapped properties."""
    values = {"e": '"signup"', "d": '"user-1"', "t": "1700000000", "a": "1", "b": "2", "pad": '""'}
    by_values_against_json({**values, where: value}, distinct_by_key=distinct_by_key)


def has_small_float(value: Any) -> bool:
    if isinstance(value, dict):
        return any(has_small_float(item) for item in value.values())
    if isinstance(value, list):
        return any(has_small_float(item) for item in value)
    return isinstance(value, float) and 0 < abs(value) < capture_rules.SMALL_FLOAT_LIMIT


finite_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-1e-3, max_value=1e-3)
    | st.text(any_char, max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(any_char, max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)


@PROPERTY_SETTINGS
@given(properties=st.dictionaries(st.text(any_char, max_size=6), finite_values, max_size=6))
def test_encode_event_writes_json_dumps_bytes(properties: dict[str, Any]) -> None:
    """orjson's bytes, where used, are json.dumps's: floats of every size, 64-bit edges, surrogates."""
    event = {"event": "e", "distinct_id": "d", "properties": properties, "uuid": "u"}
    legacy = capture_rules.utf8_as_captured(
        json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    )
    assert mapping.encode_event(event, small_floats=has_small_float(event)) == legacy
    assert capture_rules.check_sendable(properties).small_floats == has_small_float(properties)


@pytest.mark.parametrize(
    ("value", "small"),
    [(1e-05, True), (1.5e-07, True), (-9.9e-05, True), (5e-324, True), (1e-4, False), (0.0, False)],
)
def test_small_floats_are_found(value: float, small: bool) -> None:
    """The floats json.dumps writes with an exponent below 1e-4 are the ones flagged."""
    assert capture_rules.check_sendable({"n": [value]}).small_floats is small


@PROPERTY_SETTINGS
@given(
    moment=st.datetimes(timezones=st.none() | st.just(UTC) | st.timezones()),
)
def test_format_timestamp_as_before(moment: datetime) -> None:
    """Skipping astimezone for UTC moments writes the same text as converting every moment."""
    try:
        before = moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, ValueError):
        return  # a moment outside years 1-9999 in UTC: parse_timestamp never returns one
    assert format_timestamp(moment) == before


@pytest.mark.parametrize(
    "value",
    [
        1e16,  # orjson before 3.12 wrote 1e16, json 1e+16: why orjson is pinned exactly
        1e22,  # likewise, further out
        -0.0,  # the sign of zero
        1.7976931348623157e308,  # the largest double
        5e-324,  # the smallest subnormal (a small float: the json path)
        2**64 - 1,  # the largest integer orjson writes itself
        0.1 + 0.2,  # shortest round-trip digits
    ],
)
def test_the_pinned_orjson_writes_jsons_bytes_for_edge_numbers(value: Any) -> None:
    event = {"event": "e", "properties": {"n": value}}
    small = isinstance(value, float) and 0 < abs(value) < 1e-4
    expected = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    assert mapping.encode_event(event, small_floats=small) == expected
