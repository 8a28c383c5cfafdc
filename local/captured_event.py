"""The Kafka message PostHog's capture makes of an event, as the stand-in measures it.

Capture turns each event into a CapturedEvent (``rust/common/types/src/event.rs``) and
produces it to Kafka, where librdkafka refuses a message over ``message.max.bytes``
(a 413 of the whole request; see :mod:`local.capture_rules`). This module rebuilds
that message's value, key and headers to count its bytes, and extracts the distinct
id as capture does (which :mod:`local.capture_rules` also checks).
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from local.capture_errors import RefusalError

# One event's Kafka message: librdkafka's message.max.bytes, set from
# kafka_producer_message_max_bytes (default 1000000, rust/capture/src/config.rs), which
# counts value + key + headers + RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD (librdkafka's
# rd_kafka_msg_max_wire_size: 5 + 1 + 10 + 5 + 5 + 5 + 5 bytes of varints).
EVENT_LIMIT = 1000 * 1000
KAFKA_MESSAGE_OVERHEAD = 36
# serde_json reads integers within i64/u64 exactly, others as doubles.
_I64_MIN, _U64_LIMIT = -(2**63), 2**64
# RawEvent::extract_distinct_id_checked (rust/common/types/src/event.rs): NUL becomes
# U+FFFD, an id empty once trimmed (Rust's str::trim: Unicode White_Space) is missing,
# and the id is cut to 200 characters.
RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
DISTINCT_ID_MAX_CHARS = 200


def captured_distinct_id(event: dict[str, Any]) -> str | None:
    """The distinct id capture extracts from ``event``, or None (MissingDistinctId)."""
    value = event.get("distinct_id", event.get("$distinct_id"))
    if value is None:
        properties = event.get("properties")
        value = properties.get("distinct_id") if isinstance(properties, dict) else None
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    text = text.replace("\0", "\ufffd")
    if not text.strip(RUST_WHITESPACE):
        return None
    return text[:DISTINCT_ID_MAX_CHARS]


@dataclass(frozen=True, slots=True)
class CaptureEnvelope:
    """What capture adds to every event of a request: the request's token, IP and flags."""

    token: str
    ip: str = "127.0.0.1"
    sent_at: str | None = None
    historical_migration: bool = False


def captured_message_bytes(event: dict[str, Any], envelope: CaptureEnvelope) -> int:
    """The bytes librdkafka counts for the Kafka message capture makes of ``event``.

    process_single_event (rust/capture/src/events/analytics.rs) serialises the RawEvent
    with serde_json into ``data``, and the sink (rust/capture/src/sinks/kafka.rs)
    serialises the CapturedEvent (rust/common/types/src/event.rs) holding it as the
    message value, keyed ``token:distinct_id``, with ``to_headers()``. librdkafka refuses
    value + key + headers + :data:`KAFKA_MESSAGE_OVERHEAD` over :data:`EVENT_LIMIT`.
    ``event`` must have passed :func:`local.capture_rules._validate_event`. The value is
    built and escaped for real (json.dumps escapes strings exactly as serde_json does);
    only the numbers are counted at the length ryu gives them (:func:`ryu`).
    """
    raw_event = _raw_event(event)
    growth = _number_growth(raw_event)
    try:
        data = json.dumps(raw_event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise RefusalError(
            HTTPStatus.BAD_REQUEST, "failed to parse request: number out of range"
        ) from exc
    distinct_id = captured_distinct_id(event) or ""
    properties = event.get("properties")
    cookieless = isinstance(properties, dict) and properties.get("$cookieless_mode") is True
    # chrono's to_rfc3339_opts(SecondsFormat::AutoSi, true) of a clock with nanoseconds.
    now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "000Z")
    timestamp = event.get("timestamp") if isinstance(event.get("timestamp"), str) else now
    identifier = event.get("uuid")
    identifier = str(uuid.UUID(identifier)) if identifier else str(uuid.uuid4())
    captured: dict[str, Any] = {
        "uuid": identifier,
        "distinct_id": distinct_id,
        "ip": envelope.ip,
        "data": data,
        "now": now,
        **({"sent_at": envelope.sent_at} if envelope.sent_at else {}),
        "token": envelope.token,
        "event": event["event"],
        "timestamp": timestamp,
        **({"is_cookieless_mode": True} if cookieless else {}),
        **({"historical_migration": True} if envelope.historical_migration else {}),
    }
    # Digits contain nothing JSON escapes, so the numbers' growth survives the escaping as is.
    value = _utf8_len(json.dumps(captured, separators=(",", ":"), ensure_ascii=False)) + growth
    key = _utf8_len(f"{envelope.token}:{envelope.ip if cookieless else distinct_id}")
    headers = {
        "token": envelope.token,
        "distinct_id": distinct_id,
        "session_id": None,
        "timestamp": "1700000000000",  # milliseconds, 13 digits until 2286
        "event": event["event"],
        "uuid": identifier,
        "now": now,
        "force_disable_person_processing": None,
        "historical_migration": "true" if envelope.historical_migration else None,
    }
    return value + key + _headers_bytes(headers) + KAFKA_MESSAGE_OVERHEAD


def _raw_event(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` as a RawEvent holds it: its known fields only, ``uuid`` always present."""
    raw: dict[str, Any] = {}
    for name, aliases in (("token", ("$token", "api_key")), ("distinct_id", ("$distinct_id",))):
        for key in (name, *aliases):
            if event.get(key) is not None:
                raw[name] = event[key]
                break
    identifier = event.get("uuid")
    raw["uuid"] = str(uuid.UUID(identifier)) if identifier else None
    raw["event"] = event["event"]
    raw["properties"] = event.get("properties") or {}
    for name in ("timestamp", "offset", "$set", "$set_once"):
        if event.get(name) is not None:
            raw[name] = event[name]
    return raw


def _number_growth(value: Any) -> int:
    """Bytes serde_json writes for the numbers in ``value`` beyond what json.dumps writes."""
    growth = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif type(item) is float:
            if not math.isfinite(item):
                raise RefusalError(
                    HTTPStatus.BAD_REQUEST, "failed to parse request: number out of range"
                )
            growth += len(ryu(item)) - len(repr(item))
        elif type(item) is int and not _I64_MIN <= item < _U64_LIMIT:
            try:
                as_double = float(item)
            except OverflowError as exc:
                raise RefusalError(
                    HTTPStatus.BAD_REQUEST, "failed to parse request: number out of range"
                ) from exc
            growth += len(ryu(as_double)) - len(str(item))
    return growth


def ryu(value: float) -> str:
    """``value`` as serde_json writes a double (the ryu crate's format64).

    Positional for decimal exponents -5 to 15 (``0.00001``, ``1000.0``), else scientific
    without ``+`` or leading zeros (``1e16``, ``1.5e-7``). The digits are the shortest
    that round-trip, which Python's repr also writes.
    """
    if not math.isfinite(value):
        raise ValueError(f"{value} is not finite")
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return f"{sign}0.0"
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    # kk: the decimal point sits after kk digits (10**(kk-1) <= value < 10**kk).
    kk = len(whole.lstrip("0")) if whole.strip("0") else len(fraction.lstrip("0")) - len(fraction)
    kk += int(exponent or 0)
    digits = digits.rstrip("0")
    count = len(digits)
    if count <= kk <= 16:
        text = digits + "0" * (kk - count) + ".0"
    elif 0 < kk <= 16:
        text = f"{digits[:kk]}.{digits[kk:]}"
    elif -5 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif count == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + text


def _headers_bytes(headers: dict[str, str | None]) -> int:
    """rd_kafka_headers_serialized_size: per header, varint lengths, name and value."""
    total = 0
    for name, value in headers.items():
        name_len = len(name.encode())
        value_len = -1 if value is None else _utf8_len(value)
        total += _varint_bytes(name_len) + name_len + _varint_bytes(value_len)
        total += max(0, value_len)
    return total


def _varint_bytes(number: int) -> int:
    """Size of a zigzag varint, as Kafka's record format writes lengths."""
    zigzag = (number << 1) ^ (number >> 63)
    size = 1
    while zigzag >= 0x80:  # seven bits per byte
        zigzag >>= 7
        size += 1
    return size


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))
