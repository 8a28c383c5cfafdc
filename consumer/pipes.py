"""The daemon's two pipes, moved to descriptors only the protocol uses.

A process's descriptors 0 and 1 are the daemon's pipes, and every child it starts
inherits them. botocore starts a ``credential_process`` helper with our stdin (it
captures only the helper's stdout and stderr), when a Kinesis dead-letter sink first
needs credentials: a helper that reads its stdin (a prompt, ``cat``) would take the
daemon's bytes, leaving a broken message or, since the daemon sends nothing until it is
answered, a shard that hangs. A stray write to descriptor 1 (a library's ``print``, a
child's output, C code's ``printf``) would be a line the daemon cannot parse.

So :func:`take` moves the pipes to new descriptors (above 2, close-on-exec: children
do not inherit them), and points descriptor 0 at ``/dev/null``
(a child reading stdin reads EOF) and descriptor 1 at descriptor 2 (a stray line
becomes a line on stderr, beside the log's). Only the shard process does this, first thing:
the daemon talks to nothing else.
"""

from __future__ import annotations

import fcntl
import io
import os
import sys
from typing import NamedTuple, TextIO

STDIN_FD = 0
STDOUT_FD = 1
STDERR_FD = 2
FIRST_PRIVATE_FD = STDERR_FD + 1


class DaemonPipes(NamedTuple):
    """The protocol's ends of the daemon's pipes."""

    # Read by its descriptor, one read(2) a call (consumer.lines explains why).
    stdin: io.FileIO
    # Text, as amazon-kclpy's writer wants it; it flushes after every message.
    stdout: TextIO


def take() -> DaemonPipes:
    """Move the daemon's pipes off descriptors 0 and 1; return them (see the module).

    Raises ``OSError`` if descriptor 0, 1 or 2 is closed: a shard process without the
    daemon's pipes has nobody to answer (and without stderr, nowhere to say so).
    """
    if sys.stdout is not None:  # None when descriptor 1 was closed at start
        sys.stdout.flush()  # nothing written so far, but what is must go where it was meant
    # Above 2, so never one of the standard three (nor a closed one's number: a closed
    # descriptor raises EBADF here); close-on-exec, so no child inherits it.
    protocol_in = fcntl.fcntl(STDIN_FD, fcntl.F_DUPFD_CLOEXEC, FIRST_PRIVATE_FD)
    protocol_out = fcntl.fcntl(STDOUT_FD, fcntl.F_DUPFD_CLOEXEC, FIRST_PRIVATE_FD)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, STDIN_FD)
    finally:
        os.close(null)
    os.dup2(STDERR_FD, STDOUT_FD)
    if isinstance(sys.stdout, io.TextIOWrapper):  # None, if descriptor 1 was closed
        # A stray print now goes to stderr, beside the log's lines: whole lines, each
        # written as it ends, not a block buffer's 8 KiB cut anywhere in a log line.
        sys.stdout.reconfigure(line_buffering=True)
    return DaemonPipes(
        io.FileIO(protocol_in, "rb"),
        # The daemon reads UTF-8 (the launcher starts its JVM with -Dfile.encoding=UTF-8);
        # amazon-kclpy writes ASCII JSON anyway. "\n" written as it is, as on stdout.
        io.TextIOWrapper(
            io.BufferedWriter(io.FileIO(protocol_out, "wb")), encoding="utf-8", newline="\n"
        ),
    )
