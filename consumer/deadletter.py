"""Where records that cannot become events go, with the reason, before we move past them.

A record is checkpointed past only after :meth:`DeadLetterSink.write` returned, so a
sink must make the entries durable before returning:

* :class:`FileSink` appends JSON lines (one ``write`` per entry, ``O_APPEND``, then
  ``fsync``), so shard processes sharing the file do not interleave lines. Good on a
  laptop or an EC2 volume; on ECS the file dies with the task.
* :class:`KinesisSink` puts the entries into another Kinesis stream (durable, replayable
  with the same tools, and served by the local emulator too).
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from consumer.config import DeadLetterKind, Settings
from consumer.errors import DeadLetterError
from consumer.mapping import KinesisRecord

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient

log = logging.getLogger(__name__)

# Kinesis PutRecords takes at most 500 records per call, and one record's data at most
# 1 MiB (AWS service limits). A base64'd 1 MiB record is bigger than that, so large dead
# letters are gzipped; this consumer (and `preview`) read gzip records transparently.
PUT_RECORDS_MAX_ENTRIES = 500
KINESIS_RECORD_MAX_BYTES = 1024 * 1024 - 1024


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
        fields = asdict(self)
        return json.dumps(
            {
                "reason": fields["reason"],
                "detail": fields["detail"],
                "stream": fields["stream"],
                "shardId": fields["shard_id"],
                "sequenceNumber": fields["sequence_number"],
                "subSequenceNumber": fields["sub_sequence_number"],
                "partitionKey": fields["partition_key"],
                "approximateArrivalTimestamp": fields["approximate_arrival_timestamp"],
                "data": fields["data_base64"],
            },
            separators=(",", ":"),
        )


class DeadLetterSink(Protocol):
    """Durably stores entries; raises :class:`DeadLetterError` if it could not."""

    def write(self, entries: Sequence[DeadLetter]) -> None:
        """Store every entry before returning."""
        ...


class FileSink:
    """Appends JSON lines to a local file."""

    def __init__(self, path: Path) -> None:
        """Remember the path; the file and its folder are created on first write."""
        self.path = path

    def write(self, entries: Sequence[DeadLetter]) -> None:
        """Append and fsync ``entries``."""
        if not entries:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                for entry in entries:
                    os.write(fd, (entry.to_json() + "\n").encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise DeadLetterError(
                f"cannot append to dead-letter file {self.path}: {exc.strerror}"
            ) from exc


class KinesisSink:
    """Puts entries into a Kinesis stream, retrying the records PutRecords reports as failed."""

    def __init__(self, client: KinesisClient, stream_name: str) -> None:
        """Use ``client`` (built from the same endpoint and credentials as the daemon's)."""
        self._client = client
        self._stream = stream_name

    def write(self, entries: Sequence[DeadLetter]) -> None:
        """Put all entries; raise if any is still unwritten (the caller backs off and retries)."""
        from botocore.exceptions import BotoCoreError, ClientError

        pending = [
            (entry.partition_key or "dead-letter", _fit(entry.to_json().encode()))
            for entry in entries
        ]
        for start in range(0, len(pending), PUT_RECORDS_MAX_ENTRIES):
            chunk = pending[start : start + PUT_RECORDS_MAX_ENTRIES]
            try:
                answer = self._client.put_records(
                    StreamName=self._stream,
                    Records=[{"PartitionKey": key, "Data": data} for key, data in chunk],
                )
            except (BotoCoreError, ClientError) as exc:
                raise DeadLetterError(
                    f"cannot put to dead-letter stream {self._stream}: {exc}"
                ) from exc
            failed = answer.get("FailedRecordCount", 0)
            if failed:
                # Retrying the whole chunk may duplicate some dead letters; that is harmless
                # (each names its sequence number) and simpler than tracking each slot.
                raise DeadLetterError(
                    f"{failed} of {len(chunk)} dead letters were not written to {self._stream}"
                )


def _fit(data: bytes) -> bytes:
    return data if len(data) <= KINESIS_RECORD_MAX_BYTES else gzip.compress(data)


def build_sink(settings: Settings) -> DeadLetterSink:
    """The sink ``settings.dead_letter`` names."""
    target = settings.dead_letter
    if target.kind is DeadLetterKind.FILE:
        return FileSink(Path(target.location))
    from consumer.aws import client

    return KinesisSink(client(settings, "kinesis"), target.location)
