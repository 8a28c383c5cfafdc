"""Play the KCL daemon's side of the multilang protocol to one real shard process.

The shard process is started as the MultiLangDaemon starts it (``executableName``, here
``<python> -m consumer``, with the properties file's path and the API key in its
environment, stdin and stdout as pipes), and fed the daemon's own lines
(:mod:`scripts.bench.messages`). Each checkpoint it asks for is answered as the daemon
answers one it carried out. The clock runs from the first ``processRecords`` line
written to the status line that answers the last one: the processor answers only
after every record of the call was accepted by PostHog (or dead-lettered).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from scripts.bench import messages

REPO_ROOT = Path(__file__).resolve().parents[2]


class ProtocolError(RuntimeError):
    """The shard process said something the daemon would not accept, or died."""


@dataclass(frozen=True, slots=True)
class ShardRun:
    """What one shard process did with the workload."""

    records: int
    seconds: float
    peak_rss_mib: float
    cpu_seconds: float  # user + system, first processRecords line to the last one's answer
    checkpoints: int
    last_checkpoint: str | None

    @property
    def rate(self) -> float:
        """Records per second, first processRecords line to the last one's answer."""
        return self.records / self.seconds


class _Daemon:
    """The daemon's end of the pipes: write a message, answer until its status comes back."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        if process.stdin is None or process.stdout is None:
            raise ProtocolError("the shard process needs pipes for stdin and stdout")
        self._stdin: IO[bytes] = process.stdin
        self._stdout: IO[bytes] = process.stdout
        self.checkpoints = 0
        self.last_checkpoint: str | None = None

    def send(self, line: str, action: str) -> None:
        self._stdin.write(line.encode("utf-8"))
        self._stdin.flush()
        while True:
            message = self._read()
            kind = message.get("action")
            if kind == "status":
                if message.get("responseFor") != action:
                    raise ProtocolError(f"status for {message.get('responseFor')}, not {action}")
                return
            if kind != "checkpoint":
                raise ProtocolError(f"unexpected message {message!r}")
            self.checkpoints += 1
            self.last_checkpoint = message.get("sequenceNumber")
            answer = messages.checkpoint_answer(
                message.get("sequenceNumber"), message.get("subSequenceNumber")
            )
            self._stdin.write(answer.encode("utf-8"))
            self._stdin.flush()

    def close(self) -> None:
        """End the shard process's input, as the daemon does after shutdown."""
        self._stdin.close()

    def _read(self) -> dict[str, Any]:
        while True:
            line = self._stdout.readline()
            if not line:
                raise ProtocolError("the shard process closed its stdout (see its log)")
            if line.strip():
                # The daemon, too, reads each non-blank line as one JSON message.
                message: dict[str, Any] = json.loads(line)
                return message


def run_shard(  # noqa: PLR0913 - the command, where it runs, what it is fed
    argv: Sequence[str],
    env: Mapping[str, str],
    lines: Sequence[str],
    *,
    records: int,
    log_file: Path,
    cwd: Path = REPO_ROOT,
) -> ShardRun:
    """Start a shard process, feed it ``lines`` (processRecords messages), stop it as KCL does."""
    with (
        log_file.open("ab") as log,
        subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=dict(env),
            cwd=cwd,
        ) as process,
    ):
        try:
            seconds, cpu_seconds, peak_rss_mib, daemon = _play(process, lines)
            process.wait()
        except BaseException:
            process.kill()
            raise
    if process.returncode != 0:
        raise ProtocolError(f"the shard process exited with status {process.returncode}")
    return ShardRun(
        records=records,
        seconds=seconds,
        peak_rss_mib=peak_rss_mib,
        cpu_seconds=cpu_seconds,
        checkpoints=daemon.checkpoints,
        last_checkpoint=daemon.last_checkpoint,
    )


def _play(
    process: subprocess.Popen[bytes], lines: Sequence[str]
) -> tuple[float, float, float, _Daemon]:
    """The daemon's side, initialize to shutdown; -> seconds and CPU of processRecords, peak RSS."""
    daemon = _Daemon(process)
    daemon.send(messages.initialize(messages.SHARD_ID), "initialize")
    start, cpu_start = time.perf_counter(), _cpu_seconds(process.pid)
    for line in lines:
        daemon.send(line, "processRecords")
    seconds, cpu = time.perf_counter() - start, _cpu_seconds(process.pid) - cpu_start
    daemon.send(messages.shutdown_requested(), "shutdownRequested")
    peak_rss_mib = _peak_rss_mib(process.pid)
    daemon.close()  # EOF on its stdin: the shard process ends
    return seconds, cpu, peak_rss_mib, daemon


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (its threads too), from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15; fields[0] is field 3 (state).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float:
    """The process's peak resident set since it exec'd (``VmHWM``), in MiB.

    Not ``ru_maxrss`` from ``wait4``: Linux carries the forking parent's high-water mark
    over into the child's, so a benchmark holding its workload in memory would be counted.
    """
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise ProtocolError(f"no VmHWM for process {pid}")
