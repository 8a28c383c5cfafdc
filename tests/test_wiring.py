"""Production wiring: a shard process never outlives its daemon while it waits."""

from __future__ import annotations

import pytest

from consumer.wiring import EXIT_DAEMON_GONE, orphan_aware_sleep


def test_sleeps_in_steps_while_the_daemon_lives() -> None:
    """The wait is split into short steps that add up to the delay."""
    slept: list[float] = []
    orphan_aware_sleep(100, getppid=lambda: 100, sleep=slept.append)(2.5)
    assert slept == [1.0, 1.0, 0.5]


def test_exits_when_the_daemon_is_gone() -> None:
    """Reparented (the daemon exited): the process ends instead of retrying as an orphan."""
    parents = iter([100, 1])
    slept: list[float] = []
    with pytest.raises(SystemExit) as caught:
        orphan_aware_sleep(100, getppid=lambda: next(parents), sleep=slept.append)(30)
    assert caught.value.code == EXIT_DAEMON_GONE
    assert slept == [1.0]
