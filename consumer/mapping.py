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
  filter out, and within its size limit as capture measures it. Anything else would
  only be refused later, with a whole batch, and each such refusal costs a bisection.
  Those rules are :mod:`consumer.capture_rules`; reading times, :mod:`consumer.timestamps`.
* What a record becomes depends only on the record, its shard and the
  :class:`MappingRules` (built from the settings by :mod:`consumer.wiring`): this module
  reads no settings of its own.
"""

from __future__ import annotations

import enum
import json
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from consumer import capture_rules, paths
from consumer.errors import RecordError
from consumer.event_ids import EventIds
from consumer.record import KinesisRecord, MappedEvent
from consumer.timestamps import arrival_time, event_time

# A gzip record may not inflate past this; guards against decompression bombs. A Kinesis
# record is at most 1 MiB and an event at most capture_rules.MAX_EVENT_BYTES, so a record
# that inflates past twice the larger is no event we could send. At some 27 bytes of
# Python objects per byte of JSON (see Mapper.map), 2 MiB of "[],[],..." costs about
# 55 MB to decode.
MAX_DECOMPRESSED_BYTES = 2 * 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
LIB_NAME = "kinesis-posthog"
# Records with at least this many '[' and '{' (in strings too) are read by the json module
# alone: such a record may nest as deep, and json's reading of deep nesting depends on the
# recursion limit (1000 frames in all), where orjson's does not. Far above what capture
# reads (capture_rules.MAX_EVENT_DEPTH, 125) and far below where json gives up.
FAST_MAX_BRACKETS = 256
# A run of this many digits is where an integer beyond 64 bits could be (2**63 has 19
# digits), which orjson would read as a float; such records are read by json alone.
_LONG_INTEGER_DIGITS = 19
_LONG_DIGIT_RUN = b"0" * _LONG_INTEGER_DIGITS
# All looked for in one copy: every digit becomes "0", every "{" a "[", every "E" an "e".
_MARKS = bytes.maketrans(b"0123456789{E", b"0000000000[e")
# How a float with 0 < |x| < 1e-4 is spelled in JSON: with a negative exponent (looked
# for in the marked copy, see read) or positionally (in the text itself).
_SMALL_EXPONENT = b"0e-"
_SMALL_POSITIONAL = b"0.0000"

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


class MissingDistinctId(enum.StrEnum):
    """What to do with a record whose ``distinctIdKey`` is absent."""

    PARTITION_KEY = "partitionKey"
    FIXED = "fixed"
    DEAD_LETTER = "deadLetter"


@dataclass(frozen=True, slots=True)
class PropertyMapping:
    """One ``source.path:destination`` entry of ``additionalPropertyMappings``."""

    source: paths.KeyPath
    destination: str


@dataclass(frozen=True, slots=True)
class MappingRules:
    """Everything a :class:`Mapper` reads: where each part of the event comes from.

    Plain values, so that the mapper is built and tested without settings, files or the
    environment; :func:`consumer.wiring.mapping_rules` makes them from the settings,
    whose table holds the defaults (there are none here, so there is one place for them).
    """

    stream_name: str
    event_key: paths.KeyPath
    property_mappings: tuple[PropertyMapping, ...]
    distinct_id_key: paths.KeyPath | None
    missing_distinct_id: MissingDistinctId
    fallback_distinct_id: str | None
    timestamp_key: paths.KeyPath | None
    include_all_properties: bool


def decode(data: bytes) -> dict[str, Any]:
    """Decode record bytes (optionally gzip-compressed) into a JSON object."""
    return read(data)[0]


# A record's JSON object, and whether its text alone proves that capture_rules.check_sendable
# of any properties made from it returns NOTHING_TO_ADJUST (see read): the mapper then
# skips that walk over every value. A plain tuple: a NamedTuple costs 0.6 µs to build.
Read = tuple[dict[str, Any], bool]


def read(data: bytes) -> Read:
    """Decode record bytes (optionally gzip-compressed) into a JSON object.

    What the json module reads, by orjson (about 3x faster) where that is provably the
    same, else by the json module itself, whose refusals give each reason and detail.

    orjson and json read JSON to the same values (types, key order, last duplicate key
    wins, floats correctly rounded) but for: an integer beyond 64 bits (a float in
    orjson); nesting json cannot read (RecursionError near 1000 levels, less the caller's
    stack; orjson reads 1024); and what orjson refuses (lone surrogate escapes, NaN,
    numbers beyond a double, a byte order mark, invalid JSON or UTF-8), which json may
    read or refuse in words of its own. So orjson reads only text without a run of 19
    digits (2**63 has 19) and with fewer than :data:`FAST_MAX_BRACKETS` brackets, and
    only if it reads it at all; having read it, the text is valid UTF-8 (orjson checks
    as strictly as Python's codec). (tests/test_mapping.py compares the two on
    arbitrary records.)

    Such a document is ``plain`` when its text also proves what check_sendable would
    find: no integer beyond 64 bits (no 19-digit run), nothing infinite or NaN (orjson
    refuses them), no float with 0 < |x| < 1e-4 (such a literal is spelled with a
    negative exponent, "<digit>e-", or positionally, "0.0000"), and no nesting beyond
    capture's (few enough brackets).
    """
    if data[:2] == GZIP_MAGIC:
        data = _gunzip(data)
    marked = data.translate(_MARKS)
    brackets = marked.count(b"[")
    if brackets < FAST_MAX_BRACKETS and _LONG_DIGIT_RUN not in marked:
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        else:
            plain = (
                brackets <= capture_rules.PLAIN_MAX_CONTAINERS
                and _SMALL_EXPONENT not in marked
                and _SMALL_POSITIONAL not in data
            )
            return _object(document), plain
    try:
        text = data.decode("utf-8")  # strict, as orjson reads: the same not_utf8 either way
    except UnicodeDecodeError as exc:
        raise RecordError("not_utf8", f"byte {exc.start} is not valid UTF-8") from exc
    return _object(_json_loads(text)), False


def _object(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise RecordError(
            "not_object", f"top-level JSON is {type(document).__name__}, not an object"
        )
    return document


def _json_loads(text: str) -> Any:
    """The json module's reading of ``text``; its refusals become RecordErrors with reasons."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise RecordError("not_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except _NotJsonConstantError as exc:
        raise RecordError("not_json", str(exc)) from exc
    except RecursionError as exc:
        # The C decoder counts nesting against Python's recursion limit (about 1000,
        # less what is on the stack): far deeper than capture_rules.MAX_EVENT_DEPTH, so
        # such a record gets the same reason as one that decodes but nests too deep to send.
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


class Mapper:
    """Turns records of one shard into events according to :class:`MappingRules`."""

    def __init__(self, rules: MappingRules, shard_id: str) -> None:
        """Bind the rules and the shard whose records this mapper will see."""
        self._rules = rules
        self._shard_id = shard_id
        self._event_ids = EventIds(rules.stream_name, shard_id)
        # Set on every event, in this order, after distinct_id.
        self._shard_properties = {
            "$lib": LIB_NAME,
            "$kinesis_stream": rules.stream_name,
            "$kinesis_shard_id": shard_id,
        }

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
        rules = self._rules
        document, plain = read(record.data)
        event_name = capture_rules.event_name(
            rules.event_key.lookup(document), rules.event_key.text
        )
        properties: dict[str, Any] = dict(document) if rules.include_all_properties else {}
        for mapping in rules.property_mappings:
            value = mapping.source.lookup(document)
            if value is not paths.MISSING:
                properties[mapping.destination] = value
        distinct_id = self._distinct_id(document, properties, record)
        properties["distinct_id"] = distinct_id
        properties.update(self._shard_properties)
        properties["$kinesis_sequence_number"] = record.sequence_number
        capture_rules.check_cookieless_mode(properties)
        # Before encoding: json.dumps recurses per level of nesting and would otherwise meet
        # Python's recursion limit on a record the decoder read just fine.
        numbers = (
            capture_rules.NOTHING_TO_ADJUST if plain else capture_rules.check_sendable(properties)
        )
        identifier = self._event_ids(record)
        event = {
            "event": event_name,
            "distinct_id": distinct_id,
            "properties": properties,
            "timestamp": self._timestamp(document, record),
            "uuid": identifier,
        }
        encoded = encode_event(event, small_floats=numbers.small_floats)
        if numbers.growth or not capture_rules.surely_within_size(encoded):
            capture_rules.check_size(
                encoded,
                event_name=event_name,
                distinct_id=distinct_id,
                number_growth=numbers.growth,
            )
        return MappedEvent(identifier, encoded)  # positional: cheaper per record

    def _distinct_id(self, document: Any, properties: dict[str, Any], record: KinesisRecord) -> str:
        rules = self._rules
        if rules.distinct_id_key is not None:
            raw = rules.distinct_id_key.lookup(document)
            where = rules.distinct_id_key.text
        else:
            # The seed app's way: a mapping whose destination is distinct_id.
            raw = properties.get("distinct_id", paths.MISSING)
            where = "distinct_id mapping"
        value = capture_rules.distinct_id_value(raw, where)
        if value is not None:
            return value
        missing = (
            f"the value at {where} is blank" if isinstance(raw, str) else f"no value at {where}"
        )
        policy = rules.missing_distinct_id
        # Kinesis partition keys are 1 to 256 characters, but may be all whitespace; an
        # empty one (a test double, a future API) or a blank one is an id capture refuses.
        if policy is MissingDistinctId.PARTITION_KEY:
            if not capture_rules.is_blank_id(record.partition_key):
                return record.partition_key
            missing += ", and the partition key is blank"
        if policy is MissingDistinctId.FIXED and rules.fallback_distinct_id is not None:
            if not capture_rules.is_blank_id(rules.fallback_distinct_id):
                return rules.fallback_distinct_id
            missing += ", and fallbackDistinctId is blank"
        raise RecordError("missing_distinct_id", missing)

    def _timestamp(self, document: Any, record: KinesisRecord) -> str:
        if self._rules.timestamp_key is not None:
            moment = event_time(self._rules.timestamp_key.lookup(document))
            if moment is not None:
                return moment
        return arrival_time(record.arrival_millis)


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


def encode_event(event: dict[str, Any], *, small_floats: bool) -> bytes:
    """The event's compact JSON as UTF-8, lone surrogates as U+FFFD: json.dumps's bytes.

    orjson writes json.dumps's bytes (compact, ``ensure_ascii=False``), several times
    faster, for every value a decoded record holds but three, left to json.dumps: a float
    with 0 < |x| < 1e-4 (``small_floats``, from capture_rules.check_sendable: json writes
    ``1e-05``, orjson ``0.00001``), and an integer beyond 64 bits or a lone surrogate,
    which orjson refuses. (tests/test_mapping.py compares the two on arbitrary events.)
    """
    if not small_floats:
        try:
            written = orjson.dumps(event)
        except orjson.JSONEncodeError:
            pass
        else:
            # orjson's bytes keep the buffer they were written in (8 KiB, orjson 3.13): a
            # copy of the exact size holds 10,000 events in 6 MB, not 80, and costs less
            # than the page faults of keeping them.
            return memoryview(written).tobytes()
    # allow_nan=False: check_sendable has refused non-finite numbers, so a ValueError
    # here would be a bug, and the guard in Mapper.map reports it as one.
    text = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return capture_rules.utf8_as_captured(text)
