"""Helpers the tests share (imported by the test modules; conftest.py only builds fixtures).

End-to-end: records with known identities, one pipeline (stand-in, stream, worker) that
every end-to-end module shares, and one way to wait for deliveries.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from consumer import config, wiring
from consumer.capture_rules import DOUBLE_OVERFLOW_INT, MAX_EVENT_BYTES, MAX_EVENT_DEPTH
from consumer.deadletter import DeadLetter
from consumer.errors import ConfigError, RecordError
from consumer.event_ids import event_uuid
from consumer.mapping import REASONS, Mapper, MappingRules
from consumer.record import KinesisRecord, MappedEvent
from local import harness, kpl
from local.capture_rules import FILTERED_EVENT_NAMES
from local.captured_event import CaptureEnvelope, captured_distinct_id, captured_message_bytes
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


class InlineExecutor(concurrent.futures.Executor):
    """Runs each call as it is submitted: delivery's sender thread made synchronous.

    For tests that count exactly what was mapped when each request went out; the real
    overlap (the next batch mapped while one is in flight) is tested with the thread.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, as a thread would
            future.set_exception(exc)
        return future


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
            {
                "url": url,
                "body": document,
                "raw_body": body,
                "headers": dict(headers),
                "timeout": timeout,
            }
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


# Mapping: records of known bytes, and the checks an event must pass to reach PostHog
# (tests/test_mapping.py, test_capture_rules.py, test_timestamps.py).
#
# The promise under test: Mapper.map returns a MappedEvent that PostHog's capture can read,
# or raises RecordError with a reason in REASONS, and nothing else, whatever the bytes.

SHARD = "shardId-000000000007"
ARRIVAL_MILLIS = 1_700_000_000_123
ARRIVAL_TEXT = "2023-11-14T22:13:20.123Z"
TIMESTAMP_FORM = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
EVENT_KEYS = {"event", "distinct_id", "properties", "timestamp", "uuid"}
# The longest client address capture can put in a message (IPv6 with an IPv4 tail).
LONGEST_IP = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"


def source_of(module: ModuleType) -> Path:
    """A module of the package's source file, also where it runs compiled.

    Not from its ``__file__``: mypyc gives a compiled module first imported by another
    compiled one a path that does not exist (consumer/consumer/...).
    """
    package, _, name = module.__name__.rpartition(".")
    return Path(str(sys.modules[package].__file__)).with_name(f"{name}.py")


def event_of(mapper: Mapper, record: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(mapper.map(record).payload)
    return result


def deep(levels: int, leaf: str = "1", *, kind: str = "[") -> str:
    """JSON text of ``leaf`` inside ``levels`` arrays (or objects), built without recursion."""
    if kind == "[":
        return "[" * levels + leaf + "]" * levels
    return '{"k":' * levels + leaf + "}" * levels


def record_of(
    text: str | bytes, *, partition_key: str = "pk-1", arrival_millis: int = ARRIVAL_MILLIS
) -> KinesisRecord:
    """A record holding ``text`` verbatim (str is encoded as UTF-8)."""
    data = text.encode() if isinstance(text, str) else text
    return KinesisRecord(data, partition_key, "4959033827", 0, arrival_millis)


def _refuse_constant(name: str) -> Any:
    raise AssertionError(f"{name} in a payload: PostHog's capture refuses it")


def _finite_float(text: str) -> float:
    value = float(text)
    assert abs(value) != float("inf"), "a number beyond a double: capture refuses it"
    return value


def _double_range_int(text: str) -> int:
    value = int(text)
    assert -DOUBLE_OVERFLOW_INT < value < DOUBLE_OVERFLOW_INT, "capture refuses this integer"
    return value


def check_readable_by_capture(value: Any) -> None:
    """Fail unless ``value`` nests at most MAX_EVENT_DEPTH deep and all its text is UTF-8."""
    level, depth = [value], 1
    while level:
        assert depth <= MAX_EVENT_DEPTH, "nested deeper than capture's serde_json reads"
        below = []
        for item in level:
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                for text in (key, child):
                    if isinstance(text, str):
                        text.encode("utf-8")  # raises on a lone surrogate
                if isinstance(child, dict | list):
                    below.append(child)
        level, depth = below, depth + 1


def check_event(mapped: MappedEvent) -> dict[str, Any]:
    """Read ``mapped`` as strictly as PostHog's capture would, and check the event's shape
    and capture's per-event rules (as the stand-in applies them)."""
    assert len(mapped.payload) <= MAX_EVENT_BYTES
    text = mapped.payload.decode("utf-8")  # strict: no invalid UTF-8, no encoded surrogate
    event = json.loads(
        text,
        parse_constant=_refuse_constant,
        parse_float=_finite_float,
        parse_int=_double_range_int,
    )
    assert isinstance(event, dict)
    assert set(event) == EVENT_KEYS
    assert isinstance(event["event"], str)
    assert event["event"].strip()
    assert isinstance(event["distinct_id"], str)
    assert event["distinct_id"]
    assert event["uuid"] == mapped.uuid
    assert uuid.UUID(mapped.uuid).version == 5
    assert TIMESTAMP_FORM.fullmatch(event["timestamp"])
    check_readable_by_capture(event)
    # capture's rules: a distinct id not blank once trimmed as Rust trims, a boolean
    # $cookieless_mode if any, a name it does not filter out, a message within the limit.
    assert captured_distinct_id(event) is not None, "capture finds no distinct id"
    cookieless = event["properties"].get("$cookieless_mode", False)
    assert isinstance(cookieless, bool), "capture refuses a $cookieless_mode not boolean"
    assert event["event"] not in FILTERED_EVENT_NAMES
    assert standin_measure(mapped.payload) <= MAX_EVENT_BYTES
    return event


def outcome(rules: MappingRules, record: KinesisRecord) -> MappedEvent | RecordError:
    """Map ``record``; fail the test on anything but a readable event or a known reason."""
    error: RecordError | None = None
    try:
        mapped = Mapper(rules, SHARD).map(record)
    except RecordError as exc:
        error = exc
    if error is not None:
        assert error.reason in REASONS, error.reason
        return error
    check_event(mapped)
    return mapped


@functools.cache
def rules_of(overrides: tuple[tuple[str, str], ...] = ()) -> MappingRules:
    """The mapping rules of BASE_PROPERTIES and ``overrides`` (cached: Hypothesis asks often)."""
    values = {**BASE_PROPERTIES, "fallbackDistinctId": "anon", **dict(overrides)}
    return wiring.mapping_rules(config.from_mapping(values))


def reason_of(rules: MappingRules, record: KinesisRecord) -> str | None:
    """The RecordError reason for ``record``, or None when it maps (checked) to an event."""
    result = outcome(rules, record)
    return result.reason if isinstance(result, RecordError) else None


def event_for(rules: MappingRules, record: KinesisRecord) -> dict[str, Any]:
    """The (checked) event ``record`` maps to; fails if it is refused."""
    result = outcome(rules, record)
    assert isinstance(result, MappedEvent), result
    return check_event(result)


def standin_measure(payload: bytes) -> int:
    """The Kafka message capture would build of ``payload``, as the stand-in measures it."""
    envelope = CaptureEnvelope(token=BASE_PROPERTIES["posthogApiKey"], ip=LONGEST_IP)
    return captured_message_bytes(json.loads(payload), envelope)


# Settings (tests/test_config.py, test_kclkeys.py, test_urls.py, test_settings_parsers.py).


def assert_rejected(
    make_settings: SettingsFactory,
    overrides: dict[str, str | None] | dict[str, str],
    key: str,
    value: str,
    allowed: str,
) -> None:
    """Building the settings fails with one line naming ``key`` and ``value``, saying ``allowed``."""
    with pytest.raises(ConfigError) as caught:
        make_settings(**overrides)
    message = str(caught.value)
    assert caught.value.key == key
    assert message.startswith(f"invalid configuration {key} = {value!r}: "), message
    assert allowed in caught.value.allowed, message


# Dead letters (tests/test_deadletter.py, test_kinesis_sink.py).


def letter(  # noqa: PLR0913 - every field of an entry can matter to a test
    data: bytes = b"{}",
    *,
    key: str = "pk-1",
    detail: str = "d",
    reason: str = "not_json",
    sequence: str = "49590338271490256608559692538361571095921575989136588898",
    stream: str = "events",
) -> DeadLetter:
    return DeadLetter.of(
        KinesisRecord(data, key, sequence, 3, 1_700_000_000_123),
        stream=stream,
        shard_id="shardId-000000000001",
        reason=reason,
        detail=detail,
    )


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


def put_aggregated(
    client: Any,
    stream: str,
    aggregates: Sequence[tuple[str, Sequence[tuple[bytes, dict[str, Any]]]]],
) -> list[Put]:
    """Put KPL aggregates (one Kinesis record each, of ``(data, document)`` user records under
    one key); return one :class:`Put` per user record, its uuid from its sub-sequence number."""
    slots = harness.put_and_place(
        client,
        stream,
        [(key, kpl.aggregate(key, [data for data, _ in users])) for key, users in aggregates],
    )
    puts: list[Put] = []
    for (key, users), slot in zip(aggregates, slots, strict=True):
        for sub, (data, document) in enumerate(users):
            record = KinesisRecord(data, key, slot["SequenceNumber"], sub, 0)
            shard = slot["ShardId"]
            uuid_ = event_uuid(stream, shard, record)
            puts.append(Put(document, data, key, shard, slot["SequenceNumber"], uuid_))
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


def worker_properties(
    endpoints: Emulators,
    standin: harness.StandIn,
    *,
    application: str,
    stream: str,
    dead_letter: Path,
    **extra: str,
) -> dict[str, str]:
    """A worker's settings on the emulators and the stand-in, mapping :func:`good` records."""
    return {
        "applicationName": application,
        "streamName": stream,
        "regionName": "us-east-1",
        "kinesisEndpoint": endpoints.kinesis_endpoint,
        "dynamoDBEndpoint": endpoints.dynamodb_endpoint,
        **harness.FAST_KCL,
        "eventKey": "properties.eventName",
        "additionalPropertyMappings": "properties.userId:distinct_id, properties.foo:foo, "
        "context.page\\.url:url, context.tags.1:tag",
        "timestampKey": "meta.ts",
        "posthogHost": standin.url,
        "posthogApiKey": standin.api_key,
        "deadLetter": f"file:{dead_letter}",
        "checkpointIntervalSeconds": "1",
        "checkpointIntervalRecords": "50",
        "batchMaxEvents": "40",
        "posthogTimeoutSeconds": "2",
        **extra,
    }


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
            worker_properties(
                endpoints,
                self.standin,
                application="kinesis-posthog-e2e",
                stream=STREAM,
                dead_letter=self.dead_letter,
                # One worker at a time, restarted after kills and crashes: with the same id
                # it is KCL's leader again at once, instead of waiting out the dead
                # leader's 120 s lock (README "Many workers"; tests/test_e2e_scale.py
                # measures that gap with fresh ids).
                workerId="e2e-worker",
            ),
        )
        self.worker: harness.Worker | None = None
        self.starts = 0

    def start(self, **env: str) -> harness.Worker:
        self.starts += 1
        self.worker = harness.Worker.start(
            self.properties, self.workdir / f"worker-{self.starts}.log", env
        )
        return self.worker

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
