"""The shard process's side of the KCL multilang protocol: amazon-kclpy's, read faster.

:func:`serve` replaces ``amazon_kclpy.kcl.KCLProcess(processor).run()`` and promises the
same conversation with the daemon: for each line the daemon writes, the processor gets
the same call with the same values, and the daemon reads the same bytes back. What it
changes is how a line is read, because that is the part of a shard process's work which
amazon-kclpy makes slow and large:

* speed: amazon-kclpy decodes each line with ``json.loads(object_hook=...)``, which builds
  a ``Record`` per record (with a copy of its dict and a local-time ``datetime`` nobody
  reads). Here the line is read as bytes (into one reused buffer,
  :class:`~consumer.lines.LineReader`), decoded by orjson, and each record becomes
  the :class:`~consumer.record.KinesisRecord` the mapper reads (:func:`record_of`, or
  written out in :func:`_records_of`, where a part is decoded).
  Reading 10 lines of 10,000 records took about 5.2 µs of CPU per record through
  ``KCLProcess.run`` and 2.8 here (a processor only reading the fields), and the
  processor no longer converts each record again.
* memory: amazon-kclpy's loop keeps the previous line (7 MB of text for 10,000 records)
  alive while it reads and decodes the next. Here a line is released as soon as it is
  decoded, and its message once it is answered, so at most one line (and the reader's
  buffer) is in memory; and a
  ``processRecords`` line is decoded in parts (:func:`_process_records_in_parts`), never
  all its records' dicts at once (the shard process's peak RSS in ``./run.sh bench``:
  50 MiB, 68 with amazon-kclpy's loop).

Everything else is still amazon-kclpy's: ``KCLProcess`` builds the writer, the
``Checkpointer`` and the adapter for older processor versions; each message is the
``amazon_kclpy.messages`` class ``dispatch.message_decode`` makes of it; a checkpoint is
asked for, and the daemon's answer read and turned into ``CheckpointError``, by the
``Checkpointer`` itself. ``tests/test_protocol.py`` feeds the same lines to both loops
and compares what the processor was given and what the daemon was told.

What amazon-kclpy does with lines the daemon does not write is kept too: a line that is
not JSON (a blank one included), names no known action or holds a record missing a
field ends the process with the exception; an exception from the processor is written
to stderr and the message is acknowledged anyway (ours turns its own into
``SystemExit``, which ends the process); EOF returns.

What differs, on purpose: a record is a :class:`~consumer.record.KinesisRecord`, not
amazon-kclpy's ``Record`` (consumer/processor.py takes either). On input the daemon never writes: a JSON
object nested in a record's fields is passed on as it is where amazon-kclpy's hook would
refuse it (``MalformedAction``); an arrival time amazon-kclpy's ``datetime`` cannot hold
(past the year 9999) is passed on; orjson refuses a line with invalid UTF-8, an escaped lone surrogate or
``NaN`` that ``json`` reads (Jackson writes none of them) and reads an integer beyond 64
bits as a float (every number the daemon writes is a Java ``long``); a record whose
``sequenceNumber`` or ``partitionKey`` is not text (JSON null, a number) ends the process
with ``TypeError``, as a missing field does, where amazon-kclpy would pass it on.
"""

from __future__ import annotations

import binascii
import traceback
from typing import IO, Any, NoReturn, Protocol

import orjson
import pybase64
from amazon_kclpy import dispatch, kcl

from consumer.lines import LineReader, Readable
from consumer.record import KinesisRecord

# What the daemon calls a record inside a processRecords message (JsonFriendlyRecord).
_RECORD_ACTION = "record"
# How Jackson starts a processRecords line, and ends each record in it; the fields of a
# record as it writes them (scripts/bench/messages.py; tests/test_bench.py holds the
# daemon's own output).
_PROCESS_RECORDS = "processRecords"
_RECORDS_START = b'{"action":"' + _PROCESS_RECORDS.encode() + b'","records":['
_RECORD_END = b'"action":"record"}'
# How much of a line is decoded at once (some 90 records of 740 bytes): one orjson call
# per part, while the dicts of the whole line are never all there at once.
PART_BYTES = 64 * 1024
_RECORD_FIELDS = frozenset(
    {
        "data",
        "partitionKey",
        "sequenceNumber",
        "approximateArrivalTimestamp",
        "subSequenceNumber",
        "action",
    }
)
# Returned at EOF, where a line of JSON could decode to anything, None included.
_EOF = object()


class ShardProcessor(Protocol):
    """An amazon-kclpy record processor (``amazon_kclpy.v3.processor``), as called here."""

    @property
    def version(self) -> int:
        """amazon-kclpy's processor interface version (3; 1 and 2 are adapted)."""

    def initialize(self, initialize_input: Any) -> None:
        """The shard and where it starts (``InitializeInput``)."""

    def process_records(self, process_records_input: Any) -> None:
        """Records and a checkpointer (``ProcessRecordsInput``)."""

    def lease_lost(self, lease_lost_input: Any) -> None:
        """Another worker took the shard (``LeaseLostInput``)."""

    def shard_ended(self, shard_ended_input: Any) -> None:
        """The shard was split or merged (``ShardEndedInput``)."""

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        """The worker is stopping (``ShutdownRequestedInput``)."""


def from_base64(text: str) -> bytes:
    """What ``binascii.a2b_base64`` reads from ``text``, faster for the daemon's base64.

    pybase64's SIMD decoder reads base64 (what Jackson writes for a ``byte[]``) in 0.4 µs
    for a 405-byte record, where binascii takes 2.2. Only text it validates (the base64
    alphabet, padded) is read by it, and for that the bytes are binascii's; anything else
    goes to binascii, which reads (or refuses) it as before. (tests/test_protocol.py
    compares the two.)
    """
    try:
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return binascii.a2b_base64(text)


def record_of(fields: dict[str, Any]) -> KinesisRecord:
    """One record of a ``processRecords`` message, as the processor maps it.

    The daemon writes ``data`` as the record's bytes in base64 (Jackson's ``byte[]``)
    and ``approximateArrivalTimestamp`` in epoch milliseconds. Fields are read in
    amazon-kclpy's ``Record``'s order, with int() on the timestamp, so a record missing a
    field, or whose timestamp is no number, raises the same exception as there; a null
    ``subSequenceNumber`` (an older daemon) is 0, as the processor reads it.
    """
    sequence_number = fields["sequenceNumber"]
    sub_sequence_number = fields["subSequenceNumber"]
    arrival_millis = int(fields["approximateArrivalTimestamp"])
    partition_key = fields["partitionKey"]
    data = fields["data"]
    for name, value in (("sequenceNumber", sequence_number), ("partitionKey", partition_key)):
        if type(value) is not str:
            # Text in every line the daemon writes; KinesisRecord, compiled
            # (consumer/hot_path.py), takes nothing else, and Python would take anything:
            # refused here, the line ends the process in both builds alike.
            raise TypeError(f"a record's {name} is {type(value).__name__}, not text")
    # Positional (data, partition key, sequence, subsequence, arrival): cheaper per record.
    return KinesisRecord(
        from_base64(data),
        partition_key,
        sequence_number,
        int(sub_sequence_number or 0),
        arrival_millis,
    )


class _TextLines:
    """``stdin``'s lines as text: the file amazon-kclpy's ``Checkpointer`` reads its answer from."""

    def __init__(self, lines: LineReader) -> None:
        self._lines = lines

    def readline(self) -> str:
        # The daemon writes UTF-8 (Jackson's default) whatever this process's locale.
        return self._lines.readline().decode("utf-8")


def serve(processor: ShardProcessor, stdin: Readable, stdout: IO[str], stderr: IO[str]) -> None:
    """Answer the daemon's messages on ``stdin`` until it closes it (EOF), as ``KCLProcess.run``.

    ``stdin`` is read as bytes (:func:`consumer.pipes.take`), by :class:`~consumer.lines.LineReader`;
    status lines and checkpoint requests go to ``stdout``, errors amazon-kclpy would
    report to ``stderr``. Raises what ``KCLProcess.run`` raises: ``SystemExit`` from the
    processor, and a line that cannot be read as a message.
    """
    lines = LineReader(stdin)
    # Only its run loop is replaced: the writer, the Checkpointer (which reads its answers
    # through _TextLines) and the adapter for v1/v2 processors are amazon-kclpy's.
    kclpy = kcl.KCLProcess(processor, _TextLines(lines), stdout, stderr)
    while (action := _next_action(lines)) is not _EOF:
        _dispatch(action, kclpy)
        kclpy.io_handler.write_action({"action": "status", "responseFor": action.action})
        # Released before the next line is read: its records may be 10,000 objects.
        del action


def _next_action(lines: LineReader) -> Any:
    """The next line's message as amazon-kclpy decodes it, or :data:`_EOF`.

    The line is decoded where the reader holds it, before anything reads again.
    """
    line, start, stop = lines.readline_in_place()
    if start == stop:
        return _EOF
    message = None
    if line.startswith(_RECORDS_START, start, stop):
        message = _process_records_in_parts(line, start, stop)
    if message is None:
        with memoryview(line) as view, view[start:stop] as text:
            # A blank or truncated line raises, as json.loads does.
            message = orjson.loads(text)
    return _as_kclpy_reads(message)


def _process_records_in_parts(
    line: bytes | bytearray, start: int = 0, stop: int | None = None
) -> dict[str, Any] | None:
    """A ``processRecords`` line as the daemon writes it, decoded in parts; else None.

    Decoding a 10,000-record line at once holds the line, orjson's copy of it and every
    record's dict together (some 26 MB for 7 MB of text); decoded a part (some 64 KB) at
    a time, each part's dicts are gone once its records are made (a shard process's peak
    RSS in ``./run.sh bench``: 66 MiB decoding the line whole, 50 MiB this way). The result is what
    ``orjson.loads(line)`` gives, with the records already made: Jackson writes each
    record's fields in one order, ``"action":"record"`` last, and those bytes cannot
    occur inside a record (a quote inside a string is escaped, and no other key ends
    in ``action``), so the line can be cut after any of them. Each part (records
    joined by ",") is then decoded alone; only if every part is records, the parts are
    joined by "," and closed by "]", and the rest of the line decodes, is the line read
    this way: valid parts in valid places make the whole line valid JSON with these
    values. Anything else (a line
    not written by the daemon, a field the daemon does not write) returns None, and
    the line is decoded whole, as before. The line is ``line[start:stop]``: nothing
    outside it is read.
    """
    stop = len(line) if stop is None else stop
    try:
        records, end = _records_in_parts(line, start, stop)
        rest = _rest_of_message(line[end + 1 : stop])
    except _NotAsWrittenError:
        return None
    return {"action": _PROCESS_RECORDS, "records": records, **rest}


class _NotAsWrittenError(Exception):
    """A processRecords line the daemon would not write: it is decoded whole instead."""


def _records_in_parts(
    line: bytes | bytearray, first: int, stop: int
) -> tuple[list[KinesisRecord], int]:
    """The records of the processRecords line ``line[first:stop]``, and where its "]" is.

    A part is the records up to the first record end :data:`PART_BYTES` or more past its
    start: decoded as one array, so orjson is called once per part, not per record.
    """
    records: list[KinesisRecord] = []
    start = first + len(_RECORDS_START)
    if line[start : min(start + 1, stop)] == b"]":
        raise _NotAsWrittenError  # no records: nothing to gain
    while True:
        end = line.find(_RECORD_END, start + PART_BYTES, stop)
        if end < 0:
            end = line.rfind(_RECORD_END, start, stop)
            if end < 0:
                raise _NotAsWrittenError
        end += len(_RECORD_END)
        records.extend(_records_of(line[start:end]))
        after = line[end : min(end + 1, stop)]
        if after == b"]":
            return records, end
        if after != b",":
            raise _NotAsWrittenError
        start = end + 1


def _rest_of_message(rest: bytes | bytearray) -> dict[str, Any]:
    """The fields after the records ("]" and before it left out), if none is read twice."""
    if rest[:2] == b',"':
        rest = rest[1:]
    elif rest[:1] != b"}":
        raise _NotAsWrittenError  # e.g. "],}", which a whole decoding refuses
    try:
        fields = orjson.loads(b"{" + rest)
    except orjson.JSONDecodeError as exc:
        raise _NotAsWrittenError from exc
    if type(fields) is not dict or "records" in fields or "action" in fields:
        raise _NotAsWrittenError  # a key read twice: in a whole decoding the last one wins
    return fields


def _records_of(part: bytes | bytearray) -> list[KinesisRecord]:
    """The records of one part of the line, if each is a record as the daemon writes it."""
    try:
        items = orjson.loads(b"[" + part + b"]")
    except orjson.JSONDecodeError as exc:
        raise _NotAsWrittenError from exc
    b64decode = pybase64.b64decode
    try:
        # record_of(fields), written out: a call less per record. base64 that pybase64
        # does not validate raises ValueError here, and the line is then decoded whole,
        # where record_of gives it to binascii.
        return [
            KinesisRecord(
                b64decode(fields["data"], validate=True),
                fields["partitionKey"],
                fields["sequenceNumber"],
                int(fields["subSequenceNumber"] or 0),
                int(fields["approximateArrivalTimestamp"]),
            )
            if type(fields) is dict
            and len(fields) == len(_RECORD_FIELDS)
            and fields["action"] == _RECORD_ACTION
            # Text, as the daemon writes them (not, say, arrays 1,000 deep, which a whole
            # decoding would refuse)
            and type(fields["partitionKey"]) is str
            and type(fields["sequenceNumber"]) is str
            else _not_as_written()
            for fields in items
        ]
    except (KeyError, TypeError, ValueError) as exc:
        # A field the daemon does not write instead of one it does, or a null arrival
        # time: decoded whole, the line fails (or not) as it always did.
        raise _NotAsWrittenError from exc


def _not_as_written() -> NoReturn:
    raise _NotAsWrittenError


def _as_kclpy_reads(value: Any) -> Any:
    """``value`` (decoded JSON) made what ``json.loads(object_hook=message_decode)`` makes.

    That hook turns every JSON object, innermost first, into the message class its
    ``action`` names (raising ``MalformedAction`` for none or an unknown one). The records
    of a message take the fast path: a record as the daemon writes it becomes a
    :class:`Record` directly; anything else goes through the hook's rules here.
    """
    if type(value) is dict:
        decoded = {
            key: _records(item)
            if key == "records" and type(item) is list
            else _as_kclpy_reads(item)
            for key, item in value.items()
        }
        return dispatch.message_decode(decoded)
    if type(value) is list:
        return [_as_kclpy_reads(item) for item in value]
    return value


def _records(items: list[Any]) -> list[Any]:
    """A message's ``records``: one :class:`KinesisRecord` per record, 10,000 to a line."""
    return [
        record_of(item)
        if type(item) is dict and item.get("action") == _RECORD_ACTION
        else _as_kclpy_reads(item)
        for item in items
    ]


def _dispatch(action: Any, kclpy: Any) -> None:
    """Call the processor as ``KCLProcess._perform_action`` does, with its error handling.

    amazon-kclpy reports an exception from a processor method to stderr and goes on (the
    message is acknowledged); ``SystemExit`` ends the process. Kept as it is, so that a
    processor behaves here exactly as under ``KCLProcess``; ours never relies on the
    swallowing (consumer/processor.py turns any error into ``SystemExit``).
    """
    try:
        action.dispatch(kclpy.checkpointer, kclpy.processor)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - reported as amazon-kclpy reports it, then acknowledged
        error_file = kclpy.io_handler.error_file
        error_file.write(f"Caught exception from action dispatch: {exc}")
        traceback.print_exc(file=error_file)
        error_file.flush()
