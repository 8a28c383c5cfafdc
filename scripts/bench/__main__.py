"""``./run.sh bench [--runs N] [--e2e]``: throughput of a shard process, and of a whole worker.

Shard process (always): ``--messages`` processRecords lines of ``--records-per-message``
records each, written as the KCL daemon writes them, fed to real shard processes over
their stdin and stdout (scripts/bench/daemon.py), delivering to a real HTTP server on
loopback. Printed, each the median of ``--runs`` interleaved runs, as records/s, CPU
microseconds per record and peak RSS:

* the floor: decoding those lines and records and nothing else, in this process, at the
  start of each round of runs;
* ours (``python -m consumer``) against the minimal server (scripts/bench/server.py) and
  against the capture stand-in (local/standin.py: it checks every event as PostHog's
  capture does, on the same CPUs);
* a processor POSTing each record, and one handing the events to posthog-python and
  flushing before each checkpoint (scripts/bench/alternatives.py);
* with ``--baseline DIR``, ours as another checkout has it; with ``--ours-with
  KEY=VALUE``, ours with a setting changed;
* the ratios between them.

Whole worker (``--e2e``): the real daemon and the emulators on a pre-filled 4-shard
stream (scripts/bench/e2e.py). Nothing is asserted: the figures are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from consumer import hot_path
from local.harness import StandIn
from scripts.bench import messages, report, shard
from scripts.bench.server import MinimalServer


class StandInServer:
    """The capture stand-in, seen as a :class:`scripts.bench.shard.Server`."""

    name = "stand-in"

    def __init__(self, log_file: Path, api_key: str) -> None:
        """Start the stand-in on a free port."""
        self._standin = StandIn(log_file, api_key=api_key)
        self.url = self._standin.url

    def events(self) -> int:
        """Events the stand-in accepted."""
        count: int = self._standin.stats()["events"]
        return count

    def reset(self) -> None:
        """Forget accepted events (the stand-in keeps them all in memory)."""
        self._standin.reset()

    def close(self) -> None:
        """Stop it."""
        self._standin.close()


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./run.sh bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median; default 3)")
    parser.add_argument("--messages", type=int, default=10, help="processRecords lines (10)")
    parser.add_argument(
        "--records-per-message", type=int, default=10_000, help="records per line (10000)"
    )
    parser.add_argument(
        "--only", choices=sorted(shard.CONTENDERS), action="append", help="only these contenders"
    )
    parser.add_argument("--no-standin", action="store_true", help="skip ours against the stand-in")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also measure the consumer package of another checkout (e.g. the last release)",
    )
    parser.add_argument(
        "--ours-with",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also measure ours with this setting (e.g. batchMaxEvents=2000); repeatable",
    )
    parser.add_argument(
        "--delay-ms",
        type=int,
        default=0,
        help="the minimal server answers capture this much later (a real PostHog's round trip)",
    )
    parser.add_argument("--e2e", action="store_true", help="also the whole worker (minutes)")
    parser.add_argument(
        "--e2e-only", action="store_true", help="only the whole worker, no shard figures"
    )
    parser.add_argument(
        "--e2e-records", type=int, default=40_000, help="records in the 4-shard stream (40000)"
    )
    parser.add_argument(
        "--e2e-poll-ms",
        type=int,
        default=None,
        help="the whole worker's idleTimeBetweenReadsInMillis (the tests' 250 by default; "
        "KCL's own, as aws.properties runs, is 1500)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print."""
    args = _parser().parse_args(argv)
    load = os.getloadavg()
    report.header(args, load)
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        workdir = Path(scratch)
        if not args.e2e_only:
            _shard_figures(args, workdir)
        if args.e2e or args.e2e_only:
            from scripts.bench import e2e

            figures = e2e.measure(workdir, args.e2e_records, _say, poll_ms=args.e2e_poll_ms)
            report.e2e_table(figures, args.e2e_records)
    report.footer(os.getloadavg())
    return 0


def _shard_figures(args: argparse.Namespace, workdir: Path) -> None:
    _say(f"ours: {hot_path.describe()}")
    _say(f"building {args.messages} processRecords lines of {args.records_per_message} records")
    workload = shard.Workload(
        messages.workload(args.messages, args.records_per_message),
        args.messages * args.records_per_message,
    )
    minimal = MinimalServer(workdir / "server.log", shard.API_KEY, args.delay_ms)
    standin = None if args.no_standin else StandInServer(workdir / "standin.log", shard.API_KEY)
    try:
        chosen = [shard.CONTENDERS[name] for name in args.only or shard.CONTENDERS]
        plan: list[tuple[shard.Contender, shard.Server]] = [(c, minimal) for c in chosen]
        if args.baseline is not None:
            plan.insert(1, (shard.baseline(args.baseline), minimal))
        for setting in reversed(args.ours_with):
            plan.insert(1, (shard.ours_with(setting), minimal))
        if standin is not None and shard.CONTENDERS[shard.OURS] in chosen:
            plan.insert(1, (shard.CONTENDERS[shard.OURS], standin))
        floors, results = shard.measure(plan, workdir, workload, args.runs, _say)
    finally:
        minimal.close()
        if standin is not None:
            standin.close()
    report.shard_table(floors, results, workload.records)


if __name__ == "__main__":
    sys.exit(main())
