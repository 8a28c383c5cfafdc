"""Kinesis records aggregated as the Kinesis Producer Library (KPL) writes them.

Several user records travel in one Kinesis record; the KCL daemon splits them again and
hands each to its shard process with the outer record's sequence number and its own
sub-sequence number (its index in the aggregate), from which our event uuid derives.

The format (KPL's ``aggregation-format.md``): the magic bytes, then a protobuf
``AggregatedRecord``, then the MD5 digest of that protobuf::

    message AggregatedRecord {
      repeated string partition_key_table = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records = 3;
    }
    message Record {
      required uint64 partition_key_index = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes data = 3;
    }

Hand-written (about 20 lines of protobuf) rather than taking ``aws-kinesis-agg``, which
needs protobuf and an undeclared ``six``. The KCL itself is the test: it deaggregates
these records in the end-to-end tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

MAGIC = b"\xf3\x89\x9a\xc2"
_VARINT = 0
_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3 | _VARINT) + _varint(payload)
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def aggregate(partition_key: str, user_records: Sequence[bytes]) -> bytes:
    """One Kinesis record's data holding ``user_records``, all under ``partition_key``.

    One key for all of them, as the KPL groups them: the KCL drops a user record whose
    key hashes outside the shard the aggregate landed on.
    """
    message = _field(1, partition_key.encode())
    for data in user_records:
        message += _field(3, _field(1, 0) + _field(3, data))
    return MAGIC + message + hashlib.md5(message).digest()  # noqa: S324 - the format's checksum
