"""Ours, reading the daemon's lines itself rather than through amazon-kclpy's ``KCLProcess``.

    python -m scripts.bench.ownloop      (started like ``python -m consumer``)

The same processor (``consumer.wiring.build_processor``) speaking the same protocol:
messages are dispatched through amazon-kclpy's own message classes, checkpoints go
through its ``Checkpointer``, and each message is answered with the same status line.
Only the reading differs: each line is read as bytes and decoded with orjson, and the
previous line and message are released before the next is read; records reach the
processor as small objects with the five fields it reads (amazon-kclpy builds a
``Record`` per record, with a local-time datetime and a copy of the dict). This is what
``consumer/__main__.py`` would run instead of ``KCLProcess(...).run()``; the benchmark
measures it beside ours to show what that change is worth.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import IO, Any

import orjson
from amazon_kclpy import dispatch, kcl

from consumer import config
from consumer.__main__ import configure_logging
from consumer.wiring import build_processor


class _Record:
    """The fields of a daemon record the processor reads (amazon-kclpy's Record's names)."""

    __slots__ = (
        "data",
        "partition_key",
        "sequence_number",
        "sub_sequence_number",
        "timestamp_millis",
    )

    def __init__(self, fields: dict[str, Any]) -> None:
        self.data = fields["data"]
        self.partition_key = fields["partitionKey"]
        self.sequence_number = fields["sequenceNumber"]
        self.sub_sequence_number = fields["subSequenceNumber"]
        self.timestamp_millis = fields["approximateArrivalTimestamp"]


class _TextLines:
    """Lines of a binary stream as text, for amazon-kclpy's Checkpointer to read its answer."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def readline(self) -> str:
        return self._stream.readline().decode("utf-8")


def serve(processor: Any, stdin: IO[bytes], stdout: IO[str], stderr: IO[str]) -> None:
    """Answer the daemon's messages on ``stdin`` until it closes it."""
    handler = kcl._IOHandler(_TextLines(stdin), stdout, stderr)  # noqa: SLF001 - its protocol writer
    checkpointer = kcl.Checkpointer(handler)
    while line := stdin.readline():
        message = orjson.loads(line)
        del line  # the next line is read without this one
        if message.get("action") == "processRecords":
            message["records"] = [_Record(fields) for fields in message["records"]]
        action = dispatch.message_decode(message)
        del message
        action.dispatch(checkpointer, processor)
        handler.write_action({"action": "status", "responseFor": action.action})
        del action


def main() -> int:
    """Run as ``consumer/__main__.py``'s ``process`` does, with :func:`serve`."""
    configure_logging()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = config.load(Path(os.environ[config.PROPERTIES_ENV]))
    serve(build_processor(settings), sys.stdin.buffer, sys.stdout, sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
