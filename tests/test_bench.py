"""The benchmark feeds the real protocol: the daemon's lines, as amazon-kclpy reads them.

The golden lines below were written by the KCL daemon's own classes (KCL 3.1.3's
``ProcessRecordsMessage``, ``InitializeMessage``, ``CheckpointMessage`` and
``ShutdownRequestedMessage``, serialised by its ``ObjectMapper`` as ``MessageWriter``
does) for the records in :func:`golden_records`.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest
from amazon_kclpy import dispatch
from amazon_kclpy import messages as kcl_messages

from scripts.bench import floor, messages, report
from scripts.bench.daemon import ShardRun, run_shard
from scripts.bench.e2e import group_cpu, less_idle
from scripts.bench.server import MinimalServer
from scripts.bench.shard import (
    API_KEY,
    CONTENDERS,
    OURS,
    Figures,
    Workload,
    shard_env,
    write_properties,
)

JACKSON_LINES = [
    '{"action":"processRecords","records":[{"data":"eyJuIjowLCJzIjoiw6kg4piDIPCfmIAgXCJxXCIgXHUwMDAxIn0=","partitionKey":"pk-é☃\\u0001\\u001F\\"\\\\/0","sequenceNumber":"49600000000000000000000000000000000000000000000000000000","approximateArrivalTimestamp":1700000000123,"subSequenceNumber":0,"action":"record"},{"data":"eyJuIjoxLCJzIjoiw6kg4piDIPCfmIAgXCJxXCIgXHUwMDAxIn0=","partitionKey":"pk-é☃\\u0001\\u001F\\"\\\\/1","sequenceNumber":"49600000000000000000000000000000000000000000000000000001","approximateArrivalTimestamp":1700000000124,"subSequenceNumber":0,"action":"record"}],"millisBehindLatest":12345}\n',
    '{"action":"initialize","shardId":"shardId-000000000000","sequenceNumber":"TRIM_HORIZON","subSequenceNumber":0}\n',
    '{"action":"checkpoint","sequenceNumber":"49600000000000000000000000000000000000000000000000000001","subSequenceNumber":0,"error":null}\n',
    '{"action":"shutdownRequested"}\n',
]


def golden_records() -> list[messages.DaemonRecord]:
    """What the daemon was given: odd characters in data and partition key."""
    return [
        messages.DaemonRecord(
            data=('{"n":' + str(n) + ',"s":"\u00e9 \u2603 \U0001f600 \\"q\\" \\u0001"}').encode(),
            partition_key='pk-\u00e9\u2603\x01\x1f"\\/' + str(n),
            sequence_number="4960000000000000000000000000000000000000000000000000000" + str(n),
            sub_sequence_number=0,
            arrival_millis=1_700_000_000_123 + n,
        )
        for n in range(2)
    ]


def test_lines_are_the_daemons_byte_for_byte() -> None:
    """Each message is the line the daemon's Jackson writes for it."""
    assert (
        messages.process_records(golden_records(), millis_behind_latest=12345) == JACKSON_LINES[0]
    )
    assert messages.initialize("shardId-000000000000") == JACKSON_LINES[1]
    sequence = "49600000000000000000000000000000000000000000000000000001"
    assert messages.checkpoint_answer(sequence, 0) == JACKSON_LINES[2]
    assert messages.shutdown_requested() == JACKSON_LINES[3]


@pytest.mark.parametrize("start", [0, 123_456])
def test_amazon_kclpy_reads_the_records_back(start: int) -> None:
    """amazon-kclpy parses a built line into the same records, every field."""
    records = list(messages.sample_records(50, start=start))
    action = json.loads(messages.process_records(records), object_hook=dispatch.message_decode)
    assert isinstance(action, kcl_messages.ProcessRecordsInput)
    read = [
        messages.DaemonRecord(
            base64.b64decode(raw.data),
            raw.partition_key,
            raw.sequence_number,
            raw.sub_sequence_number,
            raw.timestamp_millis,
        )
        for raw in action.records
    ]
    assert read == records
    assert all(len(r.sequence_number) == 56 for r in records)


def test_sample_records_are_about_405_bytes() -> None:
    """The issue's workload: JSON records of about 405 bytes."""
    sizes = [len(r.data) for r in messages.sample_records(1000)]
    assert 395 <= sum(sizes) / len(sizes) <= 415


def test_every_floor_decoder_reads_the_lines() -> None:
    """Each floor decoder reads every record of the lines (a broken one would raise)."""
    lines = messages.workload(2, 20)
    for name in floor.DECODERS:
        assert floor.seconds(name, lines) > 0


def test_a_shard_process_is_driven_to_the_last_checkpoint(tmp_path: Path) -> None:
    """Ours, started as the daemon starts it and fed two messages, delivers every event to
    the minimal server and checkpoints the last record; its peak RSS is read from /proc."""
    server = MinimalServer(tmp_path / "server.log", API_KEY)
    try:
        workload = Workload(messages.workload(2, 30), 60)
        run = run_shard(
            CONTENDERS[OURS].argv,
            shard_env(write_properties(tmp_path, server), {}),
            workload.lines,
            records=workload.records,
            log_file=tmp_path / "shard.log",
        )
        assert server.events() == 60
    finally:
        server.close()
    assert run.last_checkpoint == messages.sequence_number(59)
    assert run.checkpoints >= 1  # at shutdownRequested, if the cadence did not come first
    assert run.peak_rss_mib > 0


def test_group_cpu_counts_this_process_group() -> None:
    """The worker's CPU is summed from /proc over its process group."""
    sample = group_cpu(os.getpgrp())
    assert sample.total > 0
    assert sample.total == sum(sample.by_kind.values())
    assert sys.executable


@pytest.mark.parametrize(
    ("cpu_seconds", "idle_cores", "span", "expected"),
    [
        (5.0, 0.25, 8.0, 3.0),  # a window of 8 s at an idle 0.25 core: 2 s of it was idle work
        (0.3, 0.25, 2.0, 0.0),  # coarser samples than the idle rate: never below zero
        (5.0, 0.0, 8.0, 5.0),  # an idle worker costing nothing
    ],
)
def test_the_worker_cost_less_its_idle_work(
    cpu_seconds: float, idle_cores: float, span: float, expected: float
) -> None:
    assert less_idle(cpu_seconds, idle_cores, span) == pytest.approx(expected)


def _figures(*rates: float) -> Figures:
    """Runs of 1,000 records at these rates (the other figures do not matter here)."""
    runs = [ShardRun(1000, 1000 / rate, 50.0, 0.01, 1, None) for rate in rates]
    return Figures(runs=runs)


def test_each_ratio_is_the_ratio_of_the_medians_with_the_rounds_range(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A ratio is the ratio of the medians, printed with the range of the ratios within
    single rounds (each round's contenders paired, in order)."""
    floors = dict.fromkeys(report.FLOOR_LABELS, (90_000.0, 100_000.0, 120_000.0))
    results = {
        (OURS, "minimal"): _figures(60_000, 40_000, 50_000),
        ("per-record", "minimal"): _figures(1_000, 1_000, 1_250),
        ("posthog-python", "minimal"): _figures(8_000, 8_000, 8_000),
    }
    report.shard_table(floors, results, 1000)
    printed = capsys.readouterr().out
    # medians 50,000 and 1,000; rounds 60x, 40x and 40x
    assert "ours / per-record (same server): 50.0x (single rounds 40.0x to 60.0x)" in printed
    assert "ours / posthog-python (same server): 6.2x (single rounds 5.0x to 7.5x)" in printed
    # medians 100,000 and 50,000; rounds 1.50, 2.50 and 2.40 (paired in order: reversed,
    # they would be 2.00, 2.50 and 1.80)
    assert "vs floor (json): 2.00x (single rounds 1.50x to 2.50x) slower" in printed
    # One round has no range; rounds that do not pair up are a bug, not a figure.
    one_round: dict[str, tuple[float, ...]] = dict.fromkeys(report.FLOOR_LABELS, (100_000.0,))
    results = {(OURS, "minimal"): _figures(50_000), ("per-record", "minimal"): _figures(1_000)}
    report.shard_table(one_round, results, 1000)
    assert "ours / per-record (same server): 50.0x\n" in capsys.readouterr().out
    results[("per-record", "minimal")] = _figures(1_000, 1_000)
    with pytest.raises(ValueError, match="zip"):
        report.shard_table(one_round, results, 1000)
