"""The progress line: one per worker every few seconds while it is behind.

While a worker is behind (a backfill, after an outage) it says its events/s, what it
delivered so far, its lag, and the estimated time to catch up.

The worker's shard processes are separate processes; the one whose shard id sorts first
among the live state files (:mod:`consumer.health`) speaks for the worker, summing
every shard's file, so a worker writes one line, not one per shard.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from consumer.health import BEHIND_MILLIS, ShardState, read_states

PROGRESS_EVERY_SECONDS = 5.0
# How every progress line starts (the local default echoes these lines to the person).
LINE_START = "worker progress:"
MILLIS = 1000


class WorkerProgress:
    """Decides when this shard process writes the worker's line, and writes it."""

    def __init__(
        self,
        folder: Path,
        shard: str,
        *,
        clock: Callable[[], float] = time.time,
        read: Callable[[Path], list[ShardState]] = read_states,
    ) -> None:
        """``folder`` is the worker's state folder; ``shard`` this process's shard."""
        self._folder = folder
        self._shard = shard
        self._clock = clock
        self._read = read
        self._last: tuple[float, int, int] | None = None  # time, delivered, lag

    def line_if_due(self) -> str | None:
        """The worker's line, if this process speaks for it and one is due."""
        now = self._clock()
        if self._last is not None and now - self._last[0] < PROGRESS_EVERY_SECONDS:
            return None
        states = self._read(self._folder)
        if not states or min(state.shard for state in states) != self._shard:
            return None
        delivered = sum(state.delivered for state in states)
        lag = max((state.lag_millis or 0) for state in states)
        previous, self._last = self._last, (now, delivered, lag)
        if lag <= BEHIND_MILLIS:
            return None
        text = f"{LINE_START} {len(states)} shards, {delivered} events delivered so far"
        if previous is None:
            return f"{text}, {lag / MILLIS:.0f} s behind"
        elapsed = max(now - previous[0], 1e-6)
        rate = (delivered - previous[1]) / elapsed
        text += f", {rate:.0f} events/s, {lag / MILLIS:.0f} s behind"
        closing = (previous[2] - lag) / elapsed  # lag milliseconds gained per second
        if closing > 0:
            return f"{text}, caught up in about {_duration(lag / closing)}"
        return f"{text}, not catching up"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
