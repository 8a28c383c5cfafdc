"""Shard state files: what ``health`` judges and what the progress line sums up.

Every shard process keeps one small JSON file fresh in the worker's state folder
(``<tmp>/kinesis-posthog/<applicationName>``, one per application on a host): when a
batch arrives (``inFlightSince``) and when it is delivered (``lastProgress``), with its
lag and running totals. The lag is the larger of the daemon's ``millisBehindLatest``
(0 whenever one read reached the tip, however old the records) and the age of the
batch's newest record (its arrival time in Kinesis): how far behind real time the shard
is. A file is written whole (temporary file,
then rename) and removed when its shard process ends.

``health`` (an ECS container health check) tells a stuck worker from an idle one:

* stuck: a batch in flight for longer than ``stall`` (PostHog refusing or unreachable:
  delivery keeps retrying and nothing can be checkpointed), or a shard behind the tip
  with no batch delivered for ``stall`` (the daemon stopped feeding it);
* healthy: no shard yet (starting, or no lease), shards at the tip however long idle
  (KCL sends no empty batches), batches going through.

Files of processes that no longer exist are ignored (a crash leaves one behind).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STATE_DIR_NAME = "kinesis-posthog"
# A shard whose lag is above this counts as behind: more than KCL's polling interval
# (1.5 s) and a batch's delivery, which a shard at the tip shows anyway.
BEHIND_MILLIS = 10_000
SUFFIX = ".json"


def state_dir(application: str, base: Path | None = None) -> Path:
    """The worker's state folder: one per user and application on a host."""
    owner = f"{STATE_DIR_NAME}-{os.getuid()}"  # never a folder another user made
    return (base or Path(tempfile.gettempdir())) / owner / application


@dataclass
class ShardState:
    """One shard process's state, as its file holds it (wall-clock seconds)."""

    shard: str
    pid: int
    updated: float
    in_flight_since: float | None = None
    last_progress: float | None = None
    lag_millis: int | None = None
    # The daemon's own millisBehindLatest: 0 at the tip however old the last records, so
    # an idle shard never looks behind to `health` (the lag above is for progress).
    behind_millis: int | None = None
    delivered: int = 0
    dead_lettered: int = 0


class StateFile:
    """The file one shard process keeps fresh."""

    def __init__(self, folder: Path, shard: str, clock: Callable[[], float] = time.time) -> None:
        """``folder`` is created when first written."""
        self._folder = folder
        self._path = folder / f"{shard}{SUFFIX}"
        self._clock = clock
        self.state = ShardState(shard=shard, pid=os.getpid(), updated=clock())
        self._failed = False

    def batch_arrived(self, lag_millis: int, behind_millis: int | None) -> None:
        """A batch is in flight from now on."""
        self.state.in_flight_since = self._clock()
        self.state.lag_millis = lag_millis
        if behind_millis is not None:
            self.state.behind_millis = behind_millis
        self._save()

    def batch_done(self, delivered: int, dead_lettered: int) -> None:
        """The batch is delivered or dead-lettered: progress."""
        now = self._clock()
        self.state.in_flight_since = None
        self.state.last_progress = now
        self.state.delivered += delivered
        self.state.dead_lettered += dead_lettered
        self._save()

    def remove(self) -> None:
        """The shard process is ending."""
        with contextlib.suppress(OSError):
            self._path.unlink(missing_ok=True)

    def _save(self) -> None:
        """Write the file whole.

        A failure (a full or read-only disk) never stops delivery: it is logged once,
        and ``health`` then sees no file for this shard.
        """
        self.state.updated = self._clock()
        temporary = self._path.with_suffix(f".{os.getpid()}.tmp")
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(asdict(self.state)), encoding="utf-8")
            temporary.replace(self._path)
        except OSError as exc:
            if not self._failed:
                log.warning(
                    "shard %s: cannot keep its health state file: %s", self.state.shard, exc
                )
            self._failed = True


def read_states(folder: Path, alive: Callable[[int], bool] | None = None) -> list[ShardState]:
    """The states of live shard processes in ``folder`` (none if it does not exist)."""
    alive = alive or _alive
    states: list[ShardState] = []
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            state = ShardState(**json.loads(path.read_text(encoding="utf-8")))
            if alive(state.pid):
                states.append(state)
    return states


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def problems(states: Iterable[ShardState], now: float, stall: float) -> list[str]:
    """Why the worker is stuck, one line per shard; empty when it is healthy."""
    found: list[str] = []
    for state in states:
        if state.in_flight_since is not None and now - state.in_flight_since > stall:
            found.append(
                f"shard {state.shard}: a batch not delivered for {now - state.in_flight_since:.0f} s "
                "(PostHog refusing or unreachable; see the shard's log lines)"
            )
            continue
        behind = (state.behind_millis or 0) > BEHIND_MILLIS
        since = state.last_progress if state.last_progress is not None else state.updated
        if behind and now - since > stall:
            found.append(
                f"shard {state.shard}: {state.behind_millis} ms behind the tip and no batch "
                f"for {now - since:.0f} s (the daemon is not feeding it)"
            )
    return found
