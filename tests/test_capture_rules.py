"""Capture's per-event rules (consumer/capture_rules.py), met through Mapper.

Hostile records that once ended a shard process, and events whose size capture measures
otherwise than we encode them: each maps to an event capture reads, or to a RecordError
with its reason.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer import capture_rules
from consumer.capture_rules import (
    CAPTURED_EVENT_FIXED_BYTES,
    DOUBLE_OVERFLOW_INT,
    MAX_EVENT_BYTES,
    MAX_EVENT_DEPTH,
)
from consumer.errors import RecordError
from consumer.mapping import Mapper
from consumer.record import KinesisRecord, MappedEvent
from tests.support import (
    SHARD,
    deep,
    outcome,
    reason_of,
    record_of,
    rules_of,
    standin_measure,
)

# The seed README's configuration: properties.foo is forwarded, properties.userId is the id.
SEED_MAPPINGS = "properties.userId:distinct_id,properties.foo:foo"
# includeAllProperties: the record's own keys become properties.
ALL = {"includeAllProperties": "true"}


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


def test_string_sizes_are_json_dumps_sizes_for_every_character() -> None:
    """orjson measures every character (lone surrogates: json.dumps does) as json.dumps writes it."""
    for start in range(0, 0x110000, 0x1000):
        text = "".join(chr(code) for code in range(start, start + 0x1000))
        expected = len(json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        assert capture_rules._json_string_bytes(text) == expected, hex(start)
        for code in range(start, start + 0x1000, 0x101):  # and alone, quoted by orjson
            single = json.dumps(chr(code), ensure_ascii=False).encode("utf-8", "surrogatepass")
            assert capture_rules._json_string_bytes(chr(code)) == len(single)


any_text = st.text(st.characters(exclude_categories=()) | st.characters(categories=["Cs"]))


@settings(max_examples=300, deadline=None)
@given(
    name=any_text,
    distinct_id=any_text,
    properties=st.dictionaries(
        st.text(max_size=4),
        st.text(max_size=50) | st.integers(min_value=-(2**80), max_value=2**80) | st.floats(),
        max_size=5,
    ),
    growth=st.integers(min_value=0, max_value=100),
)
def test_the_size_bound_is_never_below_the_measure(
    name: str, distinct_id: str, properties: dict[str, Any], growth: int
) -> None:
    """check_size skips measuring only events the bound shows within: it never undercounts."""
    # As the mapper makes it: the id is a property too.
    event = {
        "event": name,
        "distinct_id": distinct_id,
        "properties": {**properties, "distinct_id": distinct_id},
    }
    text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    payload = capture_rules.utf8_as_captured(text)
    exact = capture_rules.captured_message_bytes(
        payload, event_name=name, distinct_id=distinct_id, number_growth=growth
    )
    assert capture_rules.captured_message_bytes_bound(payload, growth) >= exact


@pytest.mark.parametrize(
    ("name", "distinct_id", "value"),
    [
        ('"' * 50_000, "u", "x"),  # a name of quotes: escaped in the payload, again in capture's
        ("\\" * 50_000, "u", "x"),  # of backslashes
        ("\x01" * 20_000, "u", "x"),  # of control characters (6 bytes each, escaped)
        ("n", "\x00" * 200, "x"),  # the longest id capture keeps, each character escaped
        ("n", "\U0001f600" * 300, "x"),  # 4-byte characters
        ("n", "u", '"' * 100_000),  # a property of quotes
    ],
)
def test_the_size_bound_holds_for_extreme_events(name: str, distinct_id: str, value: str) -> None:
    """The bound's terms, each at its worst: still at least the measure."""
    properties = {"v": value, "distinct_id": distinct_id}
    event = {"event": name, "distinct_id": distinct_id, "properties": properties}
    payload = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    exact = capture_rules.captured_message_bytes(payload, event_name=name, distinct_id=distinct_id)
    assert capture_rules.captured_message_bytes_bound(payload, 0) >= exact
