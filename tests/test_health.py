"""consumer/health.py: state files a shard process keeps, and the verdict ``health`` gives."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from consumer.health import BEHIND_MILLIS, ShardState, StateFile, problems, read_states, state_dir

STALL = 300.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_state_file_follows_its_batches(tmp_path: Path) -> None:
    clock = Clock()
    state = StateFile(tmp_path, "shardId-000000000001", clock)
    state.batch_arrived(5000, 3000)
    (read,) = read_states(tmp_path)
    assert (read.in_flight_since, read.lag_millis, read.behind_millis, read.pid) == (
        clock.now,
        5000,
        3000,
        os.getpid(),
    )
    clock.now += 2
    state.batch_done(delivered=9, dead_lettered=1)
    (read,) = read_states(tmp_path)
    assert (read.in_flight_since, read.last_progress, read.delivered, read.dead_lettered) == (
        None,
        clock.now,
        9,
        1,
    )
    state.remove()
    assert read_states(tmp_path) == []


def test_files_of_dead_processes_and_torn_files_are_ignored(tmp_path: Path) -> None:
    dead = ShardState(shard="shardId-1", pid=2**22 + 12345, updated=0.0)
    (tmp_path / "shardId-1.json").write_text(json.dumps(dead.__dict__))
    (tmp_path / "shardId-2.json").write_text('{"shard": "shardId-2", "pi')
    assert read_states(tmp_path) == []
    assert read_states(tmp_path / "missing") == []


def test_the_state_folder_is_per_application(tmp_path: Path) -> None:
    assert state_dir("app-a", tmp_path) != state_dir("app-b", tmp_path)


NOW = 10_000.0


@pytest.mark.parametrize(
    ("state", "stuck"),
    [
        # A batch in flight too long: PostHog refusing or unreachable.
        (ShardState("s", 1, NOW, in_flight_since=NOW - STALL - 1, last_progress=NOW - 999), True),
        # A batch in flight, but not for long: retries are normal.
        (ShardState("s", 1, NOW, in_flight_since=NOW - 60, last_progress=NOW - 999), False),
        # Behind the tip and nothing delivered for long: the daemon stopped feeding it.
        (
            ShardState(
                "s", 1, NOW, last_progress=NOW - STALL - 1, behind_millis=BEHIND_MILLIS * 90
            ),
            True,
        ),
        # At the tip and idle for hours: healthy (KCL sends no empty batches).
        (ShardState("s", 1, NOW, last_progress=NOW - 7200, behind_millis=0), False),
        # At the tip but its last records were old when read (a backfill's end, a replay),
        # then idle: the daemon's 0 decides, not the records' age.
        (
            ShardState("s", 1, NOW, last_progress=NOW - 7200, lag_millis=60_000, behind_millis=0),
            False,
        ),
        # Behind but delivering: catching up.
        (
            ShardState("s", 1, NOW, last_progress=NOW - 2, behind_millis=BEHIND_MILLIS * 90),
            False,
        ),
        # Just started, nothing delivered yet, behind: judged from its start.
        (ShardState("s", 1, NOW - 10, behind_millis=BEHIND_MILLIS * 90), False),
    ],
)
def test_stuck_or_healthy(state: ShardState, stuck: bool) -> None:
    assert bool(problems([state], NOW, STALL)) is stuck


def test_no_shard_is_healthy() -> None:
    """A worker starting, or holding no lease, is not stuck."""
    assert problems([], NOW, STALL) == []


def test_a_state_file_that_cannot_be_written_never_stops_delivery(tmp_path: Path) -> None:
    """A read-only or full disk, or a path taken by a file: logged once, no exception."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    state = StateFile(blocked / "app", "shardId-1")
    state.batch_arrived(0, 0)
    state.batch_done(delivered=1, dead_lettered=0)
    state.remove()
    assert read_states(blocked / "app") == []


def test_the_state_folder_is_per_user(tmp_path: Path) -> None:
    assert str(os.getuid()) in state_dir("app", tmp_path).parent.name
