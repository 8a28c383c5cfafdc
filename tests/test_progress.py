"""consumer/progress.py: one line per worker while it is behind."""

from __future__ import annotations

from pathlib import Path

from consumer.health import ShardState
from consumer.progress import PROGRESS_EVERY_SECONDS, WorkerProgress


class Fleet:
    """Two shards' states, changed by the test."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.states = [
            ShardState("shardId-0", 1, 0.0, delivered=0, lag_millis=600_000),
            ShardState("shardId-1", 2, 0.0, delivered=0, lag_millis=300_000),
        ]

    def read(self, _folder: Path) -> list[ShardState]:
        return list(self.states)


def test_the_first_shard_speaks_for_the_worker_with_rate_lag_and_eta() -> None:
    fleet = Fleet()
    first = WorkerProgress(Path("/x"), "shardId-0", clock=lambda: fleet.now, read=fleet.read)
    other = WorkerProgress(Path("/x"), "shardId-1", clock=lambda: fleet.now, read=fleet.read)
    assert (
        first.line_if_due() == "worker progress: 2 shards, 0 events delivered so far, 600 s behind"
    )
    assert other.line_if_due() is None, "one line per worker"
    fleet.now += 10
    fleet.states[0].delivered, fleet.states[1].delivered = 30_000, 20_000
    fleet.states[0].lag_millis = 500_000  # 100 s of lag gained in 10 s
    line = first.line_if_due()
    assert line == (
        "worker progress: 2 shards, 50000 events delivered so far, 5000 events/s, "
        "500 s behind, caught up in about 50 s"
    )


def test_no_line_at_the_tip_nor_more_often_than_every_few_seconds() -> None:
    fleet = Fleet()
    progress = WorkerProgress(Path("/x"), "shardId-0", clock=lambda: fleet.now, read=fleet.read)
    assert progress.line_if_due() is not None
    fleet.now += PROGRESS_EVERY_SECONDS / 2
    assert progress.line_if_due() is None
    fleet.now += PROGRESS_EVERY_SECONDS
    for state in fleet.states:
        state.lag_millis = 0
    assert progress.line_if_due() is None


def test_a_worker_falling_behind_says_so() -> None:
    fleet = Fleet()
    progress = WorkerProgress(Path("/x"), "shardId-0", clock=lambda: fleet.now, read=fleet.read)
    progress.line_if_due()
    fleet.now += 10
    fleet.states[0].lag_millis = 700_000
    line = progress.line_if_due()
    assert line is not None
    assert line.endswith("not catching up")
