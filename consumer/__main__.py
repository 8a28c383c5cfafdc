"""Command line: ``python -m consumer [process|run|preview|check|redrive|health]``.

``process`` (the default, what ``executableName`` starts) speaks the KCL protocol on
stdin/stdout; the rest is for people. Logs
always go to stderr. The local default and the capture stand-in are repository
tooling, not installed: ``python -m local demo|standin`` from the repository root.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from consumer import config, logs, pipes
from consumer.errors import ConfigError
from consumer.exits import ExitStatus

log = logging.getLogger("consumer")

# The shard process's collector thresholds (young, middle, old; Python's are 700, 10, 10).
GC_THRESHOLDS = (20_000, 50, 50)
# How long a thread holds the GIL while another waits for it (Python's default: 5 ms).
GIL_SWITCH_SECONDS = 0.0005
# Signals a shard process leaves to the daemon (see _process).
DAEMON_STOPS_US = (signal.SIGINT, signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 - one return per command
    """Parse the command line and run one command; returns the exit status."""
    args = _parser().parse_args(argv)
    configure_logging()
    command = args.command or "process"
    try:
        if command == "process":
            return _process(args.properties)
        if command == "run":
            from consumer.launcher import run

            return run(Path(args.properties_file))
        if command == "preview":
            from consumer.tools import preview

            return preview(
                Path(args.properties_file),
                data=args.data,
                path=args.record,
                dead_letter=args.dead_letter,
            )
        if command == "check":
            from consumer.tools import check

            return check(Path(args.properties_file))
        if command == "health":
            from consumer.tools import health_check

            return health_check(Path(args.properties_file))
        if command == "redrive":
            from consumer.redrive import redrive

            return redrive(
                Path(args.properties_file),
                source=args.source,
                to=args.to,
                allow_other_streams=args.allow_other_streams,
            )
    except ConfigError as exc:
        log.critical("%s", exc)
        return ExitStatus.CONFIG
    raise AssertionError(command)  # pragma: no cover - argparse restricts the choices


def _process(properties: str | None) -> int:
    """Run one shard's record processor over stdin/stdout (started by the KCL daemon)."""
    # Ctrl+C, and a supervisor's SIGTERM to the whole process group (systemd's default,
    # `kill -- -PGID`), reach us at the same moment as the daemon. The daemon must be the
    # one to stop us, with shutdownRequested and then EOF on stdin (it never signals its
    # children): a shard process that died here would be restarted by the daemon during
    # its own shutdown and replay everything since its last checkpoint.
    for signum in DAEMON_STOPS_US:
        signal.signal(signum, signal.SIG_IGN)
    # Before anything can start a child or print: stdin and stdout are the daemon's alone.
    try:
        daemon_pipes = pipes.take()
    except OSError:
        # Started without the daemon's pipes (a closed stdin or stdout): nobody to answer.
        log.critical(
            "the shard process cannot take the daemon's pipes from its stdin and stdout",
            exc_info=True,
        )
        return ExitStatus.UNEXPECTED
    # Imported once the pipes are taken: nothing they import can print into the protocol.
    from consumer.protocol import serve
    from consumer.wiring import build_processor

    path = properties or os.environ.get(config.PROPERTIES_ENV)
    if not path:
        raise ConfigError(config.PROPERTIES_ENV, "", "the properties file path (run.sh sets it)")
    settings = config.load(Path(path))
    processor = build_processor(settings, telemetry=True)
    # What start-up made (modules, settings) lives as long as the process: out of the
    # collector's sight. A 10,000-record line decodes into some 20,000 containers, and
    # the default young threshold (700) collects dozens of times per line, each time
    # scanning what survived: fewer, larger young collections measured 5% more records/s.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    # The sender thread (consumer/delivery.py) waits for the GIL after each gzip and
    # socket call while this thread maps the next batch; at Python's 5 ms switch interval
    # a request took longer than mapping a batch and the mapper waited for it (3.6 ms per
    # 1,000 events in ./run.sh bench); at 0.5 ms, 0.6 ms.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    # amazon-kclpy's protocol, with the lines read as bytes (KCLProcess.run reads them as
    # text and builds a heavier object per record): consumer/protocol.py.
    daemon = os.getppid()
    try:
        serve(processor, daemon_pipes.stdin, daemon_pipes.stdout, sys.stderr)
    except Exception as exc:
        if isinstance(exc, BrokenPipeError) or os.getppid() != daemon:
            # The daemon died (killed, out of memory) mid-message: nothing was answered,
            # so nothing of it was checkpointed; the next lease owner reads it again.
            log.warning("shard %s: the daemon is gone; exiting", processor.shard_id)
            return ExitStatus.DAEMON_GONE
        # A message this process cannot read (the daemon writes none): as an error in the
        # processor, stop without checkpointing, with the exit status and log of one.
        log.critical(
            "shard %s: unexpected error reading the daemon's messages; stopping without "
            "checkpointing",
            processor.shard_id,
            exc_info=True,
        )
        return ExitStatus.UNEXPECTED
    # EOF: the daemon is done with this shard (shard ended, lease lost or shutdown).
    log.info("shard %s: the daemon closed stdin; exiting", processor.shard_id)
    return ExitStatus.OK


def configure_logging() -> None:
    """Log to stderr (stdout is the KCL protocol) as ``$LOG_FORMAT`` and ``$LOG_LEVEL`` say."""
    logs.configure(secret_envs=(config.API_KEY_ENV,))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m consumer", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    process = commands.add_parser("process", help="KCL record processor (started by the daemon)")
    process.add_argument(
        "--properties", help=f"properties file (default: ${config.PROPERTIES_ENV})"
    )
    parser.set_defaults(properties=None)
    run = commands.add_parser("run", help="validate the properties and exec the KCL daemon")
    run.add_argument("properties_file")
    preview = commands.add_parser("preview", help="print the PostHog event a record becomes")
    preview.add_argument("properties_file")
    source = preview.add_mutually_exclusive_group()
    source.add_argument("--data", help='the record as text, e.g. \'{"event": "x"}\'')
    source.add_argument("--record", help="a file holding the record's bytes ('-' for stdin)")
    source.add_argument(
        "--dead-letter",
        metavar="FILE[:LINE]",
        help="a dead-letter entry (line 1 by default): the event it becomes on redrive",
    )
    check = commands.add_parser(
        "check", help="validate the properties and probe Kinesis, DynamoDB, PostHog"
    )
    check.add_argument("properties_file")
    health = commands.add_parser(
        "health", help="exit 1 if a shard of this host's worker is stuck (a health check)"
    )
    health.add_argument("properties_file")
    redrive = commands.add_parser(
        "redrive", help="map dead letters again and deliver those that now map"
    )
    redrive.add_argument("properties_file")
    redrive.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="SOURCE",
        help="the dead letters: a file (file:<path> or a path) or kinesis:<stream>",
    )
    redrive.add_argument(
        "--to",
        metavar="TARGET",
        help="where what still fails goes (file:<path> or kinesis:<stream>; default: a new "
        "file <source name>.redrive-<UTC time>.jsonl beside the source)",
    )
    redrive.add_argument(
        "--allow-other-streams",
        action="store_true",
        help="redrive dead letters of streams other than streamName, as their own stream's events",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
