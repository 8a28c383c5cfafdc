"""consumer/metrics.py: EMF lines CloudWatch turns into metrics, once a minute and at stops."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from consumer.metrics import (
    DIMENSION_SETS,
    FLUSH_EVERY_SECONDS,
    MAX_LATENCY_VALUES,
    NAMESPACE,
    ShardMetrics,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(lines: list[str], clock: Clock) -> ShardMetrics:
    return ShardMetrics(
        application="app",
        worker="host-1",
        shard="shardId-000000000001",
        write=lines.append,
        clock=clock,
        wall=lambda: 1_700_000_000.5,
    )


def test_a_line_is_valid_emf_with_every_metric_declared() -> None:
    lines: list[str] = []
    metrics = make(lines, Clock())
    metrics.records_in(10, 4200)
    metrics.delivered(events=8, requests=2, retries=1, bytes_sent=2048)
    metrics.dead_lettered(Counter({"not_json": 1, "missing_event": 1}))
    metrics.batch_latency(12.34)
    metrics.flush()
    line: dict[str, Any] = json.loads(lines[0])
    directive = line["_aws"]["CloudWatchMetrics"][0]
    assert line["_aws"]["Timestamp"] == 1_700_000_000_500
    assert directive["Namespace"] == NAMESPACE
    assert directive["Dimensions"] == [list(names) for names in DIMENSION_SETS]
    # Every dimension named is a member; every metric declared is a member.
    for names in DIMENSION_SETS:
        assert all(name in line for name in names)
    declared = {metric["Name"]: metric["Unit"] for metric in directive["Metrics"]}
    assert all(name in line for name in declared)
    assert (line["RecordsIn"], line["EventsDelivered"], line["Requests"], line["Retries"]) == (
        10,
        8,
        2,
        1,
    )
    assert (line["DeadLettered"], line["DeadLettered.not_json"]) == (2, 1)
    assert (line["BytesSent"], declared["BytesSent"]) == (2048, "Bytes")
    assert (line["BatchLatency"], declared["BatchLatency"]) == ([12.3], "Milliseconds")
    assert (line["MillisBehindLatest"], line["ShardId"], line["WorkerId"]) == (
        4200,
        "shardId-000000000001",
        "host-1",
    )


def test_counts_are_per_line_and_the_lag_is_the_latest() -> None:
    lines: list[str] = []
    clock = Clock()
    metrics = make(lines, clock)
    metrics.records_in(5, 100)
    metrics.flush()
    metrics.records_in(3, None)  # a message without the lag keeps the last one known
    metrics.flush()
    first, second = (json.loads(line) for line in lines)
    assert (first["RecordsIn"], second["RecordsIn"]) == (5, 3)
    assert second["MillisBehindLatest"] == 100


def test_a_line_is_due_once_a_minute() -> None:
    lines: list[str] = []
    clock = Clock()
    metrics = make(lines, clock)
    metrics.records_in(1, 0)
    assert not metrics.flush_if_due()
    clock.now += FLUSH_EVERY_SECONDS
    assert metrics.flush_if_due()
    assert not metrics.flush_if_due()
    assert len(lines) == 1


def test_latencies_stop_at_emfs_limit() -> None:
    lines: list[str] = []
    metrics = make(lines, Clock())
    for value in range(MAX_LATENCY_VALUES + 5):
        metrics.batch_latency(value)
    metrics.flush()
    assert len(json.loads(lines[0])["BatchLatency"]) == MAX_LATENCY_VALUES


def test_a_batch_stuck_in_flight_shows_in_the_line() -> None:
    """While PostHog is down the timer still writes lines: `BatchInFlight` says how long
    the batch has been out (the outage alarm), and drops to 0 once it is delivered."""
    lines: list[str] = []
    clock = Clock()
    metrics = make(lines, clock)
    metrics.records_in(10, 0)
    clock.now += FLUSH_EVERY_SECONDS
    assert metrics.flush_if_due()
    metrics.delivered(events=10, requests=7, retries=6, bytes_sent=100)
    metrics.flush()
    stuck, done = (json.loads(line) for line in lines)
    assert stuck["BatchInFlight"] == FLUSH_EVERY_SECONDS
    assert done["BatchInFlight"] == 0
