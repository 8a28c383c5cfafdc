"""Dead letters into another Kinesis stream: durable, replayable with the same tools.

:class:`KinesisSink` puts the entries (:class:`~consumer.deadletter.DeadLetter`) into a
stream (served by the local emulator too), within every PutRecords limit (see the
constants below). An entry whose JSON is over the record limit is gzipped; this
consumer (and ``preview``) read gzip records transparently, up to
:data:`consumer.decoding.MAX_DECOMPRESSED_BYTES` inflated, so nothing larger is gzipped.
An entry that does not fit even gzipped (a record of incompressible data near or over
1 MiB: its base64 is a third larger) is written without its bytes, as::

    {"reason": "too_large_to_dead_letter",
     "detail": "<original reason>: <original detail>; the record's data (<n> bytes) ...
                re-read it from the source stream at this position within the stream's
                retention",
     "originalReason": "<original reason>",
     "stream": ..., "shardId": ..., "sequenceNumber": ..., "subSequenceNumber": ...,
     "partitionKey": ..., "approximateArrivalTimestamp": ...,
     "dataLength": <n>, "dataSha256": "<hex sha256 of the record's bytes>"}

There is no ``data`` key at all (an empty one would read as an empty record). Its text
fields are cut to :data:`OMITTED_FIELD_MAX_CHARS`, which no value Kinesis produces
reaches, so this form always fits.
"""

from __future__ import annotations

import base64
import collections
import gzip
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from consumer.batching import runs
from consumer.deadletter import DETAIL_MAX_CHARS, DeadLetter, clip
from consumer.decoding import MAX_DECOMPRESSED_BYTES
from consumer.errors import DeadLetterError

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient

log = logging.getLogger(__name__)

# PutRecords limits (AWS service limits, Kinesis Data Streams API reference, PutRecords):
# at most 500 records and 5 MiB per request, "including partition keys"; each record at
# most 1 MiB, counting "the total size of the partition key and data blob" (a stream's
# default maximum record size). Partition keys are counted as their UTF-8 bytes.
PUT_RECORDS_MAX_ENTRIES = 500
PUT_RECORDS_MAX_BYTES = 5 * 1024 * 1024
KINESIS_RECORD_MAX_BYTES = 1024 * 1024
# A partition key is 1 to 256 Unicode characters (AWS service limit). Counted here in
# UTF-16 code units, which is never less than code points, so the key is valid whichever
# way the service counts.
PARTITION_KEY_MAX_CHARS = 256
# Put with an entry whose own partition key is empty (no Kinesis record has one).
EMPTY_PARTITION_KEY = "dead-letter"
# Our choice for the entry written without its data: stream names, shard ids (128),
# sequence numbers (128 digits) and partition keys (256) never reach it (AWS service
# limits), so it cuts nothing real, and bounds that entry far below the record limit.
OMITTED_FIELD_MAX_CHARS = 1024
# Our choice: how much of an AWS error message goes into a DeadLetterError.
ERROR_MESSAGE_MAX_CHARS = 300
TOO_LARGE_REASON = "too_large_to_dead_letter"


@dataclass(frozen=True, slots=True)
class _Slot:
    """One PutRecords record, sized as AWS counts it."""

    entry: DeadLetter
    partition_key: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data) + len(self.partition_key.encode("utf-8"))


class KinesisSink:
    """Puts entries into a Kinesis stream within PutRecords' limits; retries only failed slots."""

    def __init__(self, client: KinesisClient, stream_name: str) -> None:
        """Use ``client`` (built from the same endpoint and credentials as the daemon's)."""
        self._client = client
        self._stream = stream_name
        # Entries PutRecords accepted during a write that then failed. The caller retries
        # with the same entries, so these are skipped instead of put twice; cleared once
        # a write completes. (A skipped duplicate is an identical entry: already stored.)
        self._written: set[DeadLetter] = set()

    def write(self, entries: Sequence[DeadLetter]) -> None:
        """Put all entries; raise if any is still unwritten (the caller backs off and retries).

        Chunks are put in order and the first one with a failure stops the write, so a
        throttled stream is not pushed further.
        """
        slots = (_slot(entry) for entry in entries if entry not in self._written)
        chunks = runs(
            slots,
            max_count=PUT_RECORDS_MAX_ENTRIES,
            max_bytes=PUT_RECORDS_MAX_BYTES,
            size=lambda slot: slot.size,
        )
        for chunk in chunks:
            self._put(chunk)
        self._written.clear()

    def _put(self, chunk: list[_Slot]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._client.put_records(
                StreamName=self._stream,
                Records=[{"PartitionKey": slot.partition_key, "Data": slot.data} for slot in chunk],
            )
        except (BotoCoreError, ClientError) as exc:
            raise DeadLetterError(
                f"cannot put to dead-letter stream {self._stream}: {_describe(exc)}"
            ) from exc
        if not answer.get("FailedRecordCount", 0):
            self._written.update(slot.entry for slot in chunk)
            return
        results = answer.get("Records", [])
        if len(results) != len(chunk):
            raise DeadLetterError(
                f"dead-letter stream {self._stream} answered {len(results)} results "
                f"for {len(chunk)} records"
            )
        errors: collections.Counter[str] = collections.Counter()
        for slot, result in zip(chunk, results, strict=True):
            if "ErrorCode" in result:
                errors[result["ErrorCode"]] += 1
            else:
                self._written.add(slot.entry)
        summary = ", ".join(f"{code} x{count}" for code, count in sorted(errors.items()))
        raise DeadLetterError(
            f"{errors.total()} of {len(chunk)} dead letters were not written to "
            f"{self._stream} ({summary}); only those are put again"
        )


def _slot(entry: DeadLetter) -> _Slot:
    """The record for ``entry``: its JSON, gzipped if need be, or the entry without its data."""
    key = _partition_key(entry.partition_key)
    room = KINESIS_RECORD_MAX_BYTES - len(key.encode("utf-8"))
    document = entry.to_json().encode("utf-8")
    if len(document) <= room:
        return _Slot(entry, key, document)
    # A gzipped entry must also inflate within what our own reader accepts.
    if len(document) <= MAX_DECOMPRESSED_BYTES:
        packed = gzip.compress(document, mtime=0)
        if len(packed) <= room:
            return _Slot(entry, key, packed)
    data = base64.b64decode(entry.data_base64)
    log.warning(
        "dead letter of %s/%s %s (%s) is too large for a Kinesis record even gzipped; "
        "writing it without its %d bytes of data",
        entry.stream,
        entry.shard_id,
        entry.sequence_number,
        entry.reason,
        len(data),
    )
    return _Slot(entry, key, _without_data(entry, data).encode("utf-8"))


def _without_data(entry: DeadLetter, data: bytes) -> str:
    """The entry's position, reason and a fingerprint of its data, without the data."""
    detail = (
        f"{entry.reason}: {clip(entry.detail, DETAIL_MAX_CHARS)}; the record's data "
        f"({len(data)} bytes) does not fit in a {KINESIS_RECORD_MAX_BYTES}-byte Kinesis "
        "record even gzipped, so it is omitted: re-read it from the source stream at this "
        "position within the stream's retention"
    )
    fields: dict[str, Any] = {
        "reason": TOO_LARGE_REASON,
        "detail": detail,
        "originalReason": clip(entry.reason, OMITTED_FIELD_MAX_CHARS),
        "stream": clip(entry.stream, OMITTED_FIELD_MAX_CHARS),
        "shardId": clip(entry.shard_id, OMITTED_FIELD_MAX_CHARS),
        "sequenceNumber": clip(entry.sequence_number, OMITTED_FIELD_MAX_CHARS),
        "subSequenceNumber": entry.sub_sequence_number,
        "partitionKey": clip(entry.partition_key, OMITTED_FIELD_MAX_CHARS),
        "approximateArrivalTimestamp": entry.approximate_arrival_timestamp,
        "dataLength": len(data),
        "dataSha256": hashlib.sha256(data).hexdigest(),
    }
    return json.dumps(fields, separators=(",", ":"))


def _partition_key(key: str) -> str:
    """``key`` if PutRecords accepts it; otherwise a valid key derived from it, deterministically.

    An over-long key (or one with a lone surrogate, which has no UTF-8 form) becomes
    ``sha256:<hex>`` of its bytes, so entries sharing a key still share a shard.
    """
    if not key:
        return EMPTY_PARTITION_KEY
    try:
        units = len(key.encode("utf-16-le")) // 2
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 (or UTF-16) form to send
        units = None
    if units is not None and units <= PARTITION_KEY_MAX_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _describe(exc: Exception) -> str:
    """An AWS error for a log line, without request values (they may hold payloads)."""
    from botocore.exceptions import ClientError, ParamValidationError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "error")
        message = clip(error.get("Message", ""), ERROR_MESSAGE_MAX_CHARS)
        return f"{code}: {message}" if message else code
    if isinstance(exc, ParamValidationError):
        # Its report quotes the offending parameter values.
        return "botocore refused the request's parameters"
    return clip(str(exc), ERROR_MESSAGE_MAX_CHARS)
