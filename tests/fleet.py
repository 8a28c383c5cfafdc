"""Many workers of one KCL application on their own stream, with records flowing all along.

What ``tests/test_e2e_scale.py`` drives: workers by name (each its KCL ``workerId``),
a steady producer, and the lease table and leader lock read straight from DynamoDB, as
an operator would read them.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3

from local import harness
from local.emulators import LOCAL_ENV, Emulators
from tests.support import Put, good, put_all, worker_properties

# A steady trickle, so every shard always has something new to show who reads it.
TRAFFIC_RECORDS_PER_PUT = 12
TRAFFIC_PAUSE_SECONDS = 0.5


class Traffic:
    """A producer thread putting :func:`~tests.support.good` records until stopped."""

    def __init__(self, client: Any, stream: str, first: int) -> None:
        self._client = client
        self._stream = stream
        self._next = first
        self._lock = threading.Lock()
        self._puts: list[Put] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            numbers = range(self._next, self._next + TRAFFIC_RECORDS_PER_PUT)
            puts = put_all(self._client, self._stream, [good(n) for n in numbers])
            with self._lock:
                self._puts += puts
                self._next = numbers.stop
            self._stop.wait(TRAFFIC_PAUSE_SECONDS)

    def puts(self) -> list[Put]:
        """Every record put so far, in put order."""
        with self._lock:
            return list(self._puts)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Fleet:
    """N workers of one application, the stand-in they deliver to, and their stream."""

    def __init__(  # noqa: PLR0913 - the fleet's moving parts
        self,
        workdir: Path,
        endpoints: Emulators,
        *,
        application: str,
        stream: str,
        shards: int,
        first_record: int,
    ) -> None:
        self.workdir = workdir
        self.application = application
        self.stream = stream
        self.standin = harness.StandIn(workdir / "standin.log")
        self.kinesis = harness.kinesis_client(endpoints.kinesis_endpoint)
        harness.create_stream(self.kinesis, stream, shards)
        self.dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=endpoints.dynamodb_endpoint,
            region_name=LOCAL_ENV["AWS_REGION"],
            aws_access_key_id=LOCAL_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_ENV["AWS_SECRET_ACCESS_KEY"],
        )
        self.properties = harness.write_properties(
            workdir / f"{application}.properties",
            worker_properties(
                endpoints,
                self.standin,
                application=application,
                stream=stream,
                dead_letter=workdir / "dead-letter.jsonl",
            ),
        )
        self.workers: dict[str, harness.Worker] = {}
        # Its own client: boto3 clients are not shared across threads.
        self.traffic = Traffic(
            harness.kinesis_client(endpoints.kinesis_endpoint), stream, first_record
        )

    def start(self, name: str) -> harness.Worker:
        """Start worker ``name`` (its KCL ``workerId``)."""
        worker = harness.Worker.start(
            self.properties,
            self.workdir / f"{name}.log",
            {"KINESIS_POSTHOG_workerId": name},
        )
        self.workers[name] = worker
        return worker

    def alive(self) -> list[str]:
        return [name for name, worker in self.workers.items() if worker.process.poll() is None]

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def owners(self) -> dict[str, str]:
        """Lease key -> owner, from the lease table (``-`` for a lease nobody holds)."""
        items = self.dynamodb.scan(TableName=self.application, ConsistentRead=True)["Items"]
        return {
            item["leaseKey"]["S"]: item.get("leaseOwner", {}).get("S", "-")
            for item in items
            if item.get("checkpoint", {}).get("S") != "SHARD_END"
        }

    def leader(self) -> str | None:
        """The worker holding KCL's leader lock (``<app>-CoordinatorState``, item ``Leader``)."""
        with contextlib.suppress(self.dynamodb.exceptions.ResourceNotFoundException):
            item = self.dynamodb.get_item(
                TableName=f"{self.application}-CoordinatorState",
                Key={"key": {"S": "Leader"}},
                ConsistentRead=True,
            ).get("Item")
            if item and not item.get("isReleased", {}).get("BOOL", False):
                owner: str = item["ownerName"]["S"]
                return owner
        return None

    def reading(self, name: str) -> set[str]:
        """Shards worker ``name`` owns in the lease table and has started a shard process for.

        The table alone is not enough: the leader writes the owner, and the worker finds
        the lease at its next discovery (every few seconds) and only then starts reading.
        """
        started = set(re.findall(r"shard (shardId-\d+): starting after", self.log(name)))
        return {shard for shard, owner in self.owners().items() if owner == name} & started

    def wait_for_owners(self, names: set[str], timeout: float) -> list[str]:
        """Wait until each of ``names`` reads a shard; return the distribution as it changed."""
        history: list[str] = []
        last: dict[str, int] | None = None
        start = time.monotonic()

        def spread() -> bool:
            nonlocal last
            with contextlib.suppress(self.dynamodb.exceptions.ResourceNotFoundException):
                owners = self.owners()
                counts = dict(sorted(Counter(owners.values()).items()))
                if counts != last:
                    elapsed = time.monotonic() - start
                    history.append(f"{elapsed:5.1f}s {counts} leader={self.leader()}")
                    last = counts
                return all(self.reading(name) for name in names)
            return False

        harness.wait_until(spread, timeout, interval=1.0)
        return history

    def first_events_after(
        self, since: int, shards: set[str], timeout: float, start: float
    ) -> dict[str, float]:
        """Seconds from ``start`` to the first event (index ``since`` on) from each shard."""
        first: dict[str, float] = {}
        seen = since

        def all_moved() -> bool:
            nonlocal seen
            events = self.standin.events(seen)
            seen += len(events)
            now = time.monotonic() - start
            for event in events:
                shard = event["properties"]["$kinesis_shard_id"]
                if shard in shards:
                    first.setdefault(shard, now)
            return set(first) == shards

        harness.wait_until(all_moved, timeout, interval=0.25)
        return first

    def close(self) -> None:
        self.traffic.stop()
        for worker in self.workers.values():
            worker.stop()
        self.standin.close()


@contextlib.contextmanager
def running_fleet(workdir: Path, endpoints: Emulators, **options: Any) -> Iterator[Fleet]:
    fleet = Fleet(workdir, endpoints, **options)
    try:
        yield fleet
    finally:
        fleet.close()
