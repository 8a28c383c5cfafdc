"""What PostHog's capture refuses, checked per event before it joins a batch.

capture judges a ``/batch/`` request as a whole: one event it refuses fails the batch
(a 400, or a 413 for size), and each such refusal costs delivery a bisection. So every
rule capture applies to a single event is applied here first, and an event that breaks
one becomes a :class:`~consumer.errors.RecordError` (dead-lettered with its reason)
instead. The rules, each with where capture (rust/capture, rust/common) applies it:

* nesting no deeper than its serde_json parser reads (:data:`MAX_EVENT_DEPTH`);
* no number beyond a double (:data:`DOUBLE_OVERFLOW_INT`, non-finite floats);
* an event name that is not blank and not one capture filters out;
* a distinct id that is not blank as Rust trims (:data:`RUST_WHITESPACE`);
* a boolean ``$cookieless_mode``, if there is one;
* a Kafka message, as capture builds it from the event, within :data:`MAX_EVENT_BYTES`
  (:func:`captured_message_bytes`);
* text as capture stores it: lone surrogates become U+FFFD (:func:`utf8_as_captured`).

Only the record's values are inspected; nothing here knows settings or Kinesis.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NamedTuple

import orjson

from consumer import paths
from consumer.errors import RecordError

# PostHog's capture refuses (EventTooBig, 413) an event whose Kafka message is over
# librdkafka's message.max.bytes: kafka_producer_message_max_bytes, 1,000,000 by default
# (rust/capture/src/config.rs). posthog-python keeps each event under 900 KiB to leave
# room; we keep the Kafka message capture builds from the event (captured_message_bytes)
# under the same 900 KiB, which leaves 78,400 bytes of margin.
MAX_EVENT_BYTES = 900 * 1024

# PostHog's capture (rust/capture) parses request bodies with serde_json, default
# features: its Deserializer starts with remaining_depth = 128 and fails when that
# reaches 0, so at most 127 arrays/objects can be open at once, counted from the top
# of the body. Our /batch/ body (consumer.batching) opens two before any event: the
# body object and its "batch" array. Deeper events would fail the whole batch with a
# 400; refusing them here also keeps json.dumps far from Python's recursion limit.
SERDE_JSON_RECURSION_LIMIT = 128
BATCH_ENVELOPE_DEPTH = 2
MAX_EVENT_DEPTH = SERDE_JSON_RECURSION_LIMIT - 1 - BATCH_ENVELOPE_DEPTH
# Containers above a property value inside an event: the event object and "properties".
_PROPERTIES_DEPTH = 2
# A record whose JSON text holds at most this many '[' and '{' (in strings too) nests no
# property deeper than MAX_EVENT_DEPTH, however it is mapped: its top object becomes
# "properties" or a value below it, and each container it holds is one level more.
PLAIN_MAX_CONTAINERS: int = MAX_EVENT_DEPTH - _PROPERTIES_DEPTH + 1
# serde_json (without arbitrary_precision) reads integers beyond u64/i64 as doubles and
# refuses, as "number out of range", any number that rounds to infinity. 2**1024 - 2**970
# is the smallest integer that rounds to infinity as an IEEE 754 double (half-way
# between the largest double and 2**1024, rounded to even); float() raises there too.
DOUBLE_OVERFLOW_INT = 2**1024 - 2**970

# Any surrogate left in a decoded str is a lone one: json.loads joins proper pairs.
_LONE_SURROGATE = re.compile(f"[{chr(0xD800)}-{chr(0xDFFF)}]")
REPLACEMENT_CHARACTER = "\ufffd"

# The distinct id as capture reads it (RawEvent::extract_distinct_id_checked in
# rust/common/types/src/event.rs): NUL becomes U+FFFD, an id that is empty once trimmed
# is MissingDistinctId (400), and an id is sent on as it is (surrounding whitespace kept)
# but cut to 200 characters (chars) for the Kafka key, headers and person. The trim is
# Rust's str::trim, which strips Unicode White_Space (char::is_whitespace); Python's
# str.strip() would also strip U+001C..U+001F, which capture keeps.
RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
CAPTURE_DISTINCT_ID_MAX_CHARS = 200
# RawEvent::extract_is_cookieless_mode (rust/common/types/src/event.rs): a
# $cookieless_mode property that is present (null included) and not a boolean makes
# capture refuse the event with InvalidCookielessMode (400).
COOKIELESS_MODE_PROPERTY = "$cookieless_mode"
# RawRequest::events (rust/capture/src/v0_request.rs) drops every event with this name
# and answers 400 (EmptyPayloadFiltered) to a request left with none, so such an event
# is dropped in a batch and refused alone.
CAPTURE_FILTERED_EVENT_NAMES = frozenset({"$performance_event"})

# What capture measures against its Kafka limit, beyond our own encoding (see
# captured_message_bytes): process_single_event (rust/capture/src/events/analytics.rs)
# re-serialises the event with serde_json into the `data` string of a CapturedEvent
# (rust/common/types/src/event.rs), the sink serialises that to JSON (every '"' and '\\'
# of the event escaped once more), keys the message by "token:distinct_id" and adds
# headers (event name, distinct id, token, uuid, timestamps), and librdkafka counts value
# + key + headers + RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD (36 bytes). This bounds all of it
# but `data`, the event name and the distinct id: field names and punctuation (~150),
# uuid, ip (<= 45), now, sent_at, timestamp (~35 each), the token (<= 64 bytes, three
# times, escaped), header names and varints (~200), librdkafka's 36: about 1.2 KB.
CAPTURED_EVENT_FIXED_BYTES = 4096
# The longest payload captured_message_bytes_bound keeps within MAX_EVENT_BYTES with no
# number growth: 4L + 2 + fixed <= limit (about 225 KB).
_SURELY_WITHIN_BYTES = (MAX_EVENT_BYTES - 2 - CAPTURED_EVENT_FIXED_BYTES) // 4
# serde_json writes floats with ryu, which writes 1e-5 <= |x| < 1e-4 in positional form
# ("0.00001") where Python's repr writes "1e-05": the only range where ryu's text is
# longer (ryu is positional for decimal exponents -5..15, Python for -4..15, and ryu's
# exponents have no "+" and no leading zero).
_FLOAT_GROWTH_LOW, _FLOAT_GROWTH_HIGH = 1e-5, 1e-4
# Below this (and not 0), Python's repr writes a float with an exponent ("1e-05",
# "1.5e-07"), and other writers differently ("0.00001", "1.5e-7"): see SendableNumbers.
SMALL_FLOAT_LIMIT: float = _FLOAT_GROWTH_HIGH
_PYTHON_EXPONENT_OF_RYU_POSITIONAL = "e-05"
# serde_json reads integers outside i64/u64 as doubles and writes them with ryu: at most a
# sign, 17 significant digits, ".", "e" and the exponent.
_I64_MIN = -(2**63)
_U64_LIMIT = 2**64
_DOUBLE_SIGNIFICANT_DIGITS = 17


def event_name(value: Any, where: str) -> str:
    """The event name found at ``where``, as sent; RecordError if capture would refuse it."""
    if value is paths.MISSING or value is None:
        raise RecordError("missing_event", f"no value at {where}")
    if isinstance(value, str):
        if not value.strip():
            raise RecordError("invalid_event", f"event name at {where} is blank")
        if value in CAPTURE_FILTERED_EVENT_NAMES:
            raise RecordError(
                "invalid_event",
                f"event name at {where} is {value}, which PostHog's capture drops from a batch "
                "and refuses (400) alone",
            )
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(value, f"event name at {where}")
        return str(value)
    raise RecordError("invalid_event", f"event name at {where} is {json_type(value)}, not a string")


def distinct_id_value(value: Any, where: str) -> str | None:
    """The id at ``where`` as sent, or None when capture would find none (absent, null, blank)."""
    if value is paths.MISSING or value is None:
        return None
    if isinstance(value, str):
        return None if is_blank_id(value) else value
    if isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(value, f"distinct id at {where}")
        return str(value)
    raise RecordError("invalid_distinct_id", f"distinct id at {where} is {json_type(value)}")


def is_blank_id(text: str) -> bool:
    """Whether capture finds no distinct id in ``text``: empty once trimmed as Rust trims."""
    return not text.strip(RUST_WHITESPACE)


def check_cookieless_mode(properties: dict[str, Any]) -> None:
    """Refuse a ``$cookieless_mode`` property that is there and not a boolean, as capture does."""
    if COOKIELESS_MODE_PROPERTY in properties:
        value = properties[COOKIELESS_MODE_PROPERTY]
        if type(value) is not bool:
            raise RecordError(
                "invalid_property",
                f"property {COOKIELESS_MODE_PROPERTY} is {json_type(value)}, not a boolean; "
                "PostHog's capture refuses such an event (InvalidCookielessMode)",
            )


class SendableNumbers(NamedTuple):
    """What :func:`check_sendable` saw of the numbers it let through."""

    growth: int
    """At most how many bytes more serde_json writes for them than json.dumps does."""
    small_floats: bool
    """Whether one is a float with 0 < abs(x) < 1e-4: JSON writers spell those differently
    (json.dumps ``1e-05``, serde_json and orjson ``0.00001``; :mod:`consumer.mapping`)."""


# What check_sendable returns for properties with no number to adjust or refuse.
NOTHING_TO_ADJUST = SendableNumbers(growth=0, small_floats=False)


def check_sendable(properties: dict[str, Any]) -> SendableNumbers:
    """Refuse properties PostHog's capture cannot parse: too deep, or numbers beyond a double.

    Only what is sent is checked: a deep or huge value elsewhere in the record does not
    matter. One level at a time rather than recursively, so that the check itself cannot
    meet the recursion limit; plain loops, as this visits every value of every event.
    Returns how many bytes more serde_json writes for the numbers than json.dumps does
    (at most), for :func:`captured_message_bytes`, and whether any float is small
    enough to be written with an exponent.
    """
    # Depth as capture counts it, the event object being level 1 and "properties" level 2.
    depth = _PROPERTIES_DEPTH
    growth = 0
    small_floats = False
    level: list[Any] = [properties]
    while level:
        if depth > MAX_EVENT_DEPTH:
            raise RecordError(
                "too_deep",
                f"a property nests arrays/objects deeper than PostHog's capture reads "
                f"({MAX_EVENT_DEPTH} levels per event)",
            )
        below: list[Any] = []
        for container in level:
            for value in container.values() if type(container) is dict else container:
                kind = type(value)
                if kind is dict or kind is list:
                    below.append(value)
                elif kind is int:
                    if not _I64_MIN <= value < _U64_LIMIT:  # else within everything, as is
                        growth += _sendable_number_growth(value)
                elif kind is float:
                    magnitude = abs(value)
                    if not SMALL_FLOAT_LIMIT <= magnitude < math.inf:  # else fine, as is
                        growth += _sendable_number_growth(value)  # refuses NaN, infinities
                        small_floats = small_floats or magnitude > 0
        level = below
        depth += 1
    return SendableNumbers(growth, small_floats)


def utf8_as_captured(text: str) -> bytes:
    r"""``text`` as UTF-8, each lone surrogate replaced by U+FFFD, as capture stores it.

    A JSON escape such as \ud800 that is not half of a pair decodes to a lone surrogate,
    which UTF-8 cannot hold. PostHog's capture rewrites each such escape to U+FFFD before
    parsing (rust/capture/src/passes/invalid_surrogates.rs), so we send what PostHog
    would store, and the batch is not refused meanwhile.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub(REPLACEMENT_CHARACTER, text).encode("utf-8")


def surely_within_size(payload: bytes) -> bool:
    """Whether an event the mapper encoded, with no number growth, is surely within the limit.

    What :func:`check_size` finds first for every event but those of hundreds of
    kilobytes, without a call per event: its bound, solved for the payload's length.
    """
    return len(payload) <= _SURELY_WITHIN_BYTES


def check_size(payload: bytes, *, event_name: str, distinct_id: str, number_growth: int) -> None:
    """Refuse an event whose Kafka message, as capture measures it, is over the limit.

    Measured only when :func:`captured_message_bytes_bound` does not already show that
    it is within (every event but those of hundreds of kilobytes).
    """
    if captured_message_bytes_bound(payload, number_growth) <= MAX_EVENT_BYTES:
        return
    measured = captured_message_bytes(
        payload, event_name=event_name, distinct_id=distinct_id, number_growth=number_growth
    )
    if measured > MAX_EVENT_BYTES:
        raise RecordError(
            "event_too_large",
            f"event is {len(payload)} bytes, {measured} as PostHog's capture measures it "
            f"(escaped again inside its Kafka message); the limit is {MAX_EVENT_BYTES}",
        )


def captured_message_bytes(
    payload: bytes, *, event_name: str, distinct_id: str, number_growth: int = 0
) -> int:
    r"""The size PostHog's capture gives the Kafka message of this event, at most.

    ``payload`` is the event's compact JSON (ours: no raw control characters, as
    json.dumps escapes them). serde_json writes it back with the same string escapes
    and ``number_growth`` more bytes of numbers (see :func:`check_sendable`); as the
    ``data`` string of a CapturedEvent each ``"`` and ``\`` of it gains a backslash. The
    event name is in the message twice more (a field, escaped, and a header, raw), the
    distinct id three times (a field, the key and a header), cut to 200 characters.
    Everything else is within :data:`CAPTURED_EVENT_FIXED_BYTES`.
    """
    data = len(payload) + number_growth
    data_field = data + payload.count(b'"') + payload.count(b"\\") + 2
    name_raw = len(event_name.encode("utf-8", "surrogatepass"))
    name_field = _json_string_bytes(event_name)
    captured_id = distinct_id.replace("\0", REPLACEMENT_CHARACTER)[:CAPTURE_DISTINCT_ID_MAX_CHARS]
    id_raw = len(captured_id.encode("utf-8", "surrogatepass"))
    id_field = _json_string_bytes(captured_id)
    return data_field + name_field + name_raw + id_field + 2 * id_raw + CAPTURED_EVENT_FIXED_BYTES


def captured_message_bytes_bound(payload: bytes, number_growth: int) -> int:
    """At least :func:`captured_message_bytes` of ``payload``, an event as the mapper encodes it.

    Such a payload holds the event's name once and its distinct id twice (``distinct_id``
    and ``properties.distinct_id``), as JSON strings of n and d bytes: n + 2d <= its
    length L. capture's ``data`` with its escapes is at most 2L plus the growth and 2
    quotes; the name's field and raw text are at most n each; the id, cut to 200
    characters (a NUL becoming U+FFFD, no longer escaped), at most d in its field and
    each raw copy. So the message is at most 2L + 2n + 3d + the fixed part <= 4L + ...
    """
    return 4 * len(payload) + number_growth + 2 + CAPTURED_EVENT_FIXED_BYTES


def json_type(value: Any) -> str:
    """How a refusal names ``value``'s JSON type ("an object", "a boolean", ...)."""
    names = {bool: "a boolean", dict: "an object", list: "an array"}
    return names.get(type(value), type(value).__name__)


def _json_string_bytes(text: str) -> int:
    r"""Bytes of ``text`` as a JSON string; serde_json escapes exactly as json.dumps does here.

    orjson escapes every character exactly as json.dumps(ensure_ascii=False) does (the
    same six short escapes, ``\\u00XX`` for the other control characters, nothing else;
    tests/test_capture_rules.py checks every code point), and is several times faster;
    it refuses a lone surrogate, which json.dumps measures.
    """
    try:
        return len(orjson.dumps(text))
    except orjson.JSONEncodeError:
        # A lone surrogate takes 3 bytes either way: as surrogatepass, or as the U+FFFD we send.
        return len(json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _sendable_number_growth(value: int | float) -> int:  # noqa: PYI041 - see below
    """Refuse a number capture cannot read; else how many more bytes serde_json writes for it.

    ``int | float``, not ``float`` (which means the same to mypy): compiled by mypyc, a
    ``float`` parameter converts an int on the way in, and an integer beyond a double
    would raise OverflowError there instead of being refused here.
    """
    if type(value) is int:
        if not -DOUBLE_OVERFLOW_INT < value < DOUBLE_OVERFLOW_INT:
            raise RecordError(
                "number_out_of_range",
                "a property holds an integer beyond a double (±1.8e308), "
                "which PostHog's capture refuses",
            )
        return _int_growth(value)
    if not math.isfinite(value):
        raise RecordError(
            "number_out_of_range",
            "a property holds a number beyond a double (±1.8e308, such as "
            "1e400), which PostHog's capture refuses",
        )
    if _FLOAT_GROWTH_LOW <= abs(value) < _FLOAT_GROWTH_HIGH:
        return _float_growth(value)
    return 0


def _float_growth(value: float) -> int:
    """How many more bytes serde_json (ryu) writes for ``value`` than Python's repr."""
    text = repr(value)
    if not text.endswith(_PYTHON_EXPONENT_OF_RYU_POSITIONAL):
        return 0
    # "1e-05" -> "0.00001" (+2), "1.5e-05" -> "0.000015" (+1)
    return 1 if "." in text else 2


def _int_growth(value: int) -> int:
    """At most how many more bytes serde_json writes for ``value`` than Python does.

    ``value`` is within a double's range (checked before).
    """
    if _I64_MIN <= value < _U64_LIMIT:
        return 0
    digits = len(str(abs(value)))
    # A double's shortest form: 17 digits, ".", "e", and an exponent of at most len(digits)
    # digits (rounding may carry into one more power of ten).
    longest = _DOUBLE_SIGNIFICANT_DIGITS + 2 + len(str(digits))
    return max(0, longest - digits)


def _check_number(value: int | float, what: str) -> None:  # noqa: PYI041 - as above
    """Refuse a float the decoder made infinite (a literal such as 1e400 overflows).

    Integers are fine here: as names and ids they travel as text.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError("number_out_of_range", f"{what} is beyond a double (±1.8e308)")
