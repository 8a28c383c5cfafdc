"""Per-shard metrics in CloudWatch's embedded metric format (EMF), on the log stream.

Each shard process counts what it does and, once a minute (a timer, so also while a
batch is stuck in PostHog's retries, and while idle) and when it stops, writes one EMF
line to stderr: a JSON object whose ``_aws`` member
tells CloudWatch Logs to turn its values into metrics, so no agent and no
``cloudwatch:PutMetricData`` permission is needed (the awslogs driver's log events are
read as EMF). Values are what happened since the previous line (counts) or the latest
(lag); CloudWatch adds up the lines of every shard for the per-worker and
per-application views, which are separate dimension sets of the same line.

Names, units and dimensions are this module's constants; README "Metrics" lists them
with the alarms to set.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

# CloudWatch namespace of our metrics (KCL's own are in the namespace `applicationName`).
NAMESPACE = "KinesisPostHog"
# Each line counts per shard, per worker and per application (CloudWatch sums the lines).
DIMENSION_SETS = (("Application",), ("Application", "WorkerId"), ("Application", "ShardId"))
# At least this often while records flow, and at every stop (issue: "at least once a minute").
FLUSH_EVERY_SECONDS = 60.0
# EMF takes at most 100 values per metric in one line.
MAX_LATENCY_VALUES = 100

COUNTS = {
    "RecordsIn": "records the daemon handed to this shard",
    "EventsDelivered": "events PostHog answered 200 for",
    "DeadLettered": "records written to the dead-letter destination (all reasons)",
    "Requests": "HTTP requests to PostHog",
    "Retries": "requests repeated after a retryable answer",
}
UNITS = {
    **dict.fromkeys(COUNTS, "Count"),
    # How long the batch being delivered has been out (0 when none): the outage alarm.
    "BatchInFlight": "Seconds",
    "BytesSent": "Bytes",
    "BatchLatency": "Milliseconds",
    "MillisBehindLatest": "Milliseconds",
}
# One more count per reason: `DeadLettered.<reason>` (reasons: consumer.mapping.REASONS).
REASON_PREFIX = "DeadLettered."


@dataclass
class _Window:
    counts: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    bytes_sent: int = 0


class ShardMetrics:
    """What one shard process did since its last EMF line; writes the line when due."""

    def __init__(  # noqa: PLR0913 - the dimensions, and the seams tests use
        self,
        *,
        application: str,
        worker: str,
        shard: str,
        write: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``write`` takes one line (stderr in production: the log stream)."""
        self._dimensions = {"Application": application, "WorkerId": worker, "ShardId": shard}
        self._write = write
        self._clock = clock
        self._wall = wall
        self._window = _Window()
        self._last_flush = clock()
        self._in_flight_since: float | None = None
        # The processor's thread counts, a timer thread flushes.
        self._lock = threading.Lock()
        self.millis_behind_latest: int | None = None

    def records_in(self, count: int, millis_behind_latest: int | None) -> None:
        """A ``processRecords`` message arrived, this far behind the stream's tip."""
        with self._lock:
            self._window.counts["RecordsIn"] += count
            self._in_flight_since = self._clock()
            if millis_behind_latest is not None:
                self.millis_behind_latest = millis_behind_latest

    def delivered(self, events: int, requests: int, retries: int, bytes_sent: int) -> None:
        """What one delivery took (counted once it is over): no batch is out any more."""
        with self._lock:
            counts = self._window.counts
            counts["EventsDelivered"] += events
            counts["Requests"] += requests
            counts["Retries"] += retries
            self._window.bytes_sent += bytes_sent
            self._in_flight_since = None

    def dead_lettered(self, reasons: Counter[str]) -> None:
        """Records written to the dead-letter destination, by reason."""
        with self._lock:
            for reason, count in reasons.items():
                self._window.counts["DeadLettered"] += count
                self._window.counts[REASON_PREFIX + reason] += count

    def batch_latency(self, milliseconds: float) -> None:
        """How long one processRecords took, from arrival to delivered (or dead-lettered)."""
        with self._lock:
            if len(self._window.latencies) < MAX_LATENCY_VALUES:
                self._window.latencies.append(round(milliseconds, 1))

    def flush_if_due(self) -> bool:
        """Write the line if a minute has passed since the last one."""
        if self._clock() - self._last_flush < FLUSH_EVERY_SECONDS:
            return False
        self.flush()
        return True

    def flush(self) -> None:
        """Write one EMF line now (also when nothing happened: it carries the lag)."""
        with self._lock:
            line = self.line()
            self._window = _Window()
            self._last_flush = self._clock()
        self._write(json.dumps(line, separators=(",", ":")))

    def line(self) -> dict[str, object]:
        """The EMF object for the current window."""
        values: dict[str, object] = {name: self._window.counts[name] for name in COUNTS}
        values.update(
            (name, count)
            for name, count in sorted(self._window.counts.items())
            if name.startswith(REASON_PREFIX)
        )
        since = self._in_flight_since
        values["BatchInFlight"] = round(self._clock() - since, 1) if since is not None else 0
        values["BytesSent"] = self._window.bytes_sent
        if self._window.latencies:
            values["BatchLatency"] = list(self._window.latencies)
        if self.millis_behind_latest is not None:
            values["MillisBehindLatest"] = self.millis_behind_latest
        metrics = [{"Name": name, "Unit": UNITS.get(name, "Count")} for name in values]
        return {
            "_aws": {
                "Timestamp": int(self._wall() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": NAMESPACE,
                        "Dimensions": [list(names) for names in DIMENSION_SETS],
                        "Metrics": metrics,
                    }
                ],
            },
            **self._dimensions,
            **values,
        }
