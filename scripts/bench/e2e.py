"""A whole worker, end to end: the real KCL daemon and its shard processes, on the emulators.

kinesis-mock and moto (``local/emulators.py``), a 4-shard stream pre-filled with the
benchmark's records (``local/harness.py``: ``create_stream``, ``put_and_place``), one
worker started as ``./run.sh <properties>`` starts it (``Worker.start``), delivering to
the minimal capture server. Measured: time from the worker's start to the first event
PostHog's stand-in counts, records/s from the first event to the last, and the CPU of
the worker's whole process group (daemon and shard processes) from
``/proc``, as CPU seconds per 100,000 records. For scale: how fast kinesis-mock takes
the puts, and how fast it serves the same records to a plain boto3 reader.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local import emulators, harness
from scripts.bench import messages
from scripts.bench.server import MinimalServer
from scripts.bench.shard import API_KEY, SETTINGS

STREAM = "bench-events"
SHARDS = 4
PER_100K = 100_000
POLL_SECONDS = 0.05  # the first-to-last window can be short: KCL prefetches while it starts
# How long the worker's CPU is watched once every event arrived and it has nothing to do
# but poll its shards and renew its leases: its background cost, per second.
IDLE_SECONDS = 20.0
POLL_SETTING = "idleTimeBetweenReadsInMillis"
FIRST_EVENT_TIMEOUT_SECONDS = 240.0
DELIVERY_TIMEOUT_SECONDS = 900.0
# GetRecords' largest page (Kinesis API reference).
GET_RECORDS_LIMIT = 10_000
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# /proc/<pid>/stat after the ")" ending the command name: state is field 3, so pgrp
# (field 5) is index 2 and utime, stime, cutime, cstime (fields 14-17) are 11 to 14.
_PGRP, _FIRST_TIME, _LAST_TIME = 2, 11, 14


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU seconds of a process group so far, in all and by kind of process."""

    total: float
    by_kind: dict[str, float]


def group_cpu(pgid: int) -> CpuSample:
    """CPU seconds (user + system, with reaped children) of every process in group ``pgid``."""
    by_kind: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue  # it ended meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[_PGRP]) != pgid:
            continue
        ticks = sum(int(value) for value in fields[_FIRST_TIME : _LAST_TIME + 1])
        kind = _kind(command)
        by_kind[kind] = by_kind.get(kind, 0.0) + ticks / _CLOCK_TICKS
    return CpuSample(sum(by_kind.values()), by_kind)


def _kind(command: bytes) -> str:
    if b"java" in command.split(b" ", 1)[0]:
        return "daemon (java)"
    return "shard processes"


def plain_reader_rate(client: Any, total: int) -> float:
    """Records/s kinesis-mock serves to a plain boto3 reader reading every shard to its end."""
    start = time.perf_counter()
    read = 0
    for shard in client.list_shards(StreamName=STREAM)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName=STREAM, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = client.get_records(ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
            read += len(page["Records"])
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")
    if read != total:
        raise RuntimeError(f"the plain reader read {read} records, not {total}")
    return read / (time.perf_counter() - start)


def measure(
    workdir: Path, records: int, say: Callable[[str], None], *, poll_ms: int | None = None
) -> dict[str, float]:
    """Run the whole worker once over a pre-filled stream; return its figures.

    ``poll_ms`` sets how long KCL waits between two GetRecords calls to a shard
    (``idleTimeBetweenReadsInMillis``; the tests' fast value if None): those calls are
    most of the idle worker's cost at the tests' 250 ms, about half at KCL's 1,500.
    """
    polling = {} if poll_ms is None else {POLL_SETTING: str(poll_ms)}
    logs = workdir / "e2e"
    logs.mkdir(exist_ok=True)
    with emulators.running(logs) as endpoints:
        server = MinimalServer(logs / "server.log", API_KEY)
        worker: harness.Worker | None = None
        try:
            kinesis = harness.kinesis_client(endpoints.kinesis_endpoint)
            harness.create_stream(kinesis, STREAM, SHARDS)
            say(f"putting {records} records into {SHARDS} shards of kinesis-mock")
            started = time.perf_counter()
            pairs = ((r.partition_key, r.data) for r in messages.sample_records(records))
            harness.put_and_place(kinesis, STREAM, pairs)
            put_rate = records / (time.perf_counter() - started)
            reader_rate = plain_reader_rate(kinesis, records)
            say(f"kinesis-mock: puts {put_rate:,.0f} records/s, plain reader {reader_rate:,.0f}")
            properties = harness.write_properties(
                logs / "bench.properties",
                {
                    **SETTINGS,
                    "applicationName": f"bench-{int(time.time())}",
                    "streamName": STREAM,
                    "regionName": emulators.LOCAL_ENV["AWS_REGION"],
                    "kinesisEndpoint": endpoints.kinesis_endpoint,
                    "dynamoDBEndpoint": endpoints.dynamodb_endpoint,
                    **harness.FAST_KCL,
                    **polling,
                    "posthogHost": server.url,
                    "posthogApiKey": API_KEY,
                    "deadLetter": f"file:{logs / 'dead-letter.jsonl'}",
                },
            )
            say("starting the worker (a fresh KCL application takes 30-130 s to read here)")
            worker = harness.Worker.start(properties, logs / "worker.log")
            figures = _watch(worker, server, records, say)
        finally:
            if worker is not None:
                worker.stop()
            server.close()
    emulator = {
        "kinesis-mock puts, records/s": put_rate,
        "plain boto3 reader, records/s": reader_rate,
    }
    return emulator | figures


def _watch(
    worker: harness.Worker, server: MinimalServer, records: int, say: Callable[[str], None]
) -> dict[str, float]:
    start = time.perf_counter()
    pgid = worker.process.pid  # Worker.start gives the worker a session (and group) of its own
    first: tuple[float, int, CpuSample] | None = None
    while True:
        if worker.process.poll() is not None:
            raise RuntimeError(f"the worker exited with status {worker.process.returncode}")
        count, now, cpu = server.events(), time.perf_counter(), group_cpu(pgid)
        if first is None and count:
            first = (now, count, cpu)
            say(f"first events {now - start:.1f}s after the worker started")
        if count >= records:
            break
        waited = now - start
        if (first is None and waited > FIRST_EVENT_TIMEOUT_SECONDS) or (
            waited > DELIVERY_TIMEOUT_SECONDS
        ):
            raise RuntimeError(f"{count} of {records} events after {waited:.0f}s")
        time.sleep(POLL_SECONDS)
    if first is None:  # every event arrived before the first look
        first = (start, 0, CpuSample(0.0, {}))
    first_time, first_count, first_cpu = first
    span = max(now - first_time, POLL_SECONDS)
    after_first = max(count - first_count, 1)
    say(f"all events in; watching the idle worker for {IDLE_SECONDS:g}s")
    time.sleep(IDLE_SECONDS)
    idle = group_cpu(pgid)
    idle_cores = (idle.total - cpu.total) / IDLE_SECONDS
    window = cpu.total - first_cpu.total
    figures = {
        "seconds to the first event": first_time - start,
        "records/s, first event to last": after_first / span,
        "CPU s per 100k records, first event to last": window / after_first * PER_100K,
        "CPU s per 100k records, from the start": cpu.total / count * PER_100K,
    }
    for kind, seconds in sorted(cpu.by_kind.items()):
        since = seconds - first_cpu.by_kind.get(kind, 0.0)
        figures[f"  of which {kind}, first event to last"] = since / after_first * PER_100K
    figures["idle worker afterwards, cores (polling, leases)"] = idle_cores
    for kind, seconds in sorted(idle.by_kind.items()):
        idle_kind = (seconds - cpu.by_kind.get(kind, 0.0)) / IDLE_SECONDS
        figures[f"  of which {kind}, cores"] = idle_kind
    figures["CPU s per 100k records, first event to last, less idle"] = (
        less_idle(window, idle_cores, span) / after_first * PER_100K
    )
    return figures


def less_idle(cpu_seconds: float, idle_cores: float, span: float) -> float:
    """What ``cpu_seconds`` over ``span`` seconds cost beyond the idle worker's own work.

    Never below zero: a short window's samples are coarser than the idle rate.
    """
    return max(cpu_seconds - idle_cores * span, 0.0)
