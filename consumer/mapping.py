"""Record -> PostHog event: decode, map, and derive identity from the record alone.

Promises:

* The event's ``uuid`` is a UUIDv5 of (stream, shard, sequence number, subsequence
  number) and its ``timestamp`` comes from the record (``timestampKey``) or its
  approximate arrival time, never from the clock. A replay therefore produces the
  same event byte for byte, and PostHog collapses it into the original.
* Every input yields either a :class:`MappedEvent` or a :class:`RecordError` whose
  ``reason`` is one of :data:`REASONS`; nothing else escapes but ``MemoryError`` and
  what is not an ``Exception`` (``KeyboardInterrupt``, ``SystemExit``). Known hazards
  are refused with their own reason; anything else that goes wrong while mapping one
  record becomes ``unmappable``, so no record can stop a shard.
* An event is produced only if PostHog's capture accepts it: valid UTF-8, no number
  beyond a double, nested no deeper than capture's JSON parser allows, a distinct id
  that is not blank, a boolean ``$cookieless_mode`` if any, a name capture does not
  filter out, and within its size limit as capture measures it (see
  :func:`captured_message_bytes`). Anything else would only be refused later, with a
  whole batch, and each such refusal costs a bisection.
"""

from __future__ import annotations

import json
import math
import re
import sys
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumer import paths
from consumer.config import MissingDistinctId, Settings
from consumer.errors import RecordError

# A fixed namespace makes uuids stable across versions and machines. Never change it:
# doing so would turn every replay after an upgrade into a duplicate.
UUID_NAMESPACE = uuid.UUID("6f1c7a2e-4b8d-5e0a-9c3f-2d7b1e8a4c60")
# PostHog's capture refuses (EventTooBig, 413) an event whose Kafka message is over
# librdkafka's message.max.bytes: kafka_producer_message_max_bytes, 1,000,000 by default
# (rust/capture/src/config.rs). posthog-python keeps each event under 900 KiB to leave
# room; we keep the Kafka message capture builds from the event (captured_message_bytes)
# under the same 900 KiB, which leaves 78,400 bytes of margin.
MAX_EVENT_BYTES = 900 * 1024
# A gzip record may not inflate past this; guards against decompression bombs. A Kinesis
# record is at most 1 MiB and an event at most MAX_EVENT_BYTES, so a record that inflates
# past twice the larger is no event we could send. At some 27 bytes of Python objects per
# byte of JSON (see Mapper.map), 2 MiB of "[],[],..." costs about 55 MB to decode.
MAX_DECOMPRESSED_BYTES = 2 * 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
# Epoch numbers at or above this are milliseconds (1e11 s is the year 5138).
EPOCH_MILLIS_THRESHOLD = 1e11
LIB_NAME = "kinesis-posthog"

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
# serde_json (without arbitrary_precision) reads integers beyond u64/i64 as doubles and
# refuses, as "number out of range", any number that rounds to infinity. 2**1024 - 2**970
# is the smallest integer that rounds to infinity as an IEEE 754 double (half-way
# between the largest double and 2**1024, rounded to even); float() raises there too.
DOUBLE_OVERFLOW_INT = 2**1024 - 2**970

# Any surrogate left in a decoded str is a lone one: json.loads joins proper pairs.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
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
# serde_json writes floats with ryu, which writes 1e-5 <= |x| < 1e-4 in positional form
# ("0.00001") where Python's repr writes "1e-05": the only range where ryu's text is
# longer (ryu is positional for decimal exponents -5..15, Python for -4..15, and ryu's
# exponents have no "+" and no leading zero).
_FLOAT_GROWTH_LOW, _FLOAT_GROWTH_HIGH = 1e-5, 1e-4
_PYTHON_EXPONENT_OF_RYU_POSITIONAL = "e-05"
# serde_json reads integers outside i64/u64 as doubles and writes them with ryu: at most a
# sign, 17 significant digits, ".", "e" and the exponent.
_I64_MIN = -(2**63)
_U64_LIMIT = 2**64
_DOUBLE_SIGNIFICANT_DIGITS = 17

REASONS = frozenset(
    {
        "not_utf8",
        "not_json",
        "not_object",
        "bad_gzip",
        "missing_event",
        "invalid_event",
        "missing_distinct_id",
        "invalid_distinct_id",
        "invalid_property",
        "event_too_large",
        "too_deep",
        "number_out_of_range",
        "unmappable",
        "rejected_by_posthog",
    }
)


@dataclass(frozen=True, slots=True)
class KinesisRecord:
    """The parts of a Kinesis record we use, independent of amazon-kclpy's classes."""

    data: bytes
    partition_key: str
    sequence_number: str
    sub_sequence_number: int
    arrival_millis: int


@dataclass(frozen=True, slots=True)
class MappedEvent:
    """One event ready for a batch: its uuid and its compact JSON encoding."""

    uuid: str
    payload: bytes


def event_uuid(stream: str, shard_id: str, record: KinesisRecord) -> str:
    """Return the deterministic uuid of ``record``'s event."""
    name = f"{stream}/{shard_id}/{record.sequence_number}/{record.sub_sequence_number}"
    return str(uuid.uuid5(UUID_NAMESPACE, name))


def decode(data: bytes) -> dict[str, Any]:
    """Decode record bytes (optionally gzip-compressed) into a JSON object."""
    if data[:2] == GZIP_MAGIC:
        data = _gunzip(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError("not_utf8", f"byte {exc.start} is not valid UTF-8") from exc
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise RecordError("not_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except _NotJsonConstantError as exc:
        raise RecordError("not_json", str(exc)) from exc
    except RecursionError as exc:
        # The C decoder counts nesting against Python's recursion limit (about 1000,
        # less what is on the stack): far deeper than MAX_EVENT_DEPTH, so such a record
        # gets the same reason as one that decodes but nests too deep to send.
        raise RecordError(
            "too_deep", f"nesting exceeds what Python's JSON decoder reads ({exc})"
        ) from exc
    except ValueError as exc:
        # The decoder's only other ValueError: an integer literal longer than Python reads
        # (sys.get_int_max_str_digits(), 4300 by default, against CVE-2020-10735). Such a
        # number is far beyond a double, and the record cannot be read at all.
        raise RecordError(
            "number_out_of_range",
            f"an integer has more than {sys.get_int_max_str_digits()} digits, beyond a double",
        ) from exc
    if not isinstance(document, dict):
        raise RecordError(
            "not_object", f"top-level JSON is {type(document).__name__}, not an object"
        )
    return document


class Mapper:
    """Turns records of one shard into events according to :class:`Settings`."""

    def __init__(self, settings: Settings, shard_id: str) -> None:
        """Bind the settings and the shard whose records this mapper will see."""
        self._settings = settings
        self._shard_id = shard_id

    def map(self, record: KinesisRecord) -> MappedEvent:
        """Return the event for ``record`` or raise :class:`RecordError`; nothing else.

        The known hazards have reasons of their own (see :data:`REASONS`). Any other
        ``Exception`` raised while mapping this one record is a bug or a hazard nobody
        has met yet; it becomes ``unmappable`` so that the record is dead-lettered
        instead of ending the shard process, which would die on it again after every
        restart. The detail names the exception type and where it was raised, never
        its message: messages of foreign code may quote the record's content.
        """
        try:
            return self._map(record)
        except RecordError:
            raise
        except MemoryError:
            # Running out of memory is the process's condition, not proof the record is
            # bad: the same record may map fine after a restart, and dead-lettering it
            # would drop a good event. The shard process ends; KCL restarts it from the
            # last checkpoint. MAX_DECOMPRESSED_BYTES bounds one record's demand: at worst
            # some 27 bytes of Python objects per byte of JSON (2 MiB of "[],[],..."
            # decodes to about 55 MB).
            raise
        except Exception as exc:
            raise RecordError("unmappable", _unexpected_detail(exc)) from exc

    def _map(self, record: KinesisRecord) -> MappedEvent:
        settings = self._settings
        document = decode(record.data)
        event_name = _event_name(settings.event_key.lookup(document), settings.event_key.text)
        properties: dict[str, Any] = dict(document) if settings.include_all_properties else {}
        for mapping in settings.property_mappings:
            value = mapping.source.lookup(document)
            if value is not paths.MISSING:
                properties[mapping.destination] = value
        distinct_id = self._distinct_id(document, properties, record)
        properties["distinct_id"] = distinct_id
        properties["$lib"] = LIB_NAME
        properties["$kinesis_stream"] = settings.stream_name
        properties["$kinesis_shard_id"] = self._shard_id
        properties["$kinesis_sequence_number"] = record.sequence_number
        _check_cookieless_mode(properties)
        # Before json.dumps: it recurses per level of nesting and would otherwise meet
        # Python's recursion limit on a record the decoder read just fine.
        number_growth = _check_sendable(properties)
        identifier = event_uuid(settings.stream_name, self._shard_id, record)
        event = {
            "event": event_name,
            "distinct_id": distinct_id,
            "properties": properties,
            "timestamp": self._timestamp(document, record),
            "uuid": identifier,
        }
        # allow_nan=False: _check_sendable has refused non-finite numbers, so a ValueError
        # here would be a bug, and the guard in map() reports it as one.
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError:
            # A JSON escape such as \ud800 that is not half of a pair decodes to a lone
            # surrogate, which UTF-8 cannot hold. PostHog's capture rewrites each such
            # escape to U+FFFD before parsing (rust/capture/src/passes/invalid_surrogates.rs),
            # so we send what PostHog would store, and the batch is not refused meanwhile.
            encoded = _LONE_SURROGATE.sub(REPLACEMENT_CHARACTER, text).encode("utf-8")
        measured = captured_message_bytes(
            encoded, event_name=event_name, distinct_id=distinct_id, number_growth=number_growth
        )
        if measured > MAX_EVENT_BYTES:
            raise RecordError(
                "event_too_large",
                f"event is {len(encoded)} bytes, {measured} as PostHog's capture measures it "
                f"(escaped again inside its Kafka message); the limit is {MAX_EVENT_BYTES}",
            )
        return MappedEvent(uuid=identifier, payload=encoded)

    def _distinct_id(self, document: Any, properties: dict[str, Any], record: KinesisRecord) -> str:
        settings = self._settings
        if settings.distinct_id_key is not None:
            raw = settings.distinct_id_key.lookup(document)
            where = settings.distinct_id_key.text
        else:
            # The seed app's way: a mapping whose destination is distinct_id.
            raw = properties.get("distinct_id", paths.MISSING)
            where = "distinct_id mapping"
        value = _distinct_id_value(raw, where)
        if value is not None:
            return value
        missing = (
            f"the value at {where} is blank" if isinstance(raw, str) else f"no value at {where}"
        )
        policy = settings.missing_distinct_id
        # Kinesis partition keys are 1 to 256 characters, but may be all whitespace; an
        # empty one (a test double, a future API) or a blank one is an id capture refuses.
        if policy is MissingDistinctId.PARTITION_KEY:
            if not _is_blank_id(record.partition_key):
                return record.partition_key
            missing += ", and the partition key is blank"
        if policy is MissingDistinctId.FIXED and settings.fallback_distinct_id is not None:
            if not _is_blank_id(settings.fallback_distinct_id):
                return settings.fallback_distinct_id
            missing += ", and fallbackDistinctId is blank"
        raise RecordError("missing_distinct_id", missing)

    def _timestamp(self, document: Any, record: KinesisRecord) -> str:
        if self._settings.timestamp_key is not None:
            parsed = parse_timestamp(self._settings.timestamp_key.lookup(document))
            if parsed is not None:
                return format_timestamp(parsed)
        return format_timestamp(datetime.fromtimestamp(record.arrival_millis / 1000, tz=UTC))


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
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _in_utc(moment: datetime) -> datetime | None:
    """``moment`` in UTC (naive means UTC), or ``None`` if that is before year 1 or after 9999."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        # 0001-01-01T00:00:00+01:00 is in year 0 in UTC, 9999-12-31T23:00:00-01:00 in 10000.
        return moment.astimezone(UTC)
    except OverflowError:
        return None


def _event_name(value: Any, where: str) -> str:
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
    raise RecordError(
        "invalid_event", f"event name at {where} is {_json_type(value)}, not a string"
    )


def _distinct_id_value(value: Any, where: str) -> str | None:
    """The id at ``where`` as sent, or None when capture would find none (absent, null, blank)."""
    if value is paths.MISSING or value is None:
        return None
    if isinstance(value, str):
        return None if _is_blank_id(value) else value
    if isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(value, f"distinct id at {where}")
        return str(value)
    raise RecordError("invalid_distinct_id", f"distinct id at {where} is {_json_type(value)}")


def _is_blank_id(text: str) -> bool:
    """Whether capture finds no distinct id in ``text``: empty once trimmed as Rust trims."""
    return not text.strip(RUST_WHITESPACE)


def _check_cookieless_mode(properties: dict[str, Any]) -> None:
    """Refuse a ``$cookieless_mode`` property that is there and not a boolean, as capture does."""
    if COOKIELESS_MODE_PROPERTY in properties:
        value = properties[COOKIELESS_MODE_PROPERTY]
        if type(value) is not bool:
            raise RecordError(
                "invalid_property",
                f"property {COOKIELESS_MODE_PROPERTY} is {_json_type(value)}, not a boolean; "
                "PostHog's capture refuses such an event (InvalidCookielessMode)",
            )


def captured_message_bytes(
    payload: bytes, *, event_name: str, distinct_id: str, number_growth: int = 0
) -> int:
    r"""The size PostHog's capture gives the Kafka message of this event, at most.

    ``payload`` is the event's compact JSON (ours: no raw control characters, as
    json.dumps escapes them). serde_json writes it back with the same string escapes
    and ``number_growth`` more bytes of numbers (see :func:`_check_sendable`); as the
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


def _json_string_bytes(text: str) -> int:
    """Bytes of ``text`` as a JSON string; serde_json escapes exactly as json.dumps does here."""
    # A lone surrogate takes 3 bytes either way: as surrogatepass, or as the U+FFFD we send.
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _sendable_number_growth(value: float) -> int:
    """Refuse a number capture cannot read; else how many more bytes serde_json writes for it."""
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


def _check_number(value: float, what: str) -> None:
    """Refuse a float the decoder made infinite (a literal such as 1e400 overflows).

    Integers are fine here: as names and ids they travel as text.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError("number_out_of_range", f"{what} is beyond a double (±1.8e308)")


def _check_sendable(properties: dict[str, Any]) -> int:
    """Refuse properties PostHog's capture cannot parse: too deep, or numbers beyond a double.

    Only what is sent is checked: a deep or huge value elsewhere in the record does not
    matter. One level at a time rather than recursively, so that the check itself cannot
    meet the recursion limit; plain loops, as this visits every value of every event.
    Returns how many bytes more serde_json writes for the numbers than json.dumps does
    (at most), for :func:`captured_message_bytes`.
    """
    # Depth as capture counts it, the event object being level 1 and "properties" level 2.
    depth = _PROPERTIES_DEPTH
    growth = 0
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
                elif kind is int or kind is float:
                    growth += _sendable_number_growth(value)
        level = below
        depth += 1
    return growth


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", dict: "an object", list: "an array"}
    return names.get(type(value), type(value).__name__)


def _gunzip(data: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_DECOMPRESSED_BYTES + 1)
    except zlib.error as exc:
        raise RecordError("bad_gzip", f"gzip payload is corrupt: {exc}") from exc
    if len(out) > MAX_DECOMPRESSED_BYTES:
        raise RecordError("bad_gzip", f"gzip payload inflates past {MAX_DECOMPRESSED_BYTES} bytes")
    if not inflater.eof:
        raise RecordError("bad_gzip", "gzip payload is truncated")
    return out


class _NotJsonConstantError(ValueError):
    """NaN, Infinity or -Infinity: Python reads them, JSON (and PostHog) does not."""


def _reject_constant(name: str) -> Any:
    raise _NotJsonConstantError(f"{name} is not valid JSON")


def _unexpected_detail(exc: Exception) -> str:
    """Exception type and the innermost Python frame, e.g. ``KeyError in lookup (paths.py:52)``.

    Deliberately not ``str(exc)``: a foreign message may quote the record, and
    dead letters and logs must not carry its content beyond the ``data`` field.
    """
    where = ""
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    if frame is not None:
        code = frame.tb_frame.f_code
        where = f" in {code.co_name} ({Path(code.co_filename).name}:{frame.tb_lineno})"
    return f"{type(exc).__name__}{where}: unexpected error while mapping; please report it"
