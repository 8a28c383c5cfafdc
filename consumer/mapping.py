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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from consumer import capture_rules, paths
from consumer.decoding import has_long_digit_run, plain_values, read, read_plainly
from consumer.errors import RecordError
from consumer.event_ids import EventIds
from consumer.record import KinesisRecord, MappedEvent
from consumer.timestamps import arrival_time, event_time

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
        data = record.data
        # Sending only some values, the mapper reads by orjson and looks at those values
        # (decoding.read_plainly); else, or where that proves nothing, decoding.read.
        document = None if rules.include_all_properties else read_plainly(data)
        if document is not None:
            event_raw, properties, distinct_raw, moment_raw = self._values(document)
            plain = plain_values((event_raw, distinct_raw, moment_raw)) and plain_values(
                properties.values()
            )
            if not plain and has_long_digit_run(data):
                document = None  # one of them may be an integer orjson read as a float
        if document is None:
            document, plain = read(data)
            event_raw, properties, distinct_raw, moment_raw = self._values(document)
        event_name = capture_rules.event_name(event_raw, rules.event_key.text)
        distinct_id = self._distinct_id(distinct_raw, record)
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
            "timestamp": self._timestamp(moment_raw, record),
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

    def _values(self, document: dict[str, Any]) -> tuple[Any, dict[str, Any], Any, Any]:
        """What the rules take from ``document``: event name, properties, distinct id, time.

        Raw, as found (``paths.MISSING`` where absent); the properties are the mapped
        ones (over the whole record with includeAllProperties), nothing of ours yet.
        """
        rules = self._rules
        properties: dict[str, Any] = dict(document) if rules.include_all_properties else {}
        for mapping in rules.property_mappings:
            value = mapping.source.lookup(document)
            if value is not paths.MISSING:
                properties[mapping.destination] = value
        if rules.distinct_id_key is not None:
            distinct_raw = rules.distinct_id_key.lookup(document)
        else:
            # The seed app's way: a mapping whose destination is distinct_id.
            distinct_raw = properties.get("distinct_id", paths.MISSING)
        moment_raw = (
            paths.MISSING if rules.timestamp_key is None else rules.timestamp_key.lookup(document)
        )
        return rules.event_key.lookup(document), properties, distinct_raw, moment_raw

    def _distinct_id(self, raw: Any, record: KinesisRecord) -> str:
        rules = self._rules
        where = (
            "distinct_id mapping" if rules.distinct_id_key is None else rules.distinct_id_key.text
        )
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

    def _timestamp(self, moment_raw: Any, record: KinesisRecord) -> str:
        if moment_raw is not paths.MISSING:
            moment = event_time(moment_raw)
            if moment is not None:
                return moment
        return arrival_time(record.arrival_millis)


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
            # orjson's bytes keep the buffer they were written in (orjson 3.13: 4 KiB of
            # memory for a ~450-byte event): a copy of the exact size, about 0.2 µs,
            # holds 10,000 such events in 4 MB, not 43.
            return memoryview(written).tobytes()
    # allow_nan=False: check_sendable has refused non-finite numbers, so a ValueError
    # here would be a bug, and the guard in Mapper.map reports it as one.
    text = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return capture_rules.utf8_as_captured(text)
