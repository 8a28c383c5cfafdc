"""Pieces the local default and the end-to-end tests share: stand-in, stream, worker.

Everything here drives real processes over real HTTP: the capture stand-in, the
emulators and the KCL daemon started exactly as ``run.sh`` starts it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from consumer.batching import runs
from consumer.kinesis_sink import PUT_RECORDS_MAX_BYTES, PUT_RECORDS_MAX_ENTRIES
from consumer.propfile import format_properties
from local.emulators import LOCAL_ENV, REPO_ROOT, free_port, stop, wait_for_port

LOCAL_API_KEY = "phc_local_standin"
# KCL intervals that are long only by default; shortened so a local worker starts and
# hands over leases in seconds (local-emulators.md, "KCL start-up time in tests").
FAST_KCL = {
    "metricsLevel": "NONE",
    "retrievalMode": "POLLING",
    "initialPositionInStream": "TRIM_HORIZON",
    "idleTimeBetweenReadsInMillis": "250",
    "shardSyncIntervalMillis": "5000",
    "failoverTimeMillis": "5000",
    # A dead worker's metrics count as live for twice this; until then the leader may
    # hand it leases (README "Many workers").
    "workerMetricsReporterFreqInMillis": "5000",
    "parentShardPollIntervalMillis": "1000",
    "shutdownGraceMillis": "15000",
}


class StandIn:
    """The capture stand-in in its own process, and a small client for its hooks."""

    def __init__(self, log_file: Path, api_key: str = LOCAL_API_KEY) -> None:
        """Start ``python -m local standin`` on a free loopback port."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        self._log_file = log_file
        self._record_file = log_file.with_suffix(".events.jsonl")
        self._record_file.unlink(missing_ok=True)  # a new stand-in starts empty
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "local", "standin", "--port", str(self.port)]
        command += ["--api-key", self.api_key, "--record-file", str(self._record_file.resolve())]
        with self._log_file.open("ab") as sink:
            # `local` is repository tooling, not installed: run it from the repository root.
            process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port(self.port, process, "capture stand-in")
        return process

    def restart(self) -> None:
        """Start again on the same port after :meth:`close` (accepted events are kept)."""
        self.process = self._spawn()

    def requests(self) -> list[dict[str, Any]]:
        """One entry per capture request since the last start: time, status, events."""
        found: list[dict[str, Any]] = self._get("/_requests")["requests"]
        return found

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """Events accepted so far (from index ``since``)."""
        events: list[dict[str, Any]] = self._get(f"/_events?since={since}")["events"]
        return events

    def raw_events(self, since: int = 0) -> list[str]:
        """The JSON text of each accepted event exactly as sent, aligned with :meth:`events`."""
        raw: list[str] = self._get(f"/_raw?since={since}")["raw"]
        return raw

    def stats(self) -> dict[str, Any]:
        """Accepted-event count, answers by status, and events dropped (by reason)."""
        return self._get("/_stats")

    def control(self, **settings: Any) -> None:
        """Inject failures or a wrong host (see :mod:`local.standin`); replaces the last."""
        self._post("/_control", settings)

    def reset(self) -> None:
        """Forget events, counters and injected failures."""
        self._post("/_reset", {})

    def close(self) -> None:
        """Stop the server process."""
        stop(self.process)

    def _get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + path, timeout=10) as answer:  # noqa: S310 - loopback URL
            result: dict[str, Any] = json.load(answer)
            return result

    def _post(self, path: str, payload: Mapping[str, Any]) -> None:
        request = urllib.request.Request(  # noqa: S310 - loopback URL
            self.url + path, data=json.dumps(payload).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass


def kinesis_client(endpoint: str) -> Any:
    """boto3 Kinesis client for the emulator."""
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name=LOCAL_ENV["AWS_REGION"],
        aws_access_key_id=LOCAL_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def create_stream(client: Any, name: str, shards: int) -> None:
    """Create ``name`` with ``shards`` shards and wait until it is ACTIVE."""
    client.create_stream(StreamName=name, ShardCount=shards)
    client.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 150}
    )


def put_records(client: Any, stream: str, records: Iterable[tuple[str, bytes]]) -> int:
    """Put ``(partition_key, data)`` pairs (see :func:`put_and_place`); return the count."""
    return len(put_and_place(client, stream, records))


def put_and_place(
    client: Any, stream: str, records: Iterable[tuple[str, bytes]]
) -> list[dict[str, Any]]:
    """Put ``(partition_key, data)`` pairs within PutRecords' limits, retrying failed slots.

    Returns, for each pair in order, the answer slot that placed it (``ShardId``,
    ``SequenceNumber``). The one place test and demo puts are cut into calls.
    """
    placed: list[dict[str, Any]] = []
    calls = runs(
        records,
        max_count=PUT_RECORDS_MAX_ENTRIES,
        max_bytes=PUT_RECORDS_MAX_BYTES,
        size=lambda record: len(record[0].encode()) + len(record[1]),
    )
    for call in calls:
        placed += _put(client, stream, call)
    return placed


def _put(client: Any, stream: str, batch: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    slots: list[dict[str, Any] | None] = [None] * len(batch)
    pending = list(range(len(batch)))
    while pending:
        answer = client.put_records(
            StreamName=stream,
            Records=[{"PartitionKey": batch[i][0], "Data": batch[i][1]} for i in pending],
        )
        failed = []
        for index, slot in zip(pending, answer["Records"], strict=True):
            if "ErrorCode" in slot:
                failed.append(index)
            else:
                slots[index] = slot
        pending = failed
        if pending:
            time.sleep(0.2)
    return [slot for slot in slots if slot is not None]


def write_properties(path: Path, values: Mapping[str, str]) -> Path:
    """Write a properties file for a local worker."""
    path.write_text(format_properties(dict(values)), encoding="utf-8")
    return path


@dataclass
class Worker:
    """One worker (``python -m consumer run``: the daemon and its shard processes)."""

    process: subprocess.Popen[bytes]

    @classmethod
    def start(
        cls, properties: Path, log_file: Path, extra_env: Mapping[str, str] | None = None
    ) -> Worker:
        """Start a worker in its own process group, its output going to ``log_file``."""
        env = {**os.environ, **LOCAL_ENV, **(extra_env or {})}
        with log_file.open("ab") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "consumer", "run", str(properties)],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(process)

    def stop(self, timeout: float = 40.0, *, group: bool = False) -> int:
        """SIGTERM the worker, wait, and kill it all if it overstays.

        Only the daemon by default (ECS signals the container's main process); with
        ``group`` every process of the worker at once (systemd, ``kill -- -PGID``).
        """
        if self.process.poll() is None:
            if group:
                os.killpg(self.process.pid, signal.SIGTERM)
            else:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.wait()

    def kill(self) -> None:
        """SIGKILL the daemon and every shard process (a crash, or ``kill -9`` of a task)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
