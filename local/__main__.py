"""Command line: ``python -m local [demo|standin]`` (the repository's local tooling).

``demo`` is the embedded local default (``./run.sh``): emulators, a demo stream, the
capture stand-in and one real worker. ``standin`` serves the PostHog capture stand-in
alone. Neither is part of the installed product. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from consumer.__main__ import configure_logging


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run one command; returns the exit status."""
    args = _parser().parse_args(argv)
    configure_logging()
    if args.command == "demo":
        from local.demo import run_demo

        return run_demo(records=args.records, until_delivered=args.until_delivered)
    if args.command == "standin":
        from local.standin import serve

        record_file = Path(args.record_file) if args.record_file else None
        return serve(port=args.port, api_key=args.api_key, record_file=record_file)
    raise AssertionError(args.command)  # pragma: no cover - argparse restricts the choices


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="embedded local default: emulators, demo stream, stand-in, one worker"
    )
    demo.add_argument(
        "--records", type=int, default=200, help="sample records to put (default 200)"
    )
    demo.add_argument(
        "--until-delivered", action="store_true", help="exit once every record arrived"
    )
    standin = commands.add_parser("standin", help="run the PostHog capture stand-in")
    standin.add_argument("--port", type=int, default=8000)
    standin.add_argument("--api-key", default="phc_local")
    standin.add_argument("--record-file", help="append accepted events here; reload them on start")
    return parser


if __name__ == "__main__":
    sys.exit(main())
