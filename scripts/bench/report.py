"""The benchmark's printed figures: one table per part, medians, with the machine's load."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Mapping

from scripts.bench import shard


def _out(text: str = "") -> None:
    print(text, flush=True)


def header(args: argparse.Namespace, load: tuple[float, float, float]) -> None:
    """What was run, where."""
    _out(
        f"kinesis-posthog benchmark: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start; "
        f"each figure the median of {args.runs} runs"
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
    floors: Mapping[str, float], results: Mapping[tuple[str, str], shard.Figures], records: int
) -> None:
    """The shard-process table and its ratios."""
    _out()
    _out(f"one shard process, {records:,} records in daemon-format processRecords lines")
    _out(f"{'':<52}{'records/s':>12}{'CPU us/rec':>12}{'peak RSS':>12}")
    for name, rate in floors.items():
        # Decoded in this process, one thread: wall time is its CPU time.
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
    for name in ("json", "orjson"):
        by_cpu = ours.cpu_us_per_record * floors[name] / 1e6
        _out(
            f"ours (minimal server) vs floor ({name}): {floors[name] / ours.rate:.2f}x slower, "
            f"{by_cpu:.2f}x its CPU per record"
        )
    for name in ("per-record", "posthog-python"):
        other = results.get((name, "minimal"))
        if other is not None:
            _out(
                f"ours / {name} (same server): {ours.rate / other.rate:.1f}x"
                f"{_round_ratios(ours, other)}"
            )


def _round_ratios(ours: shard.Figures, other: shard.Figures) -> str:
    """The ratio within each round, lowest to highest: how far the machine moved it.

    Each round runs ours (a second or two) and the other (up to minutes) one after the
    other; the machine's speed moves by +-20% within a run, and the ratio of medians
    hides how much of that a single round caught.
    """
    ratios = sorted(a.rate / b.rate for a, b in zip(ours.runs, other.runs, strict=True))
    if len(ratios) < 2:  # a range needs two rounds
        return ""
    return f" (rounds: {ratios[0]:.1f}x to {ratios[-1]:.1f}x)"


def e2e_table(figures: Mapping[str, float], records: int) -> None:
    """The whole-worker figures."""
    _out()
    _out(f"whole worker (KCL daemon + shard processes), 4-shard stream of {records:,} records")
    for label, value in figures.items():
        _out(f"{label:<60}{value:>12,.1f}")
