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
Its lines are exactly :meth:`DeadLetter.to_json`.

The other sink, a Kinesis stream, is :mod:`consumer.kinesis_sink`; :func:`build_sink`
picks one from a :class:`DeadLetterTarget` (the ``deadLetter`` setting, parsed).

Read back (``redrive``, ``preview --dead-letter``), an entry's JSON object becomes a
:class:`DeadLetter` again by :meth:`DeadLetter.from_json`, and its record, byte for byte
the one the shard process had, by :meth:`DeadLetter.record`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import fcntl
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from consumer.errors import DeadLetterError, NotADeadLetterError
from consumer.record import KinesisRecord

# Our choice, not AWS's: long enough for any PostHog error answer or parser message,
# short enough that a hostile one cannot make an entry large (JSON escapes a character
# to at most 12 bytes, so at most 48 KiB).
DETAIL_MAX_CHARS = 4096


class DeadLetterKind(enum.StrEnum):
    """Where records that cannot become events are kept."""

    FILE = "file"
    KINESIS = "kinesis"


@dataclass(frozen=True, slots=True)
class DeadLetterTarget:
    """``file:<path>`` (JSON lines) or ``kinesis:<stream name>``."""

    kind: DeadLetterKind
    location: str


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
                "detail": clip(self.detail, DETAIL_MAX_CHARS),
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

    @classmethod
    def from_json(cls, document: Mapping[str, Any], *, dataless_reason: str) -> DeadLetter:
        """The entry :meth:`to_json` wrote, from its JSON object, decoded by the caller.

        (:func:`consumer.decoding.decode` reads an entry as the sinks write it, gzipped or
        not; it sits above this module.) An entry whose reason is ``dataless_reason`` and
        that has no ``data`` (the Kinesis sink's stand-in for one too large to store:
        :data:`consumer.kinesis_sink.TOO_LARGE_REASON`) comes back as it was read: its
        :meth:`record` is None and its :meth:`to_json` is the object read. Raises
        :class:`NotADeadLetterError` for anything else that is not an entry.
        """
        detail = document.get("detail")
        fields = {  # in this order, so the first missing one is named
            "reason": _field(document, "reason", str),
            "detail": detail if isinstance(detail, str) else "",
            "stream": _field(document, "stream", str),
            "shard_id": _field(document, "shardId", str),
            "sequence_number": _field(document, "sequenceNumber", str),
            "sub_sequence_number": _field(document, "subSequenceNumber", int),
            "partition_key": _field(document, "partitionKey", str),
            "approximate_arrival_timestamp": _field(document, "approximateArrivalTimestamp", int),
        }
        if fields["reason"] == dataless_reason and "data" not in document:
            text = json.dumps(document, separators=(",", ":"))
            return _AsRead(**fields, data_base64="", text=text)
        encoded = _field(document, "data", str)
        try:
            base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise NotADeadLetterError("data is not base64") from exc
        return cls(**fields, data_base64=encoded)

    def record(self) -> KinesisRecord | None:
        """The record exactly as the shard process had it (what :meth:`of` was given).

        None for an entry read back without its data (see :meth:`from_json`).
        """
        return KinesisRecord(
            base64.b64decode(self.data_base64),
            self.partition_key,
            self.sequence_number,
            self.sub_sequence_number,
            self.approximate_arrival_timestamp,
        )


@dataclass(frozen=True, slots=True)
class _AsRead(DeadLetter):
    """An entry read without its data: nothing to redrive, written on as it was read."""

    text: str = ""

    def to_json(self) -> str:
        """The entry as read (compact JSON): its own keys, not a DeadLetter's."""
        return self.text

    def record(self) -> None:
        """None: the entry holds no data."""


def _field(document: Mapping[str, Any], name: str, kind: type) -> Any:
    value = document.get(name)
    if type(value) is not kind:  # exact: a boolean is no sequence number
        raise NotADeadLetterError(f"{name} is missing or not a {kind.__name__}")
    return value


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


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying so, so no foreign text makes an entry large."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters, cut)"


def build_sink(
    target: DeadLetterTarget, kinesis_sink: Callable[[str], DeadLetterSink]
) -> DeadLetterSink:
    """The sink ``target`` names.

    ``kinesis_sink`` builds the stream sink from the stream's name; the wiring supplies
    it, with an AWS client, so that a file sink needs no AWS at all.
    """
    if target.kind is DeadLetterKind.FILE:
        return FileSink(Path(target.location))
    return kinesis_sink(target.location)
