"""Helpers the tests share (imported by the test modules; conftest.py only builds fixtures).

End-to-end: records with known identities, one pipeline (stand-in, stream, worker) that
every end-to-end module shares, and one way to wait for deliveries.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumer import config
from consumer.mapping import MappingRules, event_uuid
from consumer.record import KinesisRecord
from local import harness
from local.emulators import Emulators

# --- Unit tests -------------------------------------------------------------------------

BASE_PROPERTIES = {
    "applicationName": "test-app",
    "streamName": "events",
    "regionName": "us-east-1",
    "eventKey": "properties.eventName",
    "posthogApiKey": "phc_test",
    "posthogHost": "http://127.0.0.1:9",
}

SettingsFactory = Callable[..., config.Settings]
RulesFactory = Callable[..., MappingRules]
RecordFactory = Callable[..., KinesisRecord]


class ScriptedTransport:
    """A fake HTTP layer: answers from a script (or a function of the events), records requests.

    An answer is a status (200 comes with PostHog's body), ``(status, headers)`` or
    ``(status, headers, text)``, a :class:`~consumer.sender.Response`, an exception to
    raise, or ``"timeout"``.
    """

    # What PostHog's Rust capture answers to an accepted batch (rust/capture/src/api.rs).
    POSTHOG_OK = '{"status":"Ok"}'

    def __init__(
        self, *answers: Any, judge: Callable[[list[dict[str, Any]]], Any] | None = None
    ) -> None:
        self.answers = list(answers)
        self.judge = judge
        self.requests: list[dict[str, Any]] = []

    def __call__(self, url: str, body: bytes, headers: Any, timeout: float) -> Any:
        import gzip

        from consumer.errors import RetryableDeliveryError
        from consumer.sender import Response

        document = json.loads(gzip.decompress(body))
        self.requests.append(
            {"url": url, "body": document, "headers": dict(headers), "timeout": timeout}
        )
        answer = (
            self.judge(document["batch"])
            if self.judge
            else (self.answers.pop(0) if self.answers else 200)
        )
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, Response):
            return answer
        if isinstance(answer, tuple):
            status, extra, *text = answer
            return Response(status, extra, text[0] if text else self._body_for(status))
        if answer == "timeout":
            raise RetryableDeliveryError("no answer from PostHog within 1s")
        return Response(answer, {}, self._body_for(answer))

    def _body_for(self, status: int) -> str:
        return self.POSTHOG_OK if status == 200 else "refused"

    def delivered_uuids(self) -> list[str]:
        """Uuids of events in requests the script answered 200 (only meaningful with judge=None)."""
        return [e["uuid"] for r in self.requests for e in r["body"]["batch"]]


# --- End to end -------------------------------------------------------------------------


@dataclass(frozen=True)
class Put:
    """One record we put: what it held, and where Kinesis stored it."""

    document: dict[str, Any] | None
    data: bytes
    partition_key: str
    shard_id: str
    sequence_number: str
    uuid: str


def put_all(
    client: Any, stream: str, items: Sequence[tuple[str, bytes, dict[str, Any] | None]]
) -> list[Put]:
    """Put records in order (500 per call, by the harness) and return where each landed."""
    slots = harness.put_and_place(client, stream, [(key, data) for key, data, _ in items])
    puts: list[Put] = []
    for (key, data, document), slot in zip(items, slots, strict=True):
        record = KinesisRecord(data, key, slot["SequenceNumber"], 0, 0)
        shard = slot["ShardId"]
        puts.append(
            Put(
                document,
                data,
                key,
                shard,
                slot["SequenceNumber"],
                event_uuid(stream, shard, record),
            )
        )
    return puts


def good(number: int, *, with_time: bool = True) -> tuple[str, bytes, dict[str, Any]]:
    """A record with nested keys, as the seed app documents them."""
    document: dict[str, Any] = {
        "properties": {
            "eventName": f"event-{number % 5}",
            "userId": f"user-{number % 37}",
            "foo": number,
        },
        "context": {"page.url": f"/p/{number}", "tags": ["a", number]},
    }
    if with_time:
        document["meta"] = {"ts": 1_700_000_000 + number}
    return f"pk-{number % 11}", json.dumps(document).encode(), document


def read_dead_letters(path: Path) -> list[dict[str, Any]]:
    """Entries of a JSON-lines dead-letter file (none if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_delivered(
    standin: harness.StandIn, puts: Iterable[Put], timeout: float, since: int = 0
) -> list[dict[str, Any]]:
    """Wait until the event of every one of ``puts`` was accepted (from index ``since``);
    fail naming how many are missing; return the events accepted since ``since``."""
    wanted = {put.uuid for put in puts}

    def arrived() -> bool:
        return wanted <= {event["uuid"] for event in standin.events(since)}

    harness.wait_until(arrived, timeout)
    events = standin.events(since)
    missing = wanted - {event["uuid"] for event in events}
    assert not missing, f"{len(missing)} of {len(wanted)} records never arrived"
    return events


def elapsed_since(start: float) -> str:
    """Seconds since ``start``, for the figures tests print."""
    return f"{time.monotonic() - start:.1f}s"


STREAM = "e2e-events"
SHARDS = 4
FIRST_START_TIMEOUT = 180.0
RESTART_TIMEOUT = 150.0
OUTAGE_PHASE_SECONDS = 8.0
ECS_STOP_TIMEOUT_SECONDS = 30.0  # ECS stopTimeout default: SIGKILL follows


class Pipeline:
    """Everything the module's tests share."""

    def __init__(self, workdir: Path, endpoints: Emulators) -> None:
        self.workdir = workdir
        self.standin = harness.StandIn(workdir / "standin.log")
        self.kinesis = harness.kinesis_client(endpoints.kinesis_endpoint)
        harness.create_stream(self.kinesis, STREAM, SHARDS)
        self.dead_letter = workdir / "dead-letter.jsonl"
        self.properties = harness.write_properties(
            workdir / "e2e.properties",
            {
                "applicationName": "kinesis-posthog-e2e",
                "streamName": STREAM,
                "regionName": "us-east-1",
                "kinesisEndpoint": endpoints.kinesis_endpoint,
                "dynamoDBEndpoint": endpoints.dynamodb_endpoint,
                **harness.FAST_KCL,
                "eventKey": "properties.eventName",
                "additionalPropertyMappings": "properties.userId:distinct_id, properties.foo:foo, "
                "context.page\\.url:url, context.tags.1:tag",
                "timestampKey": "meta.ts",
                "posthogHost": self.standin.url,
                "posthogApiKey": self.standin.api_key,
                "deadLetter": f"file:{self.dead_letter}",
                "checkpointIntervalSeconds": "1",
                "checkpointIntervalRecords": "50",
                "batchMaxEvents": "40",
                "posthogTimeoutSeconds": "2",
                # KCL's own leader lease is 120 s; a dead leader's lock is released sooner here.
                "leaderLockStaleSeconds": "35",
            },
        )
        self.puts: list[Put] = []
        self.worker: harness.Worker | None = None
        self.starts = 0

    def start(self, **env: str) -> harness.Worker:
        self.starts += 1
        self.worker = harness.Worker.start(
            self.properties, self.workdir / f"worker-{self.starts}.log", env
        )
        return self.worker

    def good_puts(self) -> list[Put]:
        return [p for p in self.puts if p.document is not None]

    def running_worker(self) -> harness.Worker:
        """A worker that is reading now: started if none runs, then proven by a delivery.

        Lets each end-to-end test run alone (``-k``) or after any other.
        """
        if self.worker is None or self.worker.process.poll() is not None:
            self.start()
        since = self.standin.stats()["events"]
        warm = put_all(self.kinesis, STREAM, [good(n) for n in range(900_000, 900_011)])
        wait_delivered(self.standin, warm, FIRST_START_TIMEOUT, since)
        assert self.worker is not None
        return self.worker


@contextlib.contextmanager
def shared_pipeline(workdir: Path, endpoints: Emulators) -> Iterator[Pipeline]:
    """One KCL application for every end-to-end module (each fresh one waits 30-60 s)."""
    pipeline = Pipeline(workdir, endpoints)
    pipeline.standin.control(reject_events=["poison"])
    try:
        yield pipeline
    finally:
        if pipeline.worker is not None:
            pipeline.worker.stop()
        pipeline.standin.close()


def group_alive(worker: harness.Worker | None) -> bool:
    """Whether any process of the worker's process group is still running (zombies aside)."""
    assert worker is not None
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        state, process_group = fields[0], int(fields[2])
        if process_group == worker.process.pid and state != "Z":
            return True
    return False


def by_uuid(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {event["uuid"]: event for event in events}
