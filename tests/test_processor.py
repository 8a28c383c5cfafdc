"""The processor driven through amazon-kclpy's KCLProcess, with the protocol in memory.

The input is what the daemon would send (including its answers to our checkpoint
requests); the output is checked line by line for what we asked the daemon to do.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import pytest
from amazon_kclpy import kcl

from consumer import delivery as delivery_module
from consumer.delivery import Delivery, DeliveryStats
from consumer.exits import ExitStatus
from consumer.mapping import Mapper
from consumer.record import KinesisRecord, MappedEvent, Pending
from consumer.wiring import build_processor
from tests.support import InlineExecutor, ScriptedTransport, SettingsFactory

SHARD = "shardId-000000000003"


def record(number: int, document: Any = None, data: bytes | None = None) -> dict[str, Any]:
    payload = (
        data
        if data is not None
        else json.dumps(document or {"properties": {"eventName": f"e{number}"}}).encode()
    )
    return {
        "action": "record",
        "data": base64.b64encode(payload).decode(),
        "partitionKey": f"user-{number}",
        "sequenceNumber": str(1000 + number),
        "subSequenceNumber": 0,
        "approximateArrivalTimestamp": 1_700_000_000_000 + number,
    }


def lines(*messages: dict[str, Any]) -> io.StringIO:
    return io.StringIO("".join(json.dumps(m) + "\n" for m in messages))


def initialize() -> dict[str, Any]:
    return {
        "action": "initialize",
        "shardId": SHARD,
        "sequenceNumber": "TRIM_HORIZON",
        "subSequenceNumber": 0,
    }


def process(*records: dict[str, Any]) -> dict[str, Any]:
    return {"action": "processRecords", "records": list(records), "millisBehindLatest": 0}


def checkpoint_answer(sequence: str | None, error: str | None = None) -> dict[str, Any]:
    return {
        "action": "checkpoint",
        "sequenceNumber": sequence,
        "subSequenceNumber": 0,
        "error": error,
    }


def run(
    settings: Any,
    transport: ScriptedTransport,
    stdin: io.StringIO,
    sleeps: list[float] | None = None,
) -> list[dict[str, Any]]:
    """Drive one shard process; waits are recorded in ``sleeps`` instead of slept."""
    stdout, stderr = io.StringIO(), io.StringIO()
    waits = sleeps if sleeps is not None else []
    processor = build_processor(settings, transport, sleep=waits.append)
    kcl.KCLProcess(processor, stdin, stdout, stderr).run()
    return [json.loads(line) for line in stdout.getvalue().splitlines() if line.strip()]


@pytest.fixture(name="settings")
def _settings(make_settings: SettingsFactory, tmp_path: Path) -> Any:
    return make_settings(
        deadLetter=f"file:{tmp_path / 'dead.jsonl'}",
        checkpointIntervalRecords="1",
        distinctIdKey="user",
    )


def test_delivers_then_checkpoints_the_last_record(settings: Any) -> None:
    """Events are posted, and only then is the last record's sequence number checkpointed."""
    transport = ScriptedTransport(200)
    out = run(
        settings,
        transport,
        lines(
            initialize(),
            process(record(1), record(2)),
            checkpoint_answer("1002"),
            {"action": "leaseLost"},
        ),
    )
    assert out == [
        {"action": "status", "responseFor": "initialize"},
        {"action": "checkpoint", "sequenceNumber": "1002", "subSequenceNumber": 0},
        {"action": "status", "responseFor": "processRecords"},
        {"action": "status", "responseFor": "leaseLost"},
    ]
    assert [e["event"] for e in transport.requests[0]["body"]["batch"]] == ["e1", "e2"]


def test_bad_records_are_dead_lettered_and_passed(settings: Any, tmp_path: Path) -> None:
    """A record that is not JSON goes to the dead-letter file; the shard moves on."""
    transport = ScriptedTransport(200)
    out = run(
        settings,
        transport,
        lines(
            initialize(), process(record(1), record(2, data=b"\xffnope")), checkpoint_answer("1002")
        ),
    )
    assert {"action": "checkpoint", "sequenceNumber": "1002", "subSequenceNumber": 0} in out
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(d["reason"], d["sequenceNumber"], d["shardId"]) for d in dead] == [
        ("not_utf8", "1002", SHARD)
    ]
    assert base64.b64decode(dead[0]["data"]) == b"\xffnope"


def test_lease_lost_never_checkpoints(make_settings: SettingsFactory, tmp_path: Path) -> None:
    """Delivered but not yet due: leaseLost sends no checkpoint."""
    settings = make_settings(
        deadLetter=f"file:{tmp_path / 'd.jsonl'}", checkpointIntervalRecords="1000"
    )
    out = run(
        settings,
        ScriptedTransport(200),
        lines(initialize(), process(record(1)), {"action": "leaseLost"}),
    )
    assert [m["action"] for m in out] == ["status", "status", "status"]


def test_shutdown_requested_checkpoints_what_was_delivered(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """A graceful shutdown checkpoints the delivered position even if the cadence was not due."""
    settings = make_settings(
        deadLetter=f"file:{tmp_path / 'd.jsonl'}", checkpointIntervalRecords="1000"
    )
    out = run(
        settings,
        ScriptedTransport(200),
        lines(
            initialize(),
            process(record(1)),
            {"action": "shutdownRequested"},
            checkpoint_answer("1001"),
        ),
    )
    assert {"action": "checkpoint", "sequenceNumber": "1001", "subSequenceNumber": 0} in out


def test_shard_end_checkpoints_with_no_sequence(settings: Any) -> None:
    """shardEnded checkpoints the end of the shard (null) so the children can start."""
    out = run(
        settings,
        ScriptedTransport(),
        lines(initialize(), {"action": "shardEnded"}, checkpoint_answer(None)),
    )
    assert {"action": "checkpoint", "sequenceNumber": None, "subSequenceNumber": None} in out


@pytest.mark.parametrize(
    ("errors", "expected_requests"),
    [
        (["ThrottlingException"], 2),  # throttled: retried, then written
        (["ShutdownException"], 1),  # lease gone: stop trying
        (["InvalidStateException"], 1),  # not retryable: logged, left for later
    ],
)
def test_checkpoint_errors_by_kind(
    settings: Any, errors: list[str], expected_requests: int, sleeps: list[float]
) -> None:
    """CheckpointError kinds are handled as documented, without real waits."""
    answers = [checkpoint_answer("1001", error) for error in errors] + [checkpoint_answer("1001")]
    out = run(
        settings,
        ScriptedTransport(200),
        lines(initialize(), process(record(1)), *answers[:expected_requests]),
        sleeps,
    )
    assert sum(m["action"] == "checkpoint" for m in out) == expected_requests
    assert len(sleeps) == expected_requests - 1  # one back-off per retried checkpoint


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (401, ExitStatus.CONFIG),  # a refused key (phx_ or empty behind a proxy)
        (
            (302, {"Location": "https://elsewhere.example/batch/"}, ""),
            ExitStatus.CONFIG,
        ),  # a redirect
        ((200, {}, "<html>welcome</html>"), ExitStatus.CONFIG),  # a web page, not PostHog
        (404, ExitStatus.CONFIG),  # any other 4xx: a wrong path
        (RuntimeError("a bug below the processor"), ExitStatus.UNEXPECTED),  # not foreseen
    ],
)
def test_a_stop_exits_with_its_status_and_checkpoints_nothing(
    settings: Any, answer: Any, status: ExitStatus
) -> None:
    """Each way a batch can end the shard process: its exit status, and no checkpoint."""
    stdout = io.StringIO()
    processor = build_processor(settings, ScriptedTransport(answer), sleep=lambda _: None)
    with pytest.raises(SystemExit) as caught:
        kcl.KCLProcess(
            processor, lines(initialize(), process(record(1))), stdout, io.StringIO()
        ).run()
    assert caught.value.code == status
    assert "checkpoint" not in stdout.getvalue()


def test_nothing_is_written_to_stdout_but_protocol(
    settings: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Logs never reach the real stdout (the daemon's channel)."""
    run(
        settings,
        ScriptedTransport(200),
        lines(initialize(), process(record(1)), checkpoint_answer("1001")),
    )
    assert capsys.readouterr().out == ""


def kpl(sequence: int, sub: int) -> dict[str, Any]:
    """A user record de-aggregated from a KPL record: one sequence number, its own sub-sequence."""
    return {
        **record(sequence, {"properties": {"eventName": f"kpl-{sub}"}}),
        "subSequenceNumber": sub,
    }


def test_kpl_sub_sequences_get_their_own_uuid_and_checkpoint(settings: Any) -> None:
    """Three user records of one aggregate: three uuids, and the checkpoint names the last
    sub-sequence number, so a restart resumes inside the aggregate rather than before it."""
    transport = ScriptedTransport(200)
    out = run(
        settings,
        transport,
        lines(
            initialize(),
            process(kpl(7, 0), kpl(7, 1), kpl(7, 2)),
            {"action": "checkpoint", "sequenceNumber": "1007", "subSequenceNumber": 2},
        ),
    )
    batch = transport.requests[0]["body"]["batch"]
    assert [e["event"] for e in batch] == ["kpl-0", "kpl-1", "kpl-2"]
    assert len({e["uuid"] for e in batch}) == 3
    assert {"action": "checkpoint", "sequenceNumber": "1007", "subSequenceNumber": 2} in out


@pytest.fixture(name="small_batches")
def _small_batches(make_settings: SettingsFactory, tmp_path: Path) -> Any:
    """Two events per request, so one processRecords call becomes several requests."""
    return make_settings(
        deadLetter=f"file:{tmp_path / 'dead.jsonl'}",
        checkpointIntervalRecords="1",
        batchMaxEvents="2",
    )


def test_first_part_delivered_second_part_refused_checkpoints_nothing(small_batches: Any) -> None:
    """Records 1-2 are accepted, 3-4 refused (401): the process stops and asks for no
    checkpoint at all, not even for the part that was delivered (it is re-sent, same uuids)."""
    stdout = io.StringIO()
    transport = ScriptedTransport(200, 401)
    processor = build_processor(small_batches, transport, sleep=lambda _: None)
    stdin = lines(initialize(), process(*(record(n) for n in range(1, 5))))
    with pytest.raises(SystemExit) as caught:
        kcl.KCLProcess(processor, stdin, stdout, io.StringIO()).run()
    assert caught.value.code == ExitStatus.CONFIG
    assert len(transport.requests) == 2
    assert "checkpoint" not in stdout.getvalue()


def test_first_part_delivered_second_part_retried_then_one_checkpoint(
    small_batches: Any, sleeps: list[float]
) -> None:
    """Records 1-2 accepted, 3-4 answered 503 then 200: one checkpoint, at record 4, after
    the third request; nothing is checkpointed while the second part is outstanding."""
    transport = ScriptedTransport(200, 503, 200)
    out = run(
        small_batches,
        transport,
        lines(initialize(), process(*(record(n) for n in range(1, 5))), checkpoint_answer("1004")),
        sleeps,
    )
    checkpoints = [m for m in out if m["action"] == "checkpoint"]
    assert checkpoints == [
        {"action": "checkpoint", "sequenceNumber": "1004", "subSequenceNumber": 0}
    ]
    assert len(transport.requests) == 3
    assert len(sleeps) == 1


HOSTILE = [
    b'{"properties": {"eventName": "x", "foo": "\\ud800"}}',  # lone surrogate in a value
    b'{"properties": {"eventName": "\\udfff"}}',  # lone surrogate in the event name
    b'{"properties": {"eventName": "x", "\\ud800": 1}}',  # ... in a key
    b'{"properties": {"eventName": "x"}, "ts": "0001-01-01T00:00:00+01:00"}',  # before year 1 in UTC
    b'{"properties": {"eventName": "x"}, "ts": ' + b"9" * 400 + b"}",  # 400-digit timestamp
    b'{"properties": {"eventName": "x"}, "deep": '
    + b"[" * 5000
    + b"]" * 5000
    + b"}",  # deep nesting
    b'{"properties": {"eventName": "x"}, "n": '
    + b"1" * 5000
    + b"}",  # over Python's int digit limit
    b"\x1f\x8b\x08\x00garbage",  # a gzip header and nothing valid after it
    b"",  # empty
]


def test_hostile_records_never_end_the_process(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """Each hostile record becomes an event or a dead letter; the process answers every
    message and checkpoints past all of them."""
    dead = tmp_path / "dead.jsonl"
    settings = make_settings(
        deadLetter=f"file:{dead}",
        checkpointIntervalRecords="1",
        timestampKey="ts",
        includeAllProperties="true",
    )
    records = [record(n, data=data) for n, data in enumerate(HOSTILE, start=1)]
    records.append(record(len(HOSTILE) + 1))
    last = str(1000 + len(records))
    transport = ScriptedTransport(200)
    out = run(settings, transport, lines(initialize(), process(*records), checkpoint_answer(last)))
    assert {"action": "checkpoint", "sequenceNumber": last, "subSequenceNumber": 0} in out
    assert out[-1] == {"action": "status", "responseFor": "processRecords"}
    delivered = [e for r in transport.requests for e in r["body"]["batch"]]
    entries = dead.read_text().splitlines() if dead.exists() else []
    assert len(delivered) + len(entries) == len(records), (
        "each record: one event or one dead letter"
    )


class CountingMapper:
    """Our mapper, counting the records it was asked for."""

    def __init__(self, mapper: Mapper) -> None:
        self.mapper = mapper
        self.mapped = 0

    def map(self, item: KinesisRecord) -> MappedEvent:
        self.mapped += 1
        return self.mapper.map(item)


def test_records_are_mapped_as_batches_are_sent(
    small_batches: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each request goes out once its records (and the one after) are mapped, not after all:
    a call of 10,000 records holds a batch or two of events at a time. (Requests run as
    submitted here, for exact counts; tests/test_delivery.py tests the sender thread.)"""
    monkeypatch.setattr(delivery_module, "ThreadPoolExecutor", lambda **_: InlineExecutor())
    mappers: list[CountingMapper] = []
    mapped_at_request: list[int] = []

    def judge(_batch: list[dict[str, Any]]) -> int:
        mapped_at_request.append(mappers[0].mapped)
        return 200

    processor = build_processor(small_batches, ScriptedTransport(judge=judge), sleep=lambda _: None)
    make_mapper = processor._mapper_factory

    def counting(shard_id: str) -> Any:
        mappers.append(CountingMapper(make_mapper(shard_id)))
        return mappers[-1]

    processor._mapper_factory = counting
    stdin = lines(
        initialize(), process(*(record(n) for n in range(1, 8))), checkpoint_answer("1007")
    )
    stdout = io.StringIO()
    kcl.KCLProcess(processor, stdin, stdout, io.StringIO()).run()
    assert mapped_at_request == [3, 5, 7, 7]
    assert '"sequenceNumber": "1007"' in stdout.getvalue()


def test_only_bad_records_are_dead_lettered_then_checkpointed(
    settings: Any, tmp_path: Path
) -> None:
    """A call whose every record is refused by the mapper sends nothing and still moves on."""
    transport = ScriptedTransport()
    out = run(
        settings,
        transport,
        lines(
            initialize(),
            process(record(1, data=b"nope"), record(2, data=b"[]")),
            checkpoint_answer("1002"),
        ),
    )
    assert transport.requests == []
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [d["reason"] for d in dead] == ["not_json", "not_object"]
    assert {"action": "checkpoint", "sequenceNumber": "1002", "subSequenceNumber": 0} in out


class LazyDelivery:
    """A broken delivery that returns without reading the events it was given."""

    stats = DeliveryStats()

    def deliver(self, items: Iterable[Pending]) -> None:
        next(iter(items), None)  # reads one, then returns

    def dead_letter(self, entries: Any) -> None:
        pass


def test_a_delivery_that_skips_records_checkpoints_nothing(settings: Any) -> None:
    """The position moves only when every record of the call was read: otherwise exit 70."""
    processor = build_processor(settings, ScriptedTransport(), sleep=lambda _: None)
    processor._delivery_factory = lambda _shard_id: cast("Delivery", LazyDelivery())
    stdout = io.StringIO()
    stdin = lines(initialize(), process(record(1), record(2)), checkpoint_answer("1002"))
    with pytest.raises(SystemExit) as caught:
        kcl.KCLProcess(processor, stdin, stdout, io.StringIO()).run()
    assert caught.value.code == ExitStatus.UNEXPECTED
    assert "checkpoint" not in stdout.getvalue()


def test_telemetry_follows_the_batches_and_the_stop(
    settings: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A shard process started by the daemon (telemetry on, JSON log): while a batch is out
    its state file says so; at the stop its EMF line holds the call's counts and lag, and
    the state file is gone."""
    import tempfile

    from consumer import health

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("KCL_WORKER_ID", "host-1a2b3c4d")
    folder = health.state_dir(settings.application_name)
    seen_in_flight: list[health.ShardState] = []

    def judge(_batch: list[dict[str, Any]]) -> int:
        seen_in_flight.extend(health.read_states(folder))
        return 200

    message = process(record(1), record(2), record(3, data=b"not json"))
    message["millisBehindLatest"] = 4200
    stdin = lines(
        initialize(),
        message,
        checkpoint_answer("1003"),
        {"action": "shutdownRequested"},
    )
    stdout, stderr = io.StringIO(), io.StringIO()
    processor = build_processor(
        settings, ScriptedTransport(judge=judge), sleep=lambda _: None, telemetry=True
    )
    kcl.KCLProcess(processor, stdin, stdout, stderr).run()
    (state,) = seen_in_flight
    # The records arrived in 2023: their age, not the daemon's 4200 ms, is the lag.
    assert state.shard == SHARD
    assert state.lag_millis is not None
    assert state.lag_millis > 4200
    assert state.in_flight_since is not None
    emf = [json.loads(line) for line in capfd.readouterr().err.splitlines() if '"_aws"' in line]
    assert len(emf) == 1
    (line,) = emf
    assert (line["RecordsIn"], line["EventsDelivered"], line["DeadLettered.not_json"]) == (3, 2, 1)
    assert (line["MillisBehindLatest"], line["ShardId"], line["WorkerId"]) == (
        4200,
        SHARD,
        "host-1a2b3c4d",
    )
    assert line["Requests"] == 1
    assert line["BytesSent"] > 0
    assert health.read_states(folder) == []
