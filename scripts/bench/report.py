"""The benchmark's printed figures: one table per part, medians, with the machine's load."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from collections.abc import Mapping, Sequence

from scripts.bench import shard


def _out(text: str = "") -> None:
    print(text, flush=True)


def header(args: argparse.Namespace, load: tuple[float, float, float]) -> None:
    """What was run, where."""
    # The whole worker runs once; the shard processes' figures are medians.
    runs = "" if args.e2e_only else f"; shard figures the median of {args.runs} runs"
    _out(
        f"kinesis-posthog benchmark: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start{runs}"
    )
    _out(f"command: ./run.sh bench {' '.join(sys.argv[1:])}".rstrip())


def footer(load: tuple[float, float, float]) -> None:
    """The load at the end (another engineer's runs share this machine)."""
    _out(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")


FLOOR_LABELS = {
    "json": "floor: lines + records decoded, json",
    "orjson": "floor: lines + records decoded, orjson",
    "kclpy-lines": "amazon-kclpy reading the lines alone",
    "kclpy+records": "amazon-kclpy reading the lines, + records (json)",
}


def shard_table(
    floors: Mapping[str, Sequence[float]],
    results: Mapping[tuple[str, str], shard.Figures],
    records: int,
) -> None:
    """The shard-process table (medians) and its ratios (see :func:`_ratio`).

    ``floors`` holds each floor decoder's records/s in every round, in order.
    """
    _out()
    _out(f"one shard process, {records:,} records in daemon-format processRecords lines")
    _out(f"{'':<52}{'records/s':>12}{'CPU us/rec':>12}{'peak RSS':>12}")
    for name, rates in floors.items():
        # Decoded in this process, one thread: wall time is its CPU time.
        rate = statistics.median(rates)
        _out(f"{FLOOR_LABELS[name]:<52}{rate:>12,.0f}{1e6 / rate:>12.1f}")
    for (name, server), figures in results.items():
        label = f"{name} -> {server} server"
        missing = f"  ({figures.lost} events missing)" if figures.lost else ""
        _out(
            f"{label:<52}{figures.rate:>12,.0f}{figures.cpu_us_per_record:>12.1f}"
            f"{figures.peak_rss_mib:>8.1f} MiB{missing}"
        )
    ours = results.get((shard.OURS, "minimal"))
    if ours is None:
        return
    _out()
    ours_rates = [run.rate for run in ours.runs]
    for name in ("json", "orjson"):
        by_cpu = ours.cpu_us_per_record * statistics.median(floors[name]) / 1e6
        _out(
            f"ours (minimal server) vs floor ({name}): {_ratio(floors[name], ours_rates, 2)} "
            f"slower, {by_cpu:.2f}x its CPU per record"
        )
    for name in ("per-record", "posthog-python"):
        other = results.get((name, "minimal"))
        if other is not None:
            theirs = [run.rate for run in other.runs]
            _out(f"ours / {name} (same server): {_ratio(ours_rates, theirs, 1)}")


def _ratio(numerators: Sequence[float], denominators: Sequence[float], digits: int) -> str:
    """The ratio of the medians, and the range of the ratios within single rounds.

    The ratio of the medians is the figure. The range shows how far the machine's speed,
    which moves by +-20% within a run, carried single rounds: a round runs every
    contender once, back to back, but the slow ones take minutes, so the rounds' own
    ratios are not much better paired than the medians.
    """
    of_medians = statistics.median(numerators) / statistics.median(denominators)
    ratios = sorted(a / b for a, b in zip(numerators, denominators, strict=True))
    if len(ratios) < 2:  # one round: no range
        return f"{of_medians:.{digits}f}x"
    return (
        f"{of_medians:.{digits}f}x (single rounds {ratios[0]:.{digits}f}x to "
        f"{ratios[-1]:.{digits}f}x)"
    )


def e2e_table(figures: Mapping[str, float], records: int) -> None:
    """The whole-worker figures."""
    _out()
    _out(f"whole worker (KCL daemon + shard processes), 4-shard stream of {records:,} records")
    for label, value in figures.items():
        # Cores and CPU seconds are small numbers: two decimals; rates whole.
        _out(f"{label:<60}{value:>12,.2f}" if value < 100 else f"{label:<60}{value:>12,.0f}")
