"""End to end on real parts: kinesis-mock and moto over HTTP, the real KCL daemon, our
processor, and the capture stand-in: records arrive mapped, restarts and crashes lose
nothing. One KCL application (the session's ``pipeline`` fixture) serves every
end-to-end module, because every fresh application waits 30-60 s before reading; each
test gets a reading worker from ``pipeline.running_worker()``, so it also runs alone
(``-k``). Each test prints its figures (run with ``-s`` to see them).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from consumer import hot_path
from consumer.timestamps import format_timestamp
from local import harness
from tests.support import (
    FIRST_START_TIMEOUT,
    RESTART_TIMEOUT,
    SHARDS,
    STREAM,
    Pipeline,
    Put,
    by_uuid,
    elapsed_since,
    good,
    put_aggregated,
    put_all,
    read_dead_letters,
    wait_delivered,
)

pytestmark = pytest.mark.e2e

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
    since = pipeline.standin.stats()["events"]
    dead_before = len(read_dead_letters(pipeline.dead_letter))
    before = time.time()
    puts = put_all(pipeline.kinesis, STREAM, items)
    after = time.time()
    start = time.monotonic()
    if pipeline.worker is None or pipeline.worker.process.poll() is not None:
        pipeline.start()
    assert pipeline.worker is not None
    harness.wait_until(lambda: pipeline.standin.stats()["events"] > since, FIRST_START_TIMEOUT)
    first = elapsed_since(start)
    expected = [put for put in puts if put.document is not None]
    events = wait_delivered(pipeline.standin, expected, RESTART_TIMEOUT, since)
    time.sleep(2)  # anything sent twice would arrive now
    events = pipeline.standin.events(since)
    print(f"\n[e2e] first event after {first}; {len(events)} events after {elapsed_since(start)}")

    assert len(events) == len(expected), "every good record arrives, none twice"
    received = by_uuid(events)
    assert len(received) == len(events), "no uuid twice"
    for put in expected:
        assert_mapped(received[put.uuid], put, before, after)

    def all_dead_lettered() -> bool:
        return len(read_dead_letters(pipeline.dead_letter)) >= dead_before + len(BAD_RECORDS)

    harness.wait_until(all_dead_lettered, 30)
    dead = read_dead_letters(pipeline.dead_letter)[dead_before:]
    positions = {(p.shard_id, p.sequence_number): p for p in puts}
    reasons = Counter(entry["reason"] for entry in dead)
    assert reasons == Counter(reason for _, reason in BAD_RECORDS)
    for entry in dead:
        put = positions[(entry["shardId"], entry["sequenceNumber"])]
        assert base64.b64decode(entry["data"]) == put.data
    # No record ended a shard process: the daemon is up and each shard started exactly once.
    assert pipeline.worker.process.poll() is None, "the worker is still running"
    log = (pipeline.workdir / f"worker-{pipeline.starts}.log").read_text()
    assert len(re.findall(r"shard shardId-\d+: starting after", log)) == SHARDS, "no restart"
    # The start-up log says which build maps the records (consumer/hot_path.py).
    assert hot_path.describe() in log


def test_graceful_restart_resends_nothing(pipeline: Pipeline) -> None:
    """SIGTERM to the whole process group (systemd's stop; ECS's, to the daemon alone, is in
    test_e2e_faults.py) checkpoints what was delivered; the next worker sends only new records."""
    worker = pipeline.running_worker()
    stop_started = time.monotonic()
    status = worker.stop(group=True)
    print(f"\n[e2e] graceful stop took {elapsed_since(stop_started)} (exit status {status})")
    before = pipeline.standin.stats()["events"]
    new = put_all(pipeline.kinesis, STREAM, [good(n) for n in range(1000, 1100)])
    start = time.monotonic()
    pipeline.start()
    events = wait_delivered(pipeline.standin, new, RESTART_TIMEOUT, before)
    print(f"[e2e] restart: {len(events)} new events after {elapsed_since(start)}")
    time.sleep(3)  # anything re-sent would arrive now
    events = pipeline.standin.events()
    assert len(events) == before + len(new), "no record re-sent after a graceful stop"
    assert {e["uuid"] for e in events[before:]} == {p.uuid for p in new}


def kpl_aggregates(
    first: int, count: int, size: int
) -> list[tuple[str, list[tuple[bytes, dict[str, Any]]]]]:
    """``count`` KPL aggregates of ``size`` good user records each, one partition key apiece."""
    return [
        (
            f"kpl-{first + index}",
            [good(n)[1:] for n in range(first + index * size, first + (index + 1) * size)],
        )
        for index in range(count)
    ]


def test_kpl_aggregates_become_one_event_per_user_record(pipeline: Pipeline) -> None:
    """Records the Kinesis Producer Library aggregated: the daemon splits them, and each user
    record becomes its own event, its uuid from its sub-sequence number."""
    pipeline.running_worker()
    since = pipeline.standin.stats()["events"]
    puts = put_aggregated(pipeline.kinesis, STREAM, kpl_aggregates(7000, 4, 25))
    events = wait_delivered(pipeline.standin, puts, RESTART_TIMEOUT, since)
    time.sleep(2)  # anything sent twice would arrive now
    events = pipeline.standin.events(since)
    print(f"\n[e2e] {len(puts)} user records in 4 KPL aggregates -> {len(events)} events")
    assert len({put.uuid for put in puts}) == len(puts), "one uuid per user record"
    assert len(events) == len(puts), "each user record arrives once"
    received = by_uuid(events)
    for put in puts:
        assert put.document is not None
        event = received[put.uuid]
        assert event["properties"]["foo"] == put.document["properties"]["foo"]
        assert event["properties"]["$kinesis_sequence_number"] == put.sequence_number


def test_kill_9_loses_nothing_and_replays_identically(pipeline: Pipeline) -> None:
    """kill -9 of the whole worker mid-stream, three times: every record arrives, and every
    duplicate is byte-identical to its original (same uuid and timestamp), KPL-aggregated
    user records included."""
    worker = pipeline.running_worker()
    before = pipeline.standin.stats()["events"]  # before the put: the live worker starts at once
    # Aggregates first, so the first kill (as soon as events move) likely lands inside one.
    aggregated = put_aggregated(pipeline.kinesis, STREAM, kpl_aggregates(2600, 4, 100))
    new = aggregated + put_all(pipeline.kinesis, STREAM, [good(n) for n in range(2000, 2400)])
    for kill in range(3):
        seen: int = pipeline.standin.stats()["events"]

        def moved(since: int = seen) -> bool:
            return bool(pipeline.standin.stats()["events"] > since)

        harness.wait_until(moved, RESTART_TIMEOUT, 0.05)
        worker.kill()
        print(
            f"\n[e2e] kill -9 #{kill + 1} after {pipeline.standin.stats()['events'] - before} new events"
        )
        worker = pipeline.start()
        if kill < 2:
            # Slow PostHog down so the next kill lands mid-stream, not after the end.
            pipeline.standin.control(reject_events=["poison"], hang_seconds=0.3)
    pipeline.standin.control(reject_events=["poison"])
    wanted = {p.uuid for p in new}
    events = wait_delivered(pipeline.standin, new, RESTART_TIMEOUT, before)
    arrived = Counter(e["uuid"] for e in events)
    duplicates = {u: n for u, n in arrived.items() if n > 1}
    print(
        f"[e2e] {len(events)} deliveries for {len(wanted)} records; {len(duplicates)} records delivered twice or more"
    )
    replayed_aggregated = sum(1 for put in aggregated if put.uuid in duplicates)
    print(f"[e2e] of which {replayed_aggregated} of {len(aggregated)} KPL user records")
    # The aggregates come first, so the first kill lands among them.
    assert replayed_aggregated, "a crash mid-aggregate was replayed (byte-identical, below)"
    assert duplicates, "the kills landed mid-stream, so some records were replayed"
    # Compare the bytes PostHog received, not parsed dicts: a replay must be byte-identical.
    raw = pipeline.standin.raw_events(before)
    assert len(raw) == len(events)
    originals: dict[str, str] = {}
    for event, text in zip(events, raw, strict=True):
        first = originals.setdefault(event["uuid"], text)
        assert first == text, "a replay is the same event, byte for byte"


def assert_mapped(event: dict[str, Any], put: Put, before: float, after: float) -> None:
    """``event`` is ``put``'s record mapped as the settings say."""
    document = put.document
    assert document is not None
    if document in HOSTILE_GOOD:
        assert event["event"] == "odd-time"
        if "foo" in document["properties"]:
            assert event["properties"]["foo"] == "\ufffd", "a lone surrogate becomes U+FFFD"
        stamp = datetime.fromisoformat(event["timestamp"]).timestamp()
        assert before - 1 <= stamp <= after + 1, "an unreadable time: the arrival time"
        return
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
