"""The processor driven through amazon-kclpy's KCLProcess, with the protocol in memory.

The input is what the daemon would send (including its answers to our checkpoint
requests); the output is checked line by line for what we asked the daemon to do.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from amazon_kclpy import kcl

from consumer.processor import EXIT_POSTHOG_REFUSED
from consumer.wiring import build_processor
from tests.conftest import ScriptedTransport, SettingsFactory

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


def run(settings: Any, transport: ScriptedTransport, stdin: io.StringIO) -> list[dict[str, Any]]:
    stdout, stderr = io.StringIO(), io.StringIO()
    kcl.KCLProcess(build_processor(settings, transport), stdin, stdout, stderr).run()
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
    settings: Any, monkeypatch: pytest.MonkeyPatch, errors: list[str], expected_requests: int
) -> None:
    """CheckpointError kinds are handled as documented, without real waits."""
    monkeypatch.setattr("consumer.checkpoint.time.sleep", lambda _: None)
    answers = [checkpoint_answer("1001", error) for error in errors] + [checkpoint_answer("1001")]
    out = run(
        settings,
        ScriptedTransport(200),
        lines(initialize(), process(record(1)), *answers[:expected_requests]),
    )
    assert sum(m["action"] == "checkpoint" for m in out) == expected_requests


def test_wrong_key_exits_without_checkpoint(settings: Any) -> None:
    """A 401 ends the process with EX_CONFIG and no checkpoint request."""
    stdout = io.StringIO()
    processor = build_processor(settings, ScriptedTransport(401))
    with pytest.raises(SystemExit) as caught:
        kcl.KCLProcess(
            processor, lines(initialize(), process(record(1))), stdout, io.StringIO()
        ).run()
    assert caught.value.code == EXIT_POSTHOG_REFUSED
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
