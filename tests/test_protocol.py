"""consumer.protocol.serve speaks amazon-kclpy's protocol: the daemon's lines fed to it and to
``KCLProcess.run`` give the processor the same calls and the daemon the same answers.

The lines are the daemon's own, byte for byte (scripts/bench/messages.py, checked against its
Jackson in tests/test_bench.py), including its answers to checkpoints. Each scenario runs
once through each loop; stdout, the processor's calls (every value it was given, by repr,
so 0 and 0.0 or None and a missing value differ), the errors reported on stderr and how
the loop ended must be the same.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import json
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import hypothesis
import orjson
import pytest
from amazon_kclpy import dispatch, kcl
from amazon_kclpy.checkpoint_error import CheckpointError
from amazon_kclpy.v3 import processor as v3
from hypothesis import given
from hypothesis import strategies as st

from consumer import protocol
from consumer.exits import ExitStatus
from consumer.lines import LineReader
from consumer.processor import _to_record
from consumer.protocol import serve
from consumer.wiring import build_processor
from scripts.bench import messages
from tests.support import ScriptedTransport, SettingsFactory

SHARD = messages.SHARD_ID
LEASE_LOST = '{"action":"leaseLost"}\n'  # LeaseLostMessage: its action alone
SHARD_ENDED = '{"action":"shardEnded"}\n'  # ShardEndedMessage: its action alone
SHUTDOWN = messages.shutdown_requested()
INIT = messages.initialize(SHARD)


def batch(start: int, count: int, millis_behind: int = 0) -> str:
    """A processRecords line of ``count`` consecutive sample records."""
    return messages.process_records(list(messages.sample_records(count, start)), millis_behind)


def answer(number: int | None, error: str | None = None, sub: int | None = 0) -> str:
    """The daemon's answer to a checkpoint at record ``number`` (None: the shard's end)."""
    sequence = None if number is None else messages.sequence_number(number)
    line = messages.checkpoint_answer(sequence, None if number is None else sub)
    if error is None:
        return line
    return line.replace('"error":null', f'"error":{messages.jackson_string(error)}')


def odd_records() -> str:
    """Keys with non-ASCII, control characters and quotes; KPL sub-sequences; a null one."""
    keys = ['pk-\u00e9\u2603\U0001f600\x01\x1f"\\/', "\u65e5\u672c", ""]
    records = [
        messages.DaemonRecord(
            b'{"s":"\\u00e9 \xe2\x98\x83"}',
            key,
            messages.sequence_number(7),
            sub,
            1_700_000_000_000,
        )
        for sub, key in enumerate(keys)
    ]
    line = messages.process_records(records, millis_behind_latest=86_400_000)
    # The first record's subSequenceNumber as null (a Long the daemon may leave unset).
    return line.replace('"subSequenceNumber":0,', '"subSequenceNumber":null,', 1)


def with_record_field(line: str, old: str, new: str) -> str:
    """``line`` with one field of its first record rewritten (input the daemon never writes)."""
    assert old in line
    return line.replace(old, new, 1)


def with_first_data(line: str, data: str) -> str:
    """``line`` with its first record's ``data`` text replaced by ``data`` (JSON-escaped)."""
    start = line.index('"data":"') + len('"data":"')
    return line[:start] + data + line[line.index('"', start) :]


FIRST_KEY = '"partitionKey":"user-0000",'
FIRST_ARRIVAL = f'"approximateArrivalTimestamp":{messages.ARRIVAL_START_MILLIS},'

SCENARIOS = {
    # Checkpoints written after each batch, then a graceful shutdown that checkpoints again.
    "checkpoint-written": [
        INIT,
        batch(0, 3),
        answer(2),
        batch(3, 2, 500),
        answer(4),
        SHUTDOWN,
        answer(4),
    ],
    # A retryable refusal reaches the processor as CheckpointError('ThrottlingException').
    "checkpoint-throttled": [INIT, batch(0, 3), answer(2, "ThrottlingException"), LEASE_LOST],
    # The lease went to another worker between the batch and its checkpoint.
    "checkpoint-lease-gone": [INIT, batch(0, 2), answer(1, "ShutdownException"), LEASE_LOST],
    # Not a checkpoint answer where one is awaited: the Checkpointer's InvalidStateException.
    "answer-not-a-checkpoint": [INIT, batch(0, 2), LEASE_LOST, LEASE_LOST],
    # Shard end: the processor checkpoints with no sequence number, the daemon answers nulls.
    "shard-ended": [INIT, batch(0, 2), answer(1), SHARD_ENDED, answer(None)],
    # Lease lost: no checkpointer is offered and none is asked for.
    "lease-lost": [INIT, batch(0, 2), answer(1), LEASE_LOST],
    # Shutdown requested with nothing new: the processor still checkpoints, at the end.
    "shutdown-requested": [INIT, SHUTDOWN, answer(None)],
    # Unicode and control characters in keys, a null subSequenceNumber, KPL sub-sequences.
    # Started after a checkpoint (initialize names it).
    "odd-records": [
        messages.initialize(SHARD, messages.sequence_number(6)),
        odd_records(),
        answer(7, sub=2),
        SHUTDOWN,
        answer(7, sub=2),
    ],
    # An empty records list: the processor is called with none.
    "empty-records": [INIT, messages.process_records([]), SHUTDOWN, answer(None)],
    # Lines as Python's json writes them (spaces), as tests/test_processor.py and test_cli do.
    "spaced-json": [
        json.dumps(json.loads(line)) + "\n" for line in (INIT, batch(0, 2), answer(1), LEASE_LOST)
    ],
    # Stdin closes while the processor waits for a checkpoint's answer.
    "eof-awaiting-answer": [INIT, batch(0, 2)],
    # Stdin closes in the middle of a line.
    "eof-mid-line": [INIT, batch(0, 2)[:-40]],
    # The last line has no newline: it is still a message.
    "last-line-unterminated": [INIT, LEASE_LOST.rstrip("\n")],
    # A blank line is no JSON: the loop ends with the decode error.
    "blank-line": [INIT, "\n", LEASE_LOST],
    # An action amazon-kclpy does not know, and a message with none: MalformedAction.
    "unknown-action": [INIT, '{"action":"reshard"}\n', LEASE_LOST],
    "no-action": ['{"shardId":"shardId-1"}\n'],
    # "shutdown" (KCL 1's message) cannot be built by amazon-kclpy's v3 classes: TypeError.
    "shutdown-action": [INIT, '{"action":"shutdown","reason":"TERMINATE"}\n'],
    # A checkpoint answer nobody asked for: reported on stderr, then the loop ends.
    "unasked-answer": [INIT, answer(1)],
    # A line that is JSON but no object.
    "null-line": [INIT, "null\n"],
    # The processor raises: reported on stderr, the message acknowledged, the loop goes on.
    "processor-raises": [
        INIT,
        with_record_field(batch(0, 2), FIRST_KEY, '"partitionKey":"raise",'),
        LEASE_LOST,
    ],
    # The processor exits: SystemExit ends the loop at once, unacknowledged.
    "processor-exits": [INIT, with_record_field(batch(0, 2), FIRST_KEY, '"partitionKey":"exit",')],
    # A record missing a field, or with a null arrival time: amazon-kclpy's Record refuses it.
    "record-missing-field": [INIT, with_record_field(batch(0, 2), FIRST_KEY, "")],
    "record-null-arrival": [
        INIT,
        with_record_field(batch(0, 2), FIRST_ARRIVAL, '"approximateArrivalTimestamp":null,'),
    ],
    # base64 the daemon never writes, which binascii reads and pybase64's validation
    # refuses: a newline in it (MIME's), and two padded pieces run together (binascii
    # stops at the first padding). Each record's bytes are binascii's, on both loops.
    "base64-with-newline": [INIT, with_first_data(batch(0, 2), "eyJhIjoxfQ==\\n"), LEASE_LOST],
    "base64-padded-twice": [
        INIT,
        with_first_data(batch(0, 2), "eyJhIjoxfQ==eyJhIjoxfQ=="),
        LEASE_LOST,
    ],
    # Records that are not the daemon's: no action (MalformedAction), or not objects at all.
    "record-without-action": [INIT, with_record_field(batch(0, 1), ',"action":"record"', "")],
    "records-not-objects": [
        INIT,
        '{"action":"processRecords","records":[null,1,"text"],"millisBehindLatest":null}\n',
        LEASE_LOST,
    ],
}


class Recorder(v3.RecordProcessorBase):  # type: ignore[misc]
    """A v3 processor that writes down every call and every value it was given.

    It checkpoints the last record after each batch, and its last position at shard end
    and shutdown, writing down what the checkpointer answered. A record keyed ``raise``
    makes it raise, ``exit`` exit.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.position: tuple[Any, Any] = (None, None)
        self.inputs: list[weakref.ref[Any]] = []  # every processRecords input, weakly
        self.busy = False

    def initialize(self, initialize_input: Any) -> None:
        i = initialize_input
        self.calls.append(
            ("initialize", i.action, i.shard_id, i.sequence_number, i.sub_sequence_number)
        )

    def process_records(self, process_records_input: Any) -> None:
        self.inputs.append(weakref.ref(process_records_input))
        records = process_records_input.records
        # Each record as our processor reads it (consumer/processor.py's _to_record takes
        # amazon-kclpy's Record and ours alike): the two loops must agree on that.
        fields = [_as_processed(raw) for raw in records or ()]
        self.calls.append(
            (
                "process_records",
                process_records_input.action,
                process_records_input.millis_behind_latest,
                fields,
            )
        )
        keys = {row[1] for row in fields}
        if "raise" in keys:
            raise RuntimeError("a processor bug")
        if "exit" in keys:
            raise SystemExit(ExitStatus.UNEXPECTED)
        if records:
            last = _to_record(records[-1])
            self.position = (last.sequence_number, last.sub_sequence_number)
            self._checkpoint(process_records_input.checkpointer, *self.position)

    def lease_lost(self, lease_lost_input: Any) -> None:
        self.calls.append(("lease_lost", lease_lost_input.action))

    def shard_ended(self, shard_ended_input: Any) -> None:
        self.calls.append(("shard_ended", shard_ended_input.action))
        self._checkpoint(shard_ended_input.checkpointer, None, None)

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        self.calls.append(("shutdown_requested", shutdown_requested_input.action))
        self._checkpoint(shutdown_requested_input.checkpointer, *self.position)

    def _checkpoint(self, checkpointer: Any, sequence: str | None, sub: int | None) -> None:
        self.busy = True
        try:
            checkpointer.checkpoint(sequence, sub)
        except CheckpointError as exc:
            self.calls.append(("checkpoint refused", exc.value))
        except json.JSONDecodeError:
            self.calls.append(("checkpoint unanswered: stdin ended", sequence, sub))
        else:
            self.calls.append(("checkpointed", sequence, sub))
        finally:
            self.busy = False


def _as_processed(raw: Any) -> tuple[Any, ...]:
    """A record as our processor reads it (consumer/processor.py's _to_record takes
    amazon-kclpy's Record and ours alike): the two loops must agree on that."""
    if not hasattr(raw, "sequence_number"):
        return ("not a record", raw)  # amazon-kclpy passes on what is no JSON object
    return dataclasses.astuple(_to_record(raw))


@dataclass
class Outcome:
    """What one loop did with the lines."""

    stdout: str
    ended: str  # "EOF", or the exception that ended the loop
    reported: list[tuple[str, str]]  # (message, exception line) of each error on stderr
    calls: str = ""  # repr of what the recording processor saw
    effects: list[Any] = field(default_factory=list)  # what the real processor did


def ending(exc: BaseException | None) -> str:
    if exc is None:
        return "EOF"
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code})"
    if isinstance(exc, json.JSONDecodeError):  # orjson's is a subclass; its wording differs
        return "JSONDecodeError"
    return f"{type(exc).__name__}: {exc}"


def reported(stderr: str) -> list[tuple[str, str]]:
    """amazon-kclpy's reports: its message (no newline, then the traceback) and the last line."""
    chunks = stderr.split("Caught exception from action dispatch: ")[1:]
    return [(c.split("\n")[0], c.strip().rsplit("\n", 1)[-1]) for c in chunks]


def drive(loop: str, processor: Any, lines: list[str]) -> Outcome:
    """Feed ``lines`` to ``loop`` ("kclpy" or "serve") with ``processor``."""
    text = "".join(lines)
    stdout, stderr = io.StringIO(), io.StringIO()
    exc: BaseException | None = None
    try:
        if loop == "kclpy":
            kcl.KCLProcess(processor, io.StringIO(text), stdout, stderr).run()
        else:
            serve(processor, io.BytesIO(text.encode("utf-8")), stdout, stderr)
    except (Exception, SystemExit) as caught:  # noqa: BLE001 - how the loop ended is compared
        exc = caught
    return Outcome(stdout.getvalue(), ending(exc), reported(stderr.getvalue()))


@pytest.mark.parametrize("lines", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_serve_answers_as_kclprocess_does(lines: list[str]) -> None:
    """Same calls with the same values, same stdout, same reports, same ending."""
    outcomes = {}
    for loop in ("kclpy", "serve"):
        recorder = Recorder()
        outcome = drive(loop, recorder, lines)
        outcome.calls = repr(recorder.calls)
        outcomes[loop] = outcome
    assert outcomes["serve"] == outcomes["kclpy"]


def test_the_scenarios_exercise_what_they_name() -> None:
    """The comparison above is not between two loops doing nothing."""
    recorder = Recorder()
    drive("serve", recorder, SCENARIOS["checkpoint-throttled"])
    assert ("checkpoint refused", "ThrottlingException") in recorder.calls
    recorder = Recorder()
    odd = drive("serve", recorder, SCENARIOS["odd-records"])
    rows = recorder.calls[1][3]
    assert [row[3] for row in rows] == [0, 1, 2]  # a null subSequenceNumber reads as 0
    assert rows[0][1] == 'pk-\u00e9\u2603\U0001f600\x01\x1f"\\/'
    assert '"responseFor": "shutdownRequested"' in odd.stdout
    assert drive("serve", Recorder(), SCENARIOS["processor-raises"]).reported == [
        ("a processor bugTraceback (most recent call last):", "RuntimeError: a processor bug")
    ]
    assert drive("serve", Recorder(), SCENARIOS["blank-line"]).ended == "JSONDecodeError"


class WatchedLines(LineReader):
    """The line reader, noting at each read whether the line before or its message is held."""

    def __init__(self, stream: io.BytesIO, recorder: Recorder) -> None:
        super().__init__(stream)
        self.recorder = recorder
        self.viewed: list[bool] = []  # at each read: is a view of the buffer still alive?
        self.live_between_calls: list[int] = []

    def readline_in_place(self) -> tuple[bytearray, int, int]:
        self.viewed.append(_exported(self._buffer))
        if not self.recorder.busy:
            self.live_between_calls.append(sum(ref() is not None for ref in self.recorder.inputs))
        return super().readline_in_place()


def _exported(buffer: bytearray) -> bool:
    """Whether a view of ``buffer`` is alive: a bytearray cannot grow while one is."""
    try:
        buffer.append(0)
    except BufferError:
        return True
    buffer.pop()
    return False


def test_each_line_and_message_is_released_before_the_next_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Peak memory and the reused buffer: no read happens while a view of the line before
    (7 MB at 10,000 records) is alive, nor, between calls, while the previous batch's
    records are."""
    recorder = Recorder()
    made: list[WatchedLines] = []

    def watched(stream: io.BytesIO) -> WatchedLines:
        made.append(WatchedLines(stream, recorder))
        return made[-1]

    monkeypatch.setattr(protocol, "LineReader", watched)
    lines = [INIT, batch(0, 100), answer(99), batch(100, 100), answer(199), LEASE_LOST]
    serve(recorder, io.BytesIO("".join(lines).encode()), io.StringIO(), io.StringIO())
    (reader,) = made  # one reader, for the messages and the checkpoint answers alike
    # Every line (the checkpoint answers too, through readline), then EOF.
    assert reader.viewed == [False] * (len(lines) + 1)
    assert reader.live_between_calls == [0] * len(reader.live_between_calls)
    assert len(recorder.inputs) == 2


def test_the_watch_sees_a_view_left_alive() -> None:
    buffer = bytearray(b"line\n")
    assert not _exported(buffer)
    with memoryview(buffer)[:2] as view:
        assert _exported(buffer)
        assert view.tobytes() == b"li"
    assert buffer == b"line\n"


def bad_record() -> messages.DaemonRecord:
    return messages.DaemonRecord(b"\xffnot json", "pk-bad", messages.sequence_number(5), 0, 1)


REAL = {
    # Delivered (one record dead-lettered), checkpointed per batch, then shutdown.
    "delivered": (
        [200, 200],
        [
            INIT,
            messages.process_records([*messages.sample_records(5), bad_record()]),
            answer(5),
            batch(6, 4, 1000),
            answer(9),
            SHUTDOWN,
        ],
        "EOF",
    ),
    # Throttled once (one back-off), then written; shard end after.
    "throttled": (
        [200],
        [INIT, batch(0, 3), answer(2, "ThrottlingException"), answer(2), SHARD_ENDED, answer(None)],
        "EOF",
    ),
    # PostHog refuses the key: the process ends (78) without a checkpoint.
    "refused": ([401], [INIT, batch(0, 3)], f"SystemExit({ExitStatus.CONFIG.value})"),
}


@pytest.mark.parametrize(("answers", "lines", "ended"), REAL.values(), ids=REAL.keys())
def test_the_real_processor_does_the_same_under_both(
    make_settings: SettingsFactory,
    tmp_path: Path,
    answers: list[Any],
    lines: list[str],
    ended: str,
) -> None:
    """build_processor's processor with a fake transport: same stdout, requests, dead letters,
    back-offs and ending under serve as under KCLProcess."""
    outcomes = {}
    for loop in ("kclpy", "serve"):
        dead = tmp_path / f"{loop}.jsonl"
        settings = make_settings(
            deadLetter=f"file:{dead}",
            checkpointIntervalRecords="1",
            distinctIdKey="properties.userId",
        )
        transport, sleeps = ScriptedTransport(*answers), list[float]()
        processor = build_processor(settings, transport, sleep=sleeps.append)
        outcome = drive(loop, processor, lines)
        outcome.effects = [
            transport.requests,
            len(sleeps),  # back-offs (their lengths are jittered)
            dead.read_text(encoding="utf-8") if dead.exists() else None,
        ]
        outcomes[loop] = outcome
    assert outcomes["serve"] == outcomes["kclpy"]
    assert outcomes["serve"].ended == ended
    assert outcomes["serve"].effects[0], "nothing was sent"


# A processRecords line read one record at a time (consumer/protocol.py) gives what
# decoding it whole gives; these write lines as the daemon's Jackson does.
partition_keys = st.text(
    st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12
) | st.sampled_from(
    [
        '"action":"record"}',  # the bytes the line is cut after, inside a key: escaped there
        '\\"action\\":\\"record\\"},{',  # escaped quotes and backslashes
        "\\",  # a lone backslash, written as \\\\
        "}]",  # closing brackets
    ]
)
daemon_records = st.builds(
    messages.DaemonRecord,
    data=st.binary(max_size=64),
    partition_key=partition_keys,
    sequence_number=st.integers(min_value=0, max_value=10**9).map(messages.sequence_number),
    sub_sequence_number=st.integers(min_value=0, max_value=2**31),
    arrival_millis=st.integers(min_value=0, max_value=2**42),
)


def whole(line: bytes) -> dict[str, Any]:
    """The line decoded whole, its records made as the processor reads them."""
    message: dict[str, Any] = orjson.loads(line)
    message["records"] = [protocol.record_of(fields) for fields in message["records"]]
    return message


@pytest.mark.parametrize("part_bytes", [0, 150, protocol.PART_BYTES])
def test_a_line_in_place_is_read_within_its_bounds(part_bytes: int) -> None:
    """Read where the reader holds it, a line is its bytes alone: what lies around it in
    the buffer (the line before, the next one) is never read as part of it."""
    line = messages.process_records(list(messages.sample_records(40))).encode()
    before = b'{"action":"record"}],"x":1}\n'
    after = b'"action":"record"}]}\n{"action":"record"}]}\n'
    buffer = bytearray(before + line + after)
    start, stop = len(before), len(before) + len(line)
    with mock.patch.object(protocol, "PART_BYTES", part_bytes):
        assert protocol._process_records_in_parts(buffer, start, stop) == whole(line)
        # Cut just after its last record, the line is not the daemon's (decoded whole, it
        # fails) even though the bytes after the cut would close it.
        cut = line.rindex(b'"action":"record"}') + len(b'"action":"record"}')
        assert protocol._process_records_in_parts(buffer, start, start + cut) is None
        # And cut inside its first record, likewise.
        assert protocol._process_records_in_parts(buffer, start, start + 60) is None


@hypothesis.settings(max_examples=300, deadline=None)
@given(
    records=st.lists(daemon_records, min_size=1, max_size=6),
    behind=st.integers(0, 10**9),
    # Parts of one record each, of a few, and all in one (PART_BYTES, 64 KB, is more than
    # these lines): every place a line can be cut.
    part_bytes=st.sampled_from([0, 40, 150, protocol.PART_BYTES]),
)
def test_a_line_read_in_parts_is_the_line_read_whole(
    records: list[messages.DaemonRecord], behind: int, part_bytes: int
) -> None:
    """Every record, every field, the same as a whole decoding, whatever the keys hold."""
    line = messages.process_records(records, millis_behind_latest=behind).encode()
    with mock.patch.object(protocol, "PART_BYTES", part_bytes):
        parts = protocol._process_records_in_parts(line)
    assert parts is not None
    assert parts == whole(line)
    # And what amazon-kclpy itself reads from the line (KCLProcess's decoding).
    kclpy = json.loads(line, object_hook=dispatch.message_decode)
    assert [_as_processed(record) for record in kclpy.records] == [
        dataclasses.astuple(record) for record in parts["records"]
    ]
    assert kclpy.millis_behind_latest == parts["millisBehindLatest"] == behind


@pytest.mark.parametrize(
    "text",
    [
        # a space Jackson does not write, after a record
        (
            '{"action":"processRecords","records":[{"data":"","partitionKey":"k",'
            '"sequenceNumber":"1","approximateArrivalTimestamp":1,"subSequenceNumber":0,'
            '"action":"record"} ],"millisBehindLatest":0}'
        ),
        # a field the daemon does not write
        (
            '{"action":"processRecords","records":[{"data":"","partitionKey":"k","x":1,'
            '"sequenceNumber":"1","approximateArrivalTimestamp":1,"subSequenceNumber":0,'
            '"action":"record"}],"millisBehindLatest":0}'
        ),
        # a null arrival time: the whole decoding raises, as amazon-kclpy's Record does
        (
            '{"action":"processRecords","records":[{"data":"","partitionKey":"k",'
            '"sequenceNumber":"1","approximateArrivalTimestamp":null,"subSequenceNumber":0,'
            '"action":"record"}],"millisBehindLatest":0}'
        ),
        # a second "records" key, which wins in a whole decoding
        (
            '{"action":"processRecords","records":[{"data":"","partitionKey":"k",'
            '"sequenceNumber":"1","approximateArrivalTimestamp":1,"subSequenceNumber":0,'
            '"action":"record"}],"records":[],"millisBehindLatest":0}'
        ),
        # a second "action" key, likewise
        (
            '{"action":"processRecords","records":[{"data":"","partitionKey":"k",'
            '"sequenceNumber":"1","approximateArrivalTimestamp":1,"subSequenceNumber":0,'
            '"action":"record"}],"action":"leaseLost"}'
        ),
        # something after the message
        (
            '{"action":"processRecords","records":[{"data":"","partitionKey":"k",'
            '"sequenceNumber":"1","approximateArrivalTimestamp":1,"subSequenceNumber":0,'
            '"action":"record"}],"millisBehindLatest":0} {}'
        ),
        # cut short after a record
        (
            '{"action":"processRecords","records":[{"data":"","partitionKey":"k",'
            '"sequenceNumber":"1","approximateArrivalTimestamp":1,"subSequenceNumber":0,'
            '"action":"record"}'
        ),
        # a comma with nothing after it, which a whole decoding refuses
        (
            '{"action":"processRecords","records":[{"data":"","partitionKey":"k",'
            '"sequenceNumber":"1","approximateArrivalTimestamp":1,"subSequenceNumber":0,'
            '"action":"record"}],}'
        ),
        # a partition key that is no text (deep enough, a whole decoding refuses it)
        (
            '{"action":"processRecords","records":[{"data":"","partitionKey":[[[]]],'
            '"sequenceNumber":"1","approximateArrivalTimestamp":1,"subSequenceNumber":0,'
            '"action":"record"}],"millisBehindLatest":0}'
        ),
        # no records
        '{"action":"processRecords","records":[],"millisBehindLatest":0}',
    ],
)
def test_lines_the_daemon_does_not_write_are_decoded_whole(text: str) -> None:
    """Anything but the daemon's own layout takes the whole decoding, with its outcome."""
    assert protocol._process_records_in_parts(text.encode()) is None


base64_texts = (
    st.binary(max_size=48).map(lambda data: base64.b64encode(data).decode())  # canonical
    | st.text(st.sampled_from("ABCDQRxyz019+/=\n -_!é"), max_size=24)  # anything near it
)


@hypothesis.settings(max_examples=500, deadline=None)
@given(text=base64_texts)
def test_base64_is_read_as_binascii_reads_it(text: str) -> None:
    """pybase64 where it validates the text, binascii otherwise: binascii's bytes or refusal."""
    try:
        expected: bytes | str = binascii.a2b_base64(text)
    except ValueError as exc:
        expected = type(exc).__name__
    try:
        actual: bytes | str = protocol.from_base64(text)
    except ValueError as exc:
        actual = type(exc).__name__
    assert actual == expected


FIRST_SEQUENCE = f'"sequenceNumber":"{messages.sequence_number(0)}"'


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        (FIRST_KEY, '"partitionKey":null,', "partitionKey is NoneType"),  # JSON null
        (FIRST_KEY, '"partitionKey":7,', "partitionKey is int"),  # a number
        (FIRST_SEQUENCE, '"sequenceNumber":12345', "sequenceNumber is int"),  # likewise
    ],
)
def test_a_record_field_that_is_not_text_ends_the_process(old: str, new: str, said: str) -> None:
    """The daemon writes these as text; anything else ends the process before the processor
    sees the records, in the compiled build (whose KinesisRecord takes only text) as in the
    interpreted one. (amazon-kclpy would pass it on: a difference on purpose.)"""
    recorder = Recorder()
    outcome = drive("serve", recorder, [INIT, with_record_field(batch(0, 2), old, new)])
    assert outcome.ended == f"TypeError: a record's {said}, not text"
    assert [call[0] for call in recorder.calls] == ["initialize"]
