"""End to end on real parts: kinesis-mock and moto over HTTP, the real KCL daemon, our
processor, and the capture stand-in. One application (lease table) serves the whole
module, because every fresh KCL application waits 30-60 s before reading; the tests
run in file order and each builds on the stream the previous one left.

Each test prints its figures (run with ``-s`` to see them).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from consumer.exits import ExitStatus
from consumer.timestamps import format_timestamp
from local import harness
from local.emulators import LOCAL_ENV, Emulators
from tests.e2e_support import Put, elapsed_since, good, put_all, read_dead_letters, wait_for_events

pytestmark = pytest.mark.e2e

STREAM = "e2e-events"
SHARDS = 4
FIRST_START_TIMEOUT = 180.0
RESTART_TIMEOUT = 150.0
OUTAGE_PHASE_SECONDS = 8.0
ECS_STOP_TIMEOUT_SECONDS = 30.0  # ECS stopTimeout default: SIGKILL follows

BAD_RECORDS = [
    (b"\xff\xfe not utf-8", "not_utf8"),
    (b"{not json", "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (b'{"properties": {"userId": "u"}}', "missing_event"),
    (b'{"properties": {"eventName": {"nested": true}}}', "invalid_event"),
    (b'{"properties": {"eventName": "poison", "userId": "u"}}', "rejected_by_posthog"),
    # Hostile records: each of these once ended the shard process, and so the worker, for good.
    (
        b'{"properties": {"eventName": "x", "userId": "u"}, "deep": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}",
        "too_deep",
    ),
    (
        b'{"properties": {"eventName": "x", "userId": "u"}, "n": ' + b"7" * 5000 + b"}",
        "number_out_of_range",
    ),
]
# Hostile but mappable: an unreadable time falls back to the arrival time, and the event arrives.
HOSTILE_GOOD: list[dict[str, Any]] = [
    # A lone surrogate escape arrives as U+FFFD, as PostHog's capture would store it.
    {"properties": {"eventName": "odd-time", "userId": "u", "foo": "\ud800"}},
    {
        "properties": {"eventName": "odd-time", "userId": "u"},
        "meta": {"ts": "0001-01-01T00:00:00+01:00"},
    },
    {"properties": {"eventName": "odd-time", "userId": "u"}, "meta": {"ts": int("9" * 400)}},
]


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


@pytest.fixture(scope="module", name="pipeline")
def _pipeline(tmp_path_factory: pytest.TempPathFactory, emulators: Emulators) -> Iterator[Pipeline]:
    pipeline = Pipeline(tmp_path_factory.mktemp("e2e"), emulators)
    pipeline.standin.control(reject_events=["poison"])
    try:
        yield pipeline
    finally:
        if pipeline.worker is not None:
            pipeline.worker.stop()
        pipeline.standin.close()


def _group_alive(worker: harness.Worker | None) -> bool:
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


def test_every_record_arrives_once_mapped(pipeline: Pipeline) -> None:
    """Several hundred records on 4 shards, good and bad mixed: each good one arrives once,
    correctly mapped; each bad one is in the dead-letter file with its reason."""
    items: list[tuple[str, bytes, dict[str, Any] | None]] = [
        good(n, with_time=n % 3 != 0) for n in range(400)
    ]
    for index, (data, _) in enumerate(BAD_RECORDS):
        items.insert(index * 40 + 7, (f"bad-{index}", data, None))
    for index, hostile in enumerate(HOSTILE_GOOD):
        items.insert(index * 90 + 30, (f"odd-{index}", json.dumps(hostile).encode(), hostile))
    before = time.time()
    pipeline.puts = put_all(pipeline.kinesis, STREAM, items)
    after = time.time()
    start = time.monotonic()
    pipeline.start()
    harness.wait_until(lambda: pipeline.standin.stats()["events"] > 0, FIRST_START_TIMEOUT)
    first = elapsed_since(start)
    expected = pipeline.good_puts()
    events = wait_for_events(pipeline.standin, len(expected), 60)
    print(f"\n[e2e] first event after {first}; {len(events)} events after {elapsed_since(start)}")

    assert len(events) == len(expected), "every good record arrives, none twice"
    received = by_uuid(events)
    assert len(received) == len(events), "no uuid twice"
    for put in expected:
        event = received[put.uuid]
        document = put.document
        assert document is not None
        if document in HOSTILE_GOOD:
            assert event["event"] == "odd-time"
            assert event["properties"].get("foo", "\ufffd") == "\ufffd"
            continue
        assert event["event"] == document["properties"]["eventName"]
        assert event["distinct_id"] == document["properties"]["userId"]
        assert event["properties"]["foo"] == document["properties"]["foo"]
        assert event["properties"]["url"] == document["context"]["page.url"]
        assert event["properties"]["tag"] == document["context"]["tags"][1]
        assert event["properties"]["$kinesis_shard_id"] == put.shard_id
        if "meta" in document:
            assert event["timestamp"] == format_timestamp(
                datetime.fromtimestamp(document["meta"]["ts"], tz=UTC)
            )
        else:
            stamp = datetime.fromisoformat(event["timestamp"]).timestamp()
            assert before - 1 <= stamp <= after + 1, "arrival time when the record has none"

    harness.wait_until(lambda: len(read_dead_letters(pipeline.dead_letter)) >= len(BAD_RECORDS), 30)
    dead = read_dead_letters(pipeline.dead_letter)
    positions = {(p.shard_id, p.sequence_number): p for p in pipeline.puts}
    reasons = Counter(entry["reason"] for entry in dead)
    assert reasons == Counter(reason for _, reason in BAD_RECORDS)
    for entry in dead:
        put = positions[(entry["shardId"], entry["sequenceNumber"])]
        assert base64.b64decode(entry["data"]) == put.data
    # No record ended a shard process: the daemon is up and each shard started exactly once.
    assert pipeline.worker is not None
    assert pipeline.worker.process.poll() is None, "the worker is still running"
    log = (pipeline.workdir / "worker-1.log").read_text()
    assert len(re.findall(r"shard shardId-\d+: starting after", log)) == SHARDS, "no restart"


def test_graceful_restart_resends_nothing(pipeline: Pipeline) -> None:
    """SIGTERM checkpoints what was delivered; the next worker sends only new records."""
    assert pipeline.worker is not None
    stop_started = time.monotonic()
    status = pipeline.worker.stop()
    print(f"\n[e2e] graceful stop took {elapsed_since(stop_started)} (exit status {status})")
    before = pipeline.standin.stats()["events"]
    new = put_all(pipeline.kinesis, STREAM, [good(n) for n in range(1000, 1100)])
    pipeline.puts += new
    start = time.monotonic()
    pipeline.start()
    events = wait_for_events(pipeline.standin, before + len(new), RESTART_TIMEOUT)
    print(f"[e2e] restart: {len(events) - before} new events after {elapsed_since(start)}")
    time.sleep(3)  # anything re-sent would arrive now
    events = pipeline.standin.events()
    assert len(events) == before + len(new), "no record re-sent after a graceful stop"
    assert {e["uuid"] for e in events[before:]} == {p.uuid for p in new}


def test_kill_9_loses_nothing_and_replays_identically(pipeline: Pipeline) -> None:
    """kill -9 of the whole worker mid-stream, three times: every record arrives, and every
    duplicate is byte-identical to its original (same uuid and timestamp)."""
    assert pipeline.worker is not None
    before = pipeline.standin.stats()["events"]  # before the put: the live worker starts at once
    new = put_all(pipeline.kinesis, STREAM, [good(n) for n in range(2000, 2600)])
    pipeline.puts += new
    for kill in range(3):
        seen: int = pipeline.standin.stats()["events"]

        def moved(since: int = seen) -> bool:
            return bool(pipeline.standin.stats()["events"] > since)

        harness.wait_until(moved, RESTART_TIMEOUT, 0.05)
        pipeline.worker.kill()
        print(
            f"\n[e2e] kill -9 #{kill + 1} after {pipeline.standin.stats()['events'] - before} new events"
        )
        pipeline.start()
        if kill < 2:
            # Slow PostHog down so the next kill lands mid-stream, not after the end.
            pipeline.standin.control(reject_events=["poison"], hang_seconds=0.3)
    pipeline.standin.control(reject_events=["poison"])
    wanted = {p.uuid for p in new}
    harness.wait_until(
        lambda: wanted <= {e["uuid"] for e in pipeline.standin.events(before)}, RESTART_TIMEOUT
    )
    events = pipeline.standin.events(before)
    arrived = Counter(e["uuid"] for e in events)
    assert wanted <= set(arrived), "every record arrived"
    duplicates = {u: n for u, n in arrived.items() if n > 1}
    print(
        f"[e2e] {len(events)} deliveries for {len(wanted)} records; {len(duplicates)} records delivered twice or more"
    )
    assert duplicates, "the kills landed mid-stream, so some records were replayed"
    # Compare the bytes PostHog received, not parsed dicts: a replay must be byte-identical.
    raw = pipeline.standin.raw_events(before)
    assert len(raw) == len(events)
    originals: dict[str, str] = {}
    for event, text in zip(events, raw, strict=True):
        first = originals.setdefault(event["uuid"], text)
        assert first == text, "a replay is the same event, byte for byte"


def test_posthog_outage_waits_and_loses_nothing(pipeline: Pipeline) -> None:
    """PostHog answers 503, then refuses connections, then hangs past the client timeout;
    when it is back every record arrives, and the request rate while down stays low."""
    before = pipeline.standin.stats()["events"]
    pipeline.standin.control(status=503)
    new = put_all(pipeline.kinesis, STREAM, [good(n) for n in range(4000, 4100)])
    harness.wait_until(
        lambda: any(r["status"] == 503 for r in pipeline.standin.requests()), RESTART_TIMEOUT
    )
    time.sleep(OUTAGE_PHASE_SECONDS)
    refused = [r for r in pipeline.standin.requests() if r["status"] == 503]
    pipeline.standin.close()  # connection refused
    time.sleep(OUTAGE_PHASE_SECONDS)
    pipeline.standin.restart()
    pipeline.standin.control(
        reject_events=["poison"], hang_seconds=4
    )  # past the 2 s client timeout
    # Backoff has grown by now; hold the hang until at least one attempt has timed out in it.
    harness.wait_until(lambda: len(pipeline.standin.requests()) > 0, RESTART_TIMEOUT)
    hung = len(pipeline.standin.requests())
    pipeline.standin.control(reject_events=["poison"])
    wanted = {p.uuid for p in new}
    harness.wait_until(
        lambda: wanted <= {e["uuid"] for e in pipeline.standin.events(before)}, RESTART_TIMEOUT
    )
    span = refused[-1]["time"] - refused[0]["time"] if len(refused) > 1 else 0.0
    print(
        f"\n[e2e] outage: {len(refused)} requests answered 503 over {span:.1f}s "
        f"({len(refused) / max(span, 1.0):.2f}/s for all shards), {hung} requests during the hang"
    )
    assert wanted <= {e["uuid"] for e in pipeline.standin.events(before)}, "nothing lost"
    assert hung > 0, "the hang phase was exercised"
    # Backoff 0.5 s doubling to 30 s, per shard: far below one request per second per shard.
    assert len(refused) <= SHARDS * 8


def test_sigterm_while_posthog_is_down_exits_in_time_and_loses_nothing(pipeline: Pipeline) -> None:
    """ECS stops the task while a batch cannot be delivered: the worker exits within ECS's
    default 30 s stop timeout, nothing stuck is checkpointed, and the next worker delivers it."""
    assert pipeline.worker is not None
    before = pipeline.standin.stats()["events"]
    pipeline.standin.control(reject_events=["poison"], status=503)
    first_request = len(pipeline.standin.requests())
    new = put_all(pipeline.kinesis, STREAM, [good(n) for n in range(4500, 4540)])
    harness.wait_until(
        lambda: any(r["status"] == 503 for r in pipeline.standin.requests()[first_request:]),
        RESTART_TIMEOUT,
    )
    start = time.monotonic()
    status = pipeline.worker.stop(timeout=60)
    stopped_in = time.monotonic() - start
    # Shard processes and the watchdog notice the daemon is gone within a few seconds.
    group_empty = harness.wait_until(lambda: not _group_alive(pipeline.worker), 10)
    print(
        f"\n[e2e] SIGTERM with PostHog down: worker exited in {stopped_in:.1f}s (status {status})"
    )
    assert stopped_in < ECS_STOP_TIMEOUT_SECONDS
    assert group_empty, "no shard process outlives its daemon"
    pipeline.standin.control(reject_events=["poison"])
    pipeline.start()
    wanted = {p.uuid for p in new}
    harness.wait_until(
        lambda: wanted <= {e["uuid"] for e in pipeline.standin.events(before)}, RESTART_TIMEOUT
    )
    assert wanted <= {e["uuid"] for e in pipeline.standin.events(before)}


def test_retry_after_is_honoured(pipeline: Pipeline) -> None:
    """A 429 with Retry-After: 3 delays that shard's next attempt by at least 3 s."""
    first_request = len(pipeline.standin.requests())
    pipeline.standin.control(reject_events=["poison"], status=429, remaining=1, retry_after="3")
    new = put_all(pipeline.kinesis, STREAM, [("one-key", *good(n)[1:]) for n in range(5000, 5005)])
    wanted = {p.uuid for p in new}
    harness.wait_until(
        lambda: wanted <= {e["uuid"] for e in pipeline.standin.events()}, RESTART_TIMEOUT
    )
    requests = pipeline.standin.requests()[first_request:]
    limited = next(r for r in requests if r["status"] == 429)
    retry = next(
        r for r in requests if r["time"] > limited["time"] and r["shards"] == limited["shards"]
    )
    waited = retry["time"] - limited["time"]
    print(f"\n[e2e] retry after a 429 with Retry-After: 3 came {waited:.2f}s later")
    assert waited >= 2.95


def test_wrong_key_stops_a_worker_before_it_reads(pipeline: Pipeline) -> None:
    """PostHog's capture answers 200 to a well-formed but wrong key and drops the events
    later, so the key is proven at start-up: a second worker started with a wrong key exits
    78 with one line before its daemon starts, while the running worker goes on delivering."""
    assert pipeline.worker is not None
    before = pipeline.standin.stats()
    new = put_all(pipeline.kinesis, STREAM, [good(n) for n in range(3000, 3020)])
    start = time.monotonic()
    wrong = harness.Worker.start(
        pipeline.properties,
        pipeline.workdir / "wrong-key.log",
        {"POSTHOG_API_KEY": "phc_wrong_key"},
    )
    status = wrong.process.wait(RESTART_TIMEOUT)
    print(f"\n[e2e] wrong key: worker exited with {status} after {elapsed_since(start)}")
    assert status == ExitStatus.CONFIG
    log = (pipeline.workdir / "wrong-key.log").read_text()
    assert "POSTHOG_API_KEY" in log
    assert "MultiLangDaemon" not in log, "the daemon never started"
    assert "phc_wrong_key" not in log, "the key is not echoed"
    wanted = {p.uuid for p in new}
    harness.wait_until(
        lambda: wanted <= {e["uuid"] for e in pipeline.standin.events(before["events"])},
        RESTART_TIMEOUT,
    )
    assert wanted <= {e["uuid"] for e in pipeline.standin.events(before["events"])}
    assert pipeline.standin.stats().get("dropped", {}) == before.get("dropped", {})


def test_host_refusing_every_event_stops_without_dead_lettering(pipeline: Pipeline) -> None:
    """A proxy or wrong path that answers 400 to everything: the worker stops (78) after a
    bounded number of requests, dead-letters nothing, and a fixed host delivers every record."""
    assert pipeline.worker is not None
    dead_before = len(read_dead_letters(pipeline.dead_letter))
    first_request = len(pipeline.standin.requests())
    pipeline.standin.control(reject_all=True)
    # One partition key: one shard reads all 40 in one call, as a backlog would arrive.
    new = put_all(
        pipeline.kinesis, STREAM, [("refused-key", *good(n)[1:]) for n in range(3500, 3540)]
    )
    start = time.monotonic()
    status = pipeline.worker.process.wait(RESTART_TIMEOUT)
    requests = pipeline.standin.requests()[first_request:]
    print(
        f"\n[e2e] every event refused: worker exited {status} after {elapsed_since(start)}, "
        f"{len(requests)} requests"
    )
    assert status != 0
    assert len(read_dead_letters(pipeline.dead_letter)) == dead_before, "nothing dead-lettered"
    pipeline.standin.control(reject_events=["poison"])
    before = pipeline.standin.stats()["events"]
    pipeline.start()
    wanted = {p.uuid for p in new}
    harness.wait_until(
        lambda: wanted <= {e["uuid"] for e in pipeline.standin.events()}, RESTART_TIMEOUT
    )
    assert wanted <= {e["uuid"] for e in pipeline.standin.events()}
    assert pipeline.standin.stats()["events"] > before


def test_lease_loss_mid_batch_never_checkpoints(pipeline: Pipeline, emulators: Emulators) -> None:
    """Another owner takes the lease while our shard process is stuck mid-batch: when the
    batch finally goes through, the loser's checkpoint is refused and the lease's
    checkpoint stays where it was; the records then arrive under the next owner."""
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=emulators.dynamodb_endpoint,
        region_name=LOCAL_ENV["AWS_REGION"],
        aws_access_key_id=LOCAL_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    table = "kinesis-posthog-e2e"
    before = pipeline.standin.stats()["events"]
    pipeline.standin.control(
        reject_events=["poison"], hang_seconds=5
    )  # every attempt times out (2 s)
    new = put_all(
        pipeline.kinesis, STREAM, [("lease-key", *good(n)[1:]) for n in range(6000, 6020)]
    )
    shard = new[0].shard_id
    key = {"leaseKey": {"S": shard}}
    time.sleep(4)  # the shard process is now retrying its batch
    checkpoint_before = dynamodb.get_item(TableName=table, Key=key)["Item"]["checkpoint"]["S"]

    def steal() -> None:
        dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET leaseOwner = :thief ADD leaseCounter :one",
            ExpressionAttributeValues={":thief": {"S": "thief-worker"}, ":one": {"N": "1"}},
        )

    steal()
    deadline = time.monotonic() + 8  # the thief renews, as a live worker would
    while time.monotonic() < deadline:
        time.sleep(1)
        steal()
    pipeline.standin.control(reject_events=["poison"])  # the stuck batch now goes through
    log_file = pipeline.workdir / f"worker-{pipeline.starts}.log"
    refused = re.compile(rf"shard {shard}: (lease gone|checkpoint at \S+ refused)")
    deadline = time.monotonic() + 60
    while not refused.search(log_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.5)
        steal()
    checkpoint_after = dynamodb.get_item(TableName=table, Key=key)["Item"]["checkpoint"]["S"]
    match = refused.search(log_file.read_text())
    print(
        f"\n[e2e] lease stolen mid-batch: loser's checkpoint -> {match.group(0) if match else None!r}"
    )
    assert match is not None, "the loser tried to checkpoint after delivering, and was refused"
    assert checkpoint_after == checkpoint_before, "the lease's checkpoint did not move"
    # The thief stops renewing; the lease expires and is reassigned; nothing is missing.
    wanted = {p.uuid for p in new}
    harness.wait_until(
        lambda: wanted <= {e["uuid"] for e in pipeline.standin.events(before)}, RESTART_TIMEOUT
    )
    assert wanted <= {e["uuid"] for e in pipeline.standin.events(before)}
