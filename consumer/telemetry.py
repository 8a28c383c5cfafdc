"""What one shard process tells its operators, in one place for the processor to call.

Per batch it updates the EMF metrics (:mod:`consumer.metrics`), the shard's state file
(:mod:`consumer.health`, read by ``health``) and, when this process speaks for the
worker, the progress line (:mod:`consumer.progress`). When the shard process stops
(shard ended, lease lost, shutdown) it writes its last metrics and removes its file.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from consumer.health import StateFile
from consumer.metrics import ShardMetrics
from consumer.progress import WorkerProgress

MILLIS = 1000
# How often the timer looks whether the minute's metrics line is due.
TICK_SECONDS = 5.0


@dataclass(frozen=True)
class BatchOutcome:
    """What delivering one ``processRecords`` message took."""

    delivered: int
    dead_lettered: Counter[str]
    requests: int
    retries: int
    bytes_sent: int


class ShardTelemetry:
    """Metrics, state file and progress line of one shard process."""

    def __init__(  # noqa: PLR0913 - its three parts, where it speaks, the tests' clocks
        self,
        metrics: ShardMetrics,
        state: StateFile,
        progress: WorkerProgress,
        say: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        tick: bool = True,
    ) -> None:
        """``say`` writes the progress line (the log, at INFO).

        ``tick`` starts the timer thread that writes the metrics once a minute (tests
        drive the flushes themselves).
        """
        self._wall = wall
        self._metrics = metrics
        self._state = state
        self._progress = progress
        self._say = say
        self._clock = clock
        self._arrived: float | None = None
        self._stop = threading.Event()
        if tick:
            threading.Thread(target=self._tick, name="metrics", daemon=True).start()

    def _tick(self) -> None:
        """Flush the metrics when due, also while a batch is stuck in retries or idle."""
        while not self._stop.wait(TICK_SECONDS):
            self._metrics.flush_if_due()

    def batch_arrived(
        self, records: int, millis_behind_latest: int | None, newest_arrival_millis: int
    ) -> None:
        """A ``processRecords`` message arrived; its delivery starts.

        The lag health and progress judge is the larger of the daemon's
        ``millisBehindLatest`` and the age of the newest record (see consumer.health).
        """
        self._arrived = self._clock()
        self._metrics.records_in(records, millis_behind_latest)
        age = int(self._wall() * MILLIS) - newest_arrival_millis
        self._state.batch_arrived(max(millis_behind_latest or 0, age, 0), millis_behind_latest)

    def batch_done(self, outcome: BatchOutcome) -> None:
        """Its events were delivered or dead-lettered."""
        if self._arrived is not None:
            self._metrics.batch_latency((self._clock() - self._arrived) * MILLIS)
        self._metrics.delivered(
            outcome.delivered, outcome.requests, outcome.retries, outcome.bytes_sent
        )
        self._metrics.dead_lettered(outcome.dead_lettered)
        self._state.batch_done(outcome.delivered, sum(outcome.dead_lettered.values()))
        line = self._progress.line_if_due()
        if line is not None:
            self._say(line)
        self._metrics.flush_if_due()

    def stopped(self) -> None:
        """The shard process is done with its shard: last metrics, no state file."""
        self._stop.set()
        self._metrics.flush()
        self._state.remove()

    def failed(self) -> None:
        """The shard process is ending on an error: its last metrics.

        The state file stays, and counts for nothing once its process is gone.
        """
        self._stop.set()
        self._metrics.flush()
