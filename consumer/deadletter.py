"""Where records that cannot become events go, with the reason, before we move past them.

A record is checkpointed past only after :meth:`DeadLetterSink.write` returned, so a
sink must make the entries durable before returning. :meth:`Delivery.dead_letter
<consumer.delivery.Delivery.dead_letter>` retries a failing sink forever, so a sink must
also never fail the same way forever on the same entries: an entry it cannot store as
it is, it stores in a form it can.

An entry is one JSON object (:meth:`DeadLetter.to_json`): ``reason``, ``detail``,
``stream``, ``shardId``, ``sequenceNumber``, ``subSequenceNumber``, ``partitionKey``,
``approximateArrivalTimestamp`` and ``data`` (the record's bytes, base64). ``detail`` is
cut to :data:`DETAIL_MAX_CHARS` characters (a PostHog answer or a parser message can be
any length), so no detail makes an entry large.

:class:`FileSink` appends JSON lines on an ``O_APPEND`` descriptor under an exclusive
``flock`` (every shard process of a worker shares the file), finishing a line the kernel
took only part of, then fsyncs the file (and, the first time it sees that file, its
directory, so that the file itself survives a crash). So lines from processes sharing
the file never interleave (``flock`` is advisory and local: not on NFS). A file whose
last line was left unfinished (a crash, a full disk) gets a newline before our next
line, so a torn line never swallows a whole one (the file is opened read-write to see
its last byte). Good on a laptop or an EC2 volume; on ECS the file dies with the task.

:class:`KinesisSink` puts the entries into another Kinesis stream (durable, replayable
with the same tools, and served by the local emulator too), within every PutRecords
limit (see the constants below). An entry whose JSON is over the record limit is
gzipped; this consumer (and ``preview``) read gzip records transparently, up to
:data:`consumer.mapping.MAX_DECOMPRESSED_BYTES` inflated, so nothing larger is
gzipped. An entry that
does not fit even gzipped (a record of incompressible data near or over 1 MiB: its
base64 is a third larger) is written without its bytes, as::

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
reaches, so this form always fits. :class:`FileSink` never needs it: its lines are
exactly :meth:`DeadLetter.to_json`.
"""

from __future__ import annotations

import base64
import collections
import fcntl
import gzip
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from consumer.config import DeadLetterKind, Settings
from consumer.errors import DeadLetterError
from consumer.mapping import MAX_DECOMPRESSED_BYTES, KinesisRecord

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
# Our choice, not AWS's: long enough for any PostHog error answer or parser message,
# short enough that a hostile one cannot make an entry large (JSON escapes a character
# to at most 12 bytes, so at most 48 KiB).
DETAIL_MAX_CHARS = 4096
# Our choice for the entry written without its data: stream names, shard ids (128),
# sequence numbers (128 digits) and partition keys (256) never reach it (AWS service
# limits), so it cuts nothing real, and bounds that entry far below the record limit.
OMITTED_FIELD_MAX_CHARS = 1024
# Our choice: how much of an AWS error message goes into a DeadLetterError.
ERROR_MESSAGE_MAX_CHARS = 300
TOO_LARGE_REASON = "too_large_to_dead_letter"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One set-aside record: where it came from, why, and its original bytes."""

    reason: str
    detail: str
    stream: str
    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    partition_key: str
    approximate_arrival_timestamp: int
    data_base64: str

    @classmethod
    def of(
        cls, record: KinesisRecord, *, stream: str, shard_id: str, reason: str, detail: str
    ) -> DeadLetter:
        """Describe ``record`` as dead-lettered for ``reason``."""
        return cls(
            reason=reason,
            detail=detail,
            stream=stream,
            shard_id=shard_id,
            sequence_number=record.sequence_number,
            sub_sequence_number=record.sub_sequence_number,
            partition_key=record.partition_key,
            approximate_arrival_timestamp=record.arrival_millis,
            data_base64=base64.b64encode(record.data).decode("ascii"),
        )

    def to_json(self) -> str:
        """One JSON line (keys in camelCase, like the rest of the Kinesis world)."""
        return json.dumps(
            {
                "reason": self.reason,
                "detail": _clip(self.detail, DETAIL_MAX_CHARS),
                "stream": self.stream,
                "shardId": self.shard_id,
                "sequenceNumber": self.sequence_number,
                "subSequenceNumber": self.sub_sequence_number,
                "partitionKey": self.partition_key,
                "approximateArrivalTimestamp": self.approximate_arrival_timestamp,
                "data": self.data_base64,
            },
            separators=(",", ":"),
        )


class DeadLetterSink(Protocol):
    """Durably stores entries; raises :class:`DeadLetterError` if it could not."""

    def write(self, entries: Sequence[DeadLetter]) -> None:
        """Store every entry before returning."""
        ...


# Owner and group read the dead letters; they hold records' data.
DEAD_LETTER_FILE_MODE = 0o640


class FileSink:
    """Appends JSON lines to a local file (see the module docstring for what is promised)."""

    def __init__(self, path: Path) -> None:
        """Remember the path; the file and its folders are created on first write."""
        self.path = path
        # (device, inode) of the file whose directory entry we last made durable: a new
        # file (ours, another process's, or one put back after rotation) gets its
        # directory fsynced once, since its creator may not have done so yet.
        self._synced_file: tuple[int, int] | None = None

    def write(self, entries: Sequence[DeadLetter]) -> None:
        """Append and fsync ``entries``; fsync the directories this write depends on."""
        if not entries:
            return
        try:
            changed_dirs = _make_dirs(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, DEAD_LETTER_FILE_MODE)
            try:
                # Every shard process of a worker appends to the same file: the lock keeps
                # one process's lines whole even when the kernel writes part of one.
                fcntl.flock(fd, fcntl.LOCK_EX)
                separator = b"" if _ends_a_line(fd) else b"\n"
                for entry in entries:
                    _write_all(fd, separator + (entry.to_json() + "\n").encode("utf-8"), self.path)
                    separator = b""
                os.fsync(fd)
                status = os.fstat(fd)
            finally:
                os.close(fd)
            if (status.st_dev, status.st_ino) != self._synced_file:
                _fsync_dir(self.path.parent)
                self._synced_file = (status.st_dev, status.st_ino)
            for directory in changed_dirs:
                _fsync_dir(directory)
        except OSError as exc:
            raise DeadLetterError(
                f"cannot append to dead-letter file {self.path}: {exc.strerror or exc}"
            ) from exc


def _make_dirs(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; return the directories that gained one."""
    missing: list[Path] = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
    return [path.parent for path in missing]


def _ends_a_line(fd: int) -> bool:
    """Whether the file is empty or ends with a newline (no torn line to finish first)."""
    size = os.fstat(fd).st_size
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"


def _write_all(fd: int, line: bytes, path: Path) -> None:
    """Hand ``line`` to the kernel, continuing after short writes."""
    view = memoryview(line)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise DeadLetterError(
                f"dead-letter file {path} took no bytes ({len(view)} of {len(line)} left to write)"
            )
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        for chunk in _chunks(slots):
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
        f"{entry.reason}: {_clip(entry.detail, DETAIL_MAX_CHARS)}; the record's data "
        f"({len(data)} bytes) does not fit in a {KINESIS_RECORD_MAX_BYTES}-byte Kinesis "
        "record even gzipped, so it is omitted: re-read it from the source stream at this "
        "position within the stream's retention"
    )
    fields: dict[str, Any] = {
        "reason": TOO_LARGE_REASON,
        "detail": detail,
        "originalReason": _clip(entry.reason, OMITTED_FIELD_MAX_CHARS),
        "stream": _clip(entry.stream, OMITTED_FIELD_MAX_CHARS),
        "shardId": _clip(entry.shard_id, OMITTED_FIELD_MAX_CHARS),
        "sequenceNumber": _clip(entry.sequence_number, OMITTED_FIELD_MAX_CHARS),
        "subSequenceNumber": entry.sub_sequence_number,
        "partitionKey": _clip(entry.partition_key, OMITTED_FIELD_MAX_CHARS),
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


def _chunks(slots: Iterable[_Slot]) -> Iterator[list[_Slot]]:
    """Consecutive slots, at most PUT_RECORDS_MAX_ENTRIES and PUT_RECORDS_MAX_BYTES a chunk."""
    chunk: list[_Slot] = []
    size = 0
    for slot in slots:
        if chunk and (
            len(chunk) == PUT_RECORDS_MAX_ENTRIES or size + slot.size > PUT_RECORDS_MAX_BYTES
        ):
            yield chunk
            chunk, size = [], 0
        chunk.append(slot)
        size += slot.size
    if chunk:
        yield chunk


def _describe(exc: Exception) -> str:
    """An AWS error for a log line, without request values (they may hold payloads)."""
    from botocore.exceptions import ClientError, ParamValidationError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "error")
        message = _clip(error.get("Message", ""), ERROR_MESSAGE_MAX_CHARS)
        return f"{code}: {message}" if message else code
    if isinstance(exc, ParamValidationError):
        # Its report quotes the offending parameter values.
        return "botocore refused the request's parameters"
    return _clip(str(exc), ERROR_MESSAGE_MAX_CHARS)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters, cut)"


def build_sink(settings: Settings) -> DeadLetterSink:
    """The sink ``settings.dead_letter`` names."""
    target = settings.dead_letter
    if target.kind is DeadLetterKind.FILE:
        return FileSink(Path(target.location))
    from consumer.aws import client

    return KinesisSink(client(settings, "kinesis"), target.location)
