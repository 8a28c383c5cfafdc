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
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumer import capture_rules, paths
from consumer.errors import RecordError
from consumer.record import KinesisRecord, MappedEvent
from consumer.timestamps import format_timestamp, parse_timestamp

# A fixed namespace makes uuids stable across versions and machines. Never change it:
# doing so would turn every replay after an upgrade into a duplicate.
UUID_NAMESPACE = uuid.UUID("6f1c7a2e-4b8d-5e0a-9c3f-2d7b1e8a4c60")
# A gzip record may not inflate past this; guards against decompression bombs. A Kinesis
# record is at most 1 MiB and an event at most capture_rules.MAX_EVENT_BYTES, so a record
# that inflates past twice the larger is no event we could send. At some 27 bytes of
# Python objects per byte of JSON (see Mapper.map), 2 MiB of "[],[],..." costs about
# 55 MB to decode.
MAX_DECOMPRESSED_BYTES = 2 * 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
LIB_NAME = "kinesis-posthog"

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
    if not isinstance(document, dict):
        raise RecordError(
            "not_object", f"top-level JSON is {type(document).__name__}, not an object"
        )
    return document


class Mapper:
    """Turns records of one shard into events according to :class:`MappingRules`."""

    def __init__(self, rules: MappingRules, shard_id: str) -> None:
        """Bind the rules and the shard whose records this mapper will see."""
        self._rules = rules
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
        rules = self._rules
        document = decode(record.data)
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
        properties["$lib"] = LIB_NAME
        properties["$kinesis_stream"] = rules.stream_name
        properties["$kinesis_shard_id"] = self._shard_id
        properties["$kinesis_sequence_number"] = record.sequence_number
        capture_rules.check_cookieless_mode(properties)
        # Before json.dumps: it recurses per level of nesting and would otherwise meet
        # Python's recursion limit on a record the decoder read just fine.
        number_growth = capture_rules.check_sendable(properties)
        identifier = event_uuid(rules.stream_name, self._shard_id, record)
        event = {
            "event": event_name,
            "distinct_id": distinct_id,
            "properties": properties,
            "timestamp": self._timestamp(document, record),
            "uuid": identifier,
        }
        # allow_nan=False: check_sendable has refused non-finite numbers, so a ValueError
        # here would be a bug, and the guard in map() reports it as one.
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        encoded = capture_rules.utf8_as_captured(text)
        capture_rules.check_size(
            encoded, event_name=event_name, distinct_id=distinct_id, number_growth=number_growth
        )
        return MappedEvent(uuid=identifier, payload=encoded)

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
            parsed = parse_timestamp(self._rules.timestamp_key.lookup(document))
            if parsed is not None:
                return format_timestamp(parsed)
        return format_timestamp(datetime.fromtimestamp(record.arrival_millis / 1000, tz=UTC))


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
