"""consumer/telemetry.py: one batch updates the metrics, the state file and the progress line."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from consumer.health import StateFile, read_states
from consumer.metrics import ShardMetrics
from consumer.progress import WorkerProgress
from consumer.telemetry import BatchOutcome, ShardTelemetry

SHARD = "shardId-000000000001"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_batch_from_arrival_to_stop(tmp_path: Path) -> None:
    clock = Clock()
    lines: list[str] = []
    said: list[str] = []
    metrics = ShardMetrics(
        application="app", worker="w", shard=SHARD, write=lines.append, clock=clock, wall=clock
    )
    state = StateFile(tmp_path, SHARD, clock)
    telemetry = ShardTelemetry(
        metrics,
        state,
        WorkerProgress(tmp_path, SHARD, clock=clock),
        said.append,
        clock=clock,
        wall=clock,
    )
    # The daemon says 90 s behind; the newest record arrived 30 s ago: the lag is 90 s.
    telemetry.batch_arrived(10, 90_000, int((clock.now - 30) * 1000))
    (seen,) = read_states(tmp_path)
    assert seen.in_flight_since == clock.now, "health sees the batch in flight"
    clock.now += 0.25
    telemetry.batch_done(
        BatchOutcome(8, Counter({"not_json": 2}), requests=1, retries=0, bytes_sent=900)
    )
    (seen,) = read_states(tmp_path)
    assert (seen.in_flight_since, seen.delivered, seen.dead_lettered) == (None, 8, 2)
    assert said == ["worker progress: 1 shards, 8 events delivered so far, 90 s behind"]
    assert lines == [], "metrics wait for their minute"
    telemetry.stopped()
    (line,) = (json.loads(text) for text in lines)
    assert (line["RecordsIn"], line["EventsDelivered"], line["DeadLettered"]) == (10, 8, 2)
    assert line["BatchLatency"] == [250.0]
    assert read_states(tmp_path) == [], "the state file goes with the shard process"


def test_the_lag_is_the_newest_records_age_when_the_daemon_says_0(tmp_path: Path) -> None:
    """One read that reaches the tip makes millisBehindLatest 0, however old the records:
    their age still says how far behind real time the shard is."""
    clock = Clock()
    state = StateFile(tmp_path, SHARD, clock)
    metrics = ShardMetrics(application="a", worker="w", shard=SHARD, write=print, clock=clock)
    telemetry = ShardTelemetry(
        metrics,
        state,
        WorkerProgress(tmp_path, SHARD, clock=clock),
        print,
        clock=clock,
        wall=clock,
        tick=False,
    )
    telemetry.batch_arrived(200, 0, int((clock.now - 40) * 1000))
    (seen,) = read_states(tmp_path)
    assert seen.lag_millis == 40_000
    assert metrics.millis_behind_latest == 0, "the metric is the daemon's own figure"
