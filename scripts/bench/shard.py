"""One shard process per contender, on the same lines and the same server, N times.

Contenders: ours (``python -m consumer``, as the daemon starts it), the two alternatives
of :mod:`scripts.bench.alternatives`, and optionally another checkout of this project
(``--baseline DIR``: ``python -m consumer`` with that checkout first on ``PYTHONPATH``).
The floor is measured in this process (:mod:`scripts.bench.floor`). Runs are interleaved
(run 1 of every contender, then run 2, ...) so that a burst of load on this shared
machine spreads over all of them, and each figure is the median of its runs.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from consumer import config
from consumer.propfile import format_properties
from scripts.bench import floor
from scripts.bench.daemon import REPO_ROOT, ShardRun, run_shard

API_KEY = "phc_bench"
# The settings of the README's example (nested keys, a mapped distinct id, an event time).
SETTINGS = {
    "applicationName": "bench",
    "streamName": "bench-events",
    "eventKey": "properties.eventName",
    "additionalPropertyMappings": "properties.userId:distinct_id, properties.foo:foo, "
    "context.page.path:path",
    "timestampKey": "meta.ts",
}
OURS = "ours"
BASELINE = "baseline"


@dataclass(frozen=True, slots=True)
class Contender:
    """A shard process to measure: its command line and what it adds to the environment."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path = REPO_ROOT


def _alternative(kind: str) -> Contender:
    return Contender(kind, (sys.executable, "-m", "scripts.bench.alternatives", kind))


# executableName's default (consumer/launcher.py) starts ours.
CONTENDERS = {
    OURS: Contender(OURS, (sys.executable, "-m", "consumer")),
    "per-record": _alternative("per-record"),
    "posthog-python": _alternative("posthog-python"),
}


def ours_with(setting: str) -> Contender:
    """Ours with one setting overridden (``batchMaxEvents=2000``), as the environment does it."""
    key, _, value = setting.partition("=")
    env = {f"{config.ENV_PREFIX}{key.strip()}": value.strip()}
    return Contender(f"ours {setting}", CONTENDERS[OURS].argv, env)


def baseline(checkout: Path) -> Contender:
    """Ours as another checkout of this repository has it (to compare two versions)."""
    # `python -m` puts the working directory first on sys.path: start it in the checkout.
    where = checkout.resolve()
    return Contender(
        BASELINE, (sys.executable, "-m", "consumer"), {"PYTHONPATH": str(where)}, where
    )


class Server(Protocol):
    """A capture server in its own process that counts what it accepted."""

    name: str
    url: str

    def events(self) -> int:
        """Events accepted since the last reset."""
        ...

    def reset(self) -> None:
        """Forget what was accepted."""
        ...


@dataclass(frozen=True, slots=True)
class Workload:
    """The processRecords lines every contender is fed, and the records they hold."""

    lines: list[str]
    records: int


@dataclass
class Figures:
    """Every run of one contender on one server."""

    runs: list[ShardRun] = field(default_factory=list)
    lost: int = 0  # events the server did not count, over all runs

    @property
    def rate(self) -> float:
        """Median records/s."""
        return statistics.median(run.rate for run in self.runs)

    @property
    def cpu_us_per_record(self) -> float:
        """Median CPU microseconds of the shard process per record (less sensitive to load)."""
        return statistics.median(run.cpu_seconds / run.records * 1e6 for run in self.runs)

    @property
    def peak_rss_mib(self) -> float:
        """Median peak RSS of the shard process."""
        return statistics.median(run.peak_rss_mib for run in self.runs)


def write_properties(workdir: Path, server: Server) -> Path:
    """The properties file a worker pointed at ``server`` would have."""
    path = workdir / f"bench-{server.name}.properties"
    values = {
        **SETTINGS,
        "posthogHost": server.url,
        "deadLetter": f"file:{workdir / 'dead-letter.jsonl'}",
    }
    path.write_text(format_properties(values), encoding="utf-8")
    return path


def shard_env(properties: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """The environment the daemon gives a shard process (``consumer/launcher.py``)."""
    return {
        **os.environ,
        config.PROPERTIES_ENV: str(properties),
        config.API_KEY_ENV: API_KEY,
        **extra,
    }


def measure(
    plan: Sequence[tuple[Contender, Server]],
    workdir: Path,
    workload: Workload,
    runs: int,
    progress: Callable[[str], None],
) -> tuple[dict[str, list[float]], dict[tuple[str, str], Figures]]:
    """Run each (contender, server) of ``plan`` ``runs`` times, interleaved.

    Each round starts with the floors (every decoder of :data:`floor.DECODERS` once, in
    this process), so that they are measured in the same stretch of the machine's speed
    as the shard processes they are compared with; returns their records/s in each round too.
    """
    floors: dict[str, list[float]] = {name: [] for name in floor.DECODERS}
    results = {(c.name, s.name): Figures() for c, s in plan}
    for number in range(1, runs + 1):
        for name, rates in floors.items():
            rates.append(workload.records / floor.seconds(name, workload.lines))
        progress(
            f"run {number}/{runs} floor json {floors['json'][-1]:,.0f} records/s, "
            f"orjson {floors['orjson'][-1]:,.0f}"
        )
        for contender, server in plan:
            server.reset()
            run = run_shard(
                contender.argv,
                shard_env(write_properties(workdir, server), contender.env),
                workload.lines,
                records=workload.records,
                log_file=workdir / f"{contender.name}-{server.name}.log",
                cwd=contender.cwd,
            )
            lost = workload.records - server.events()
            figures = results[(contender.name, server.name)]
            figures.runs.append(run)
            figures.lost += lost
            progress(
                f"run {number}/{runs} {contender.name:<15} {server.name:<8} {run.rate:>10,.0f} "
                f"records/s, {run.cpu_seconds / run.records * 1e6:.1f} CPU us/record, "
                f"peak RSS {run.peak_rss_mib:.0f} MiB"
                + (f"  ({lost} events missing!)" if lost else "")
            )
    return floors, results
