r"""The daemon's side of the KCL multilang protocol: its messages, byte for byte.

The KCL MultiLangDaemon (``software.amazon.kinesis.multilang``) writes one JSON line per
message with a plain Jackson ``ObjectMapper``: fields in declaration order, no spaces,
non-ASCII as raw UTF-8, control characters as ``\u00XX`` in upper case. A
``processRecords`` message is a ``ProcessRecordsMessage`` whose records are
``JsonFriendlyRecord``s (``data`` is the record's bytes in base64, as
Jackson writes a ``byte[]``; ``approximateArrivalTimestamp`` is epoch milliseconds;
``action`` comes last, from a getter). The lines below were checked against the
daemon's own classes serialised by its own Jackson (``tests/test_bench.py`` holds that
output and checks that amazon-kclpy reads these lines into the same records).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

# Kinesis sequence numbers are 56-digit decimal strings; these start as real ones do.
_SEQUENCE_PREFIX = "4959"
_SEQUENCE_DIGITS = 56
# A fixed start (2023-11-14T22:13:20Z) keeps the input the same in every run.
ARRIVAL_START_MILLIS = 1_700_000_000_000
SHARD_ID = "shardId-000000000000"


@dataclass(frozen=True, slots=True)
class DaemonRecord:
    """A record as the daemon holds it before writing it out."""

    data: bytes
    partition_key: str
    sequence_number: str
    sub_sequence_number: int
    arrival_millis: int


# Jackson's escapes: the five short ones, and \u00XX in upper case for the other control
# characters (Python's json writes lower case); everything else as it is.
_JACKSON_ESCAPES = {
    **{chr(code): f"\\u{code:04X}" for code in range(0x20)},
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}
_NEEDS_ESCAPE = re.compile('[\x00-\x1f"\\\\]')


def jackson_string(text: str | None) -> str:
    """``text`` as Jackson writes a Java String (or null)."""
    if text is None:
        return "null"
    return '"' + _NEEDS_ESCAPE.sub(lambda match: _JACKSON_ESCAPES[match[0]], text) + '"'


def _line(*fields: tuple[str, str]) -> str:
    """One message: fields already written as JSON values, in order, then a newline."""
    return "{" + ",".join(f'"{name}":{value}' for name, value in fields) + "}\n"


def _number(value: int | None) -> str:
    return "null" if value is None else str(value)


def initialize(shard_id: str, sequence_number: str = "TRIM_HORIZON") -> str:
    """``InitializeMessage``: the first line a shard process reads."""
    return _line(
        ("action", '"initialize"'),
        ("shardId", jackson_string(shard_id)),
        ("sequenceNumber", jackson_string(sequence_number)),
        ("subSequenceNumber", "0"),
    )


def _record(record: DaemonRecord) -> str:
    """``JsonFriendlyRecord``: data (a byte[]) in base64, ``action`` last (from a getter)."""
    return (
        '{"data":"' + base64.b64encode(record.data).decode("ascii") + '",'
        f'"partitionKey":{jackson_string(record.partition_key)},'
        f'"sequenceNumber":{jackson_string(record.sequence_number)},'
        f'"approximateArrivalTimestamp":{record.arrival_millis},'
        f'"subSequenceNumber":{record.sub_sequence_number},"action":"record"}}'
    )


def process_records(records: Sequence[DaemonRecord], millis_behind_latest: int = 0) -> str:
    """``ProcessRecordsMessage`` holding ``records``."""
    return _line(
        ("action", '"processRecords"'),
        ("records", "[" + ",".join(_record(record) for record in records) + "]"),
        ("millisBehindLatest", str(millis_behind_latest)),
    )


def checkpoint_answer(sequence_number: str | None, sub_sequence_number: int | None) -> str:
    """``CheckpointMessage``: the daemon's answer to a checkpoint it carried out."""
    return _line(
        ("action", '"checkpoint"'),
        ("sequenceNumber", jackson_string(sequence_number)),
        ("subSequenceNumber", _number(sub_sequence_number)),
        ("error", "null"),
    )


def shutdown_requested() -> str:
    """``ShutdownRequestedMessage``: the worker is stopping; checkpoint what was done."""
    return _line(("action", '"shutdownRequested"'))


def sequence_number(n: int) -> str:
    """The ``n``-th sequence number of a shard, 56 digits like Kinesis's."""
    return _SEQUENCE_PREFIX + str(n).zfill(_SEQUENCE_DIGITS - len(_SEQUENCE_PREFIX))


def sample_document(n: int) -> dict[str, Any]:
    """The ``n``-th record's JSON: nested, with strings, numbers, booleans and an array."""
    return {
        "properties": {
            "eventName": ("page_viewed", "signed_up", "order_placed", "search")[n % 4],
            "userId": f"user-{n % 1000:04d}",
            "foo": n,
            "ok": n % 3 == 0,
            "plan": ("free", "team", "enterprise")[n % 3],
        },
        "context": {
            "page": {
                "path": f"/products/{n % 50}/reviews",
                "title": "Product reviews",
                "referrer": "https://www.example.com/search?q=shoes",
            },
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
            "tags": ["a", "b", n % 10],
            "price": 19.99 + n % 7,
        },
        "meta": {"ts": 1_700_000_000 + n, "source": "web"},
    }


def sample_records(count: int, start: int = 0) -> Iterator[DaemonRecord]:
    """``count`` records of one shard, in order, each about 405 bytes of JSON."""
    for n in range(start, start + count):
        yield DaemonRecord(
            data=json.dumps(sample_document(n)).encode(),
            partition_key=f"user-{n % 1000:04d}",
            sequence_number=sequence_number(n),
            sub_sequence_number=0,
            arrival_millis=ARRIVAL_START_MILLIS + n,
        )


def workload(messages: int, per_message: int) -> list[str]:
    """``messages`` processRecords lines of ``per_message`` records each, consecutive."""
    return [
        process_records(list(sample_records(per_message, start=i * per_message)))
        for i in range(messages)
    ]
