"""Record -> PostHog event: decode, map, and derive identity from the record alone.

Promises:

* The event's ``uuid`` is a UUIDv5 of (stream, shard, sequence number, subsequence
  number) and its ``timestamp`` comes from the record (``timestampKey``) or its
  approximate arrival time, never from the clock. A replay therefore produces the
  same event byte for byte, and PostHog collapses it into the original.
* Every input yields either a :class:`MappedEvent` or a :class:`RecordError` whose
  ``reason`` is one of :data:`REASONS`; nothing else escapes.
"""

from __future__ import annotations

import json
import math
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from consumer import paths
from consumer.config import MissingDistinctId, Settings
from consumer.errors import RecordError

# A fixed namespace makes uuids stable across versions and machines. Never change it:
# doing so would turn every replay after an upgrade into a duplicate.
UUID_NAMESPACE = uuid.UUID("6f1c7a2e-4b8d-5e0a-9c3f-2d7b1e8a4c60")
# PostHog discards events over ~1 MB (its Kafka message limit); posthog-python keeps each
# event under 900 KiB to leave room for the envelope. We do the same.
MAX_EVENT_BYTES = 900 * 1024
# A gzip record may not inflate past this; guards against decompression bombs.
MAX_DECOMPRESSED_BYTES = 10 * 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
# Epoch numbers at or above this are milliseconds (1e11 s is the year 5138).
EPOCH_MILLIS_THRESHOLD = 1e11
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
        "event_too_large",
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
    except (ValueError, RecursionError) as exc:
        raise RecordError("not_json", _json_detail(exc)) from exc
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
        """Return the event for ``record`` or raise :class:`RecordError`."""
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
        identifier = event_uuid(settings.stream_name, self._shard_id, record)
        event = {
            "event": event_name,
            "distinct_id": distinct_id,
            "properties": properties,
            "timestamp": self._timestamp(document, record),
            "uuid": identifier,
        }
        try:
            payload = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except ValueError as exc:  # pragma: no cover - decode() already refuses NaN/Infinity
            raise RecordError("not_json", str(exc)) from exc
        encoded = payload.encode("utf-8")
        if len(encoded) > MAX_EVENT_BYTES:
            raise RecordError(
                "event_too_large",
                f"event is {len(encoded)} bytes; PostHog's limit is {MAX_EVENT_BYTES}",
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
        if settings.missing_distinct_id is MissingDistinctId.PARTITION_KEY:
            return record.partition_key
        if (
            settings.missing_distinct_id is MissingDistinctId.FIXED
            and settings.fallback_distinct_id
        ):
            return settings.fallback_distinct_id
        raise RecordError("missing_distinct_id", f"no value at {where}")

    def _timestamp(self, document: Any, record: KinesisRecord) -> str:
        if self._settings.timestamp_key is not None:
            parsed = parse_timestamp(self._settings.timestamp_key.lookup(document))
            if parsed is not None:
                return format_timestamp(parsed)
        return format_timestamp(datetime.fromtimestamp(record.arrival_millis / 1000, tz=UTC))


def parse_timestamp(value: Any) -> datetime | None:
    """Read ISO 8601 text or epoch seconds/milliseconds; ``None`` when it is neither."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return _as_utc(datetime.fromisoformat(text))
        except ValueError:
            pass
        try:
            value = float(text)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    seconds = value / 1000 if abs(value) >= EPOCH_MILLIS_THRESHOLD else value
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, the form PostHog stores."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _event_name(value: Any, where: str) -> str:
    if value is paths.MISSING or value is None:
        raise RecordError("missing_event", f"no value at {where}")
    if isinstance(value, str):
        if not value.strip():
            raise RecordError("invalid_event", f"event name at {where} is blank")
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise RecordError(
        "invalid_event", f"event name at {where} is {_json_type(value)}, not a string"
    )


def _distinct_id_value(value: Any, where: str) -> str | None:
    if value is paths.MISSING or value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise RecordError("invalid_distinct_id", f"distinct id at {where} is {_json_type(value)}")


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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_detail(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return str(exc) or type(exc).__name__
