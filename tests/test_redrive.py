"""`redrive`: dead letters mapped again with today's settings and delivered as their first
delivery would have been; what still fails goes to a new destination (consumer/redrive.py).

PostHog is a ScriptedTransport behind a key check that passes; the dead letters are
written by the production sinks (the file sink, or a shard process driven through
amazon-kclpy), and one test reads a dead-letter stream on kinesis-mock.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from amazon_kclpy import kcl
from botocore.exceptions import ClientError

from consumer import config, wiring
from consumer.batching import encode_body
from consumer.deadletter import DeadLetter, FileSink
from consumer.errors import ConfigError, DependencyError
from consumer.event_ids import event_uuid
from consumer.exits import ExitStatus
from consumer.kinesis_sink import KinesisSink
from consumer.mapping import Mapper
from consumer.record import KinesisRecord
from consumer.redrive import redrive, stream_entries
from consumer.sender import BATCH_PATH, Response
from local import harness
from local.emulators import LOCAL_ENV, Emulators
from tests.support import (
    ARRIVAL_MILLIS,
    ARRIVAL_TEXT,
    BASE_PROPERTIES,
    ScriptedTransport,
    read_dead_letters,
)

SHARD = "shardId-000000000005"
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
STAMP = "20250102T030405Z"
# What the flags service answers for a key it knows (consumer/preflight.py reads it).
KEY_KNOWN = Response(200, {}, '{"featureFlags": {}}')
KEY_UNKNOWN = Response(401, {}, '{"type": "authentication_error", "code": "authentication_failed"}')


class PostHog:
    """The flags service (knows the key, unless told) and /batch/, answering from a
    ScriptedTransport; request bodies are kept as sent, to compare them byte for byte."""

    def __init__(self, *answers: Any, key: Response = KEY_KNOWN) -> None:
        self.batch = ScriptedTransport(*answers)
        self.key = key
        self.bodies: list[bytes] = []

    def __call__(self, url: str, body: bytes, headers: Any, timeout: float) -> Any:
        if not url.endswith(BATCH_PATH):
            return self.key
        self.bodies.append(gzip.decompress(body))
        return self.batch(url, body, headers, timeout)

    def events(self) -> list[dict[str, Any]]:
        return [event for request in self.batch.requests for event in request["body"]["batch"]]


def write_props(path: Path, **overrides: str) -> Path:
    return harness.write_properties(path, {**BASE_PROPERTIES, **overrides})


def record(data: bytes, sequence: str = "4959001", *, sub: int = 0) -> KinesisRecord:
    return KinesisRecord(data, "pk-1", sequence, sub, ARRIVAL_MILLIS)


def doc(name: str = "signup", user: str = "u1") -> bytes:
    return json.dumps({"properties": {"eventName": name, "userId": user}}).encode()


def dead_letters(
    path: Path, *records: KinesisRecord, stream: str = "events", shard: str = SHARD
) -> Path:
    """``path`` holding a dead letter of each record, written by the worker's file sink."""
    entries = [
        DeadLetter.of(item, stream=stream, shard_id=shard, reason="missing_event", detail="d")
        for item in records
    ]
    FileSink(path).write(entries)
    return path


def run(
    props: Path,
    source: Path | str,
    posthog: PostHog,
    *,
    now: datetime = NOW,
    sleeps: list[float] | None = None,
    **options: Any,
) -> tuple[int, dict[str, Any] | None]:
    """Redrive ``source``; return the exit status and the summary line (None if none)."""
    out = io.StringIO()
    status = redrive(
        props,
        source=str(source),
        out=out,
        environ={},
        transport=posthog,
        sleep=(sleeps if sleeps is not None else []).append,
        now=lambda: now,
        **options,
    )
    lines = out.getvalue().splitlines()
    assert len(lines) <= 1, "stdout holds the summary line and nothing else"
    return status, json.loads(lines[0]) if lines else None


def first_delivery(props: Path, transport: PostHog, messages: list[dict[str, Any]]) -> None:
    """A shard process of the worker (amazon-kclpy's KCLProcess, the protocol in memory)."""
    settings = config.load(props, {})
    stdin = io.StringIO("".join(json.dumps(message) + "\n" for message in messages))
    processor = wiring.build_processor(settings, transport, sleep=lambda _: None)
    kcl.KCLProcess(processor, stdin, io.StringIO(), io.StringIO()).run()


def kcl_messages(*records: KinesisRecord) -> list[dict[str, Any]]:
    """initialize, one processRecords call as the daemon sends it, then leaseLost."""
    return [
        {
            "action": "initialize",
            "shardId": SHARD,
            "sequenceNumber": "TRIM_HORIZON",
            "subSequenceNumber": 0,
        },
        {
            "action": "processRecords",
            "millisBehindLatest": 0,
            "records": [
                {
                    "action": "record",
                    "data": base64.b64encode(item.data).decode(),
                    "partitionKey": item.partition_key,
                    "sequenceNumber": item.sequence_number,
                    "subSequenceNumber": item.sub_sequence_number,
                    "approximateArrivalTimestamp": item.arrival_millis,
                }
                for item in records
            ],
        },
        {"action": "leaseLost"},
    ]


@pytest.fixture(name="props")
def _props(tmp_path: Path) -> Path:
    """The worker's settings: dead letters to dead.jsonl, no checkpoint due during a test."""
    return write_props(
        tmp_path / "app.properties",
        deadLetter=f"file:{tmp_path / 'dead.jsonl'}",
        additionalPropertyMappings="properties.userId:distinct_id",
        checkpointIntervalSeconds="3600",
    )


# --- Identity: the same event as a first delivery ---------------------------------------


def test_a_redriven_event_is_its_first_delivery_byte_for_byte(props: Path, tmp_path: Path) -> None:
    """The worker sends an event PostHog refuses even alone: it is dead-lettered. Redriven,
    the request PostHog gets is the first one byte for byte (uuid and timestamp included)."""
    refused = PostHog(400)
    first_delivery(props, refused, kcl_messages(record(doc(), sub=2)))
    source = tmp_path / "dead.jsonl"
    assert [entry["reason"] for entry in read_dead_letters(source)] == ["rejected_by_posthog"]

    again = PostHog(200)
    status, summary = run(props, source, again)

    assert status == ExitStatus.OK
    assert again.bodies == refused.bodies
    assert summary == {
        "read": 1,
        "delivered": 1,
        "stillFailing": {},
        "skipped": 0,
        "to": f"file:{tmp_path / f'dead.redrive-{STAMP}.jsonl'}",
    }


def test_a_record_that_maps_now_is_sent_as_a_first_delivery_would_be(
    props: Path, tmp_path: Path
) -> None:
    """A record without the event key is dead-lettered; with today's eventKey it maps, and its
    event is, byte for byte, what a first delivery under today's settings sends."""
    original = record(json.dumps({"properties": {"name": "signup", "userId": "u1"}}).encode())
    first_delivery(props, PostHog(), kcl_messages(original))
    source = tmp_path / "dead.jsonl"
    assert [entry["reason"] for entry in read_dead_letters(source)] == ["missing_event"]

    today = write_props(
        tmp_path / "today.properties",
        eventKey="properties.name",
        additionalPropertyMappings="properties.userId:distinct_id",
    )
    posthog = PostHog(200)
    assert run(today, source, posthog)[0] == ExitStatus.OK

    expected = Mapper(wiring.mapping_rules(config.load(today, {})), SHARD).map(original)
    assert posthog.bodies == [
        encode_body("phc_test", [expected.payload], historical_migration=False)
    ]
    event = posthog.events()[0]
    assert event["uuid"] == event_uuid("events", SHARD, original)
    assert event["timestamp"] == ARRIVAL_TEXT


def test_redriving_twice_sends_the_same_events(props: Path, tmp_path: Path) -> None:
    """A second redrive of the same dead letters sends identical requests (PostHog collapses
    the events by uuid), and writes to a new destination of its own."""
    source = dead_letters(tmp_path / "dead.jsonl", record(doc(), "1"), record(doc("login"), "2"))
    first, second = PostHog(), PostHog()
    _, one = run(props, source, first)
    _, two = run(props, source, second)
    assert first.bodies == second.bodies
    assert len(first.events()) == 2
    assert one is not None
    assert two is not None
    assert (one["to"], two["to"]) == (
        f"file:{tmp_path / f'dead.redrive-{STAMP}.jsonl'}",
        f"file:{tmp_path / f'dead.redrive-{STAMP}-2.jsonl'}",
    )


# --- What still fails, and what is skipped ------------------------------------------------


TOO_LARGE = {
    "reason": "too_large_to_dead_letter",
    "detail": "event_too_large: ...; re-read it from the source stream",
    "originalReason": "event_too_large",
    "stream": "events",
    "shardId": SHARD,
    "sequenceNumber": "4959009",
    "subSequenceNumber": 0,
    "partitionKey": "pk-1",
    "approximateArrivalTimestamp": ARRIVAL_MILLIS,
    "dataLength": 2_000_000,
    "dataSha256": "0" * 64,
}


def entry_of(data: bytes, sequence: str = "4959001") -> str:
    """A dead letter's line, as the worker's sinks write it."""
    letter = DeadLetter.of(
        record(data, sequence), stream="events", shard_id=SHARD, reason="r", detail="d"
    )
    return letter.to_json()


@pytest.mark.parametrize(
    ("entry", "answer", "reason"),
    [
        # Still not an event under today's settings: dead-lettered again, with today's reason.
        (entry_of(b"{oops"), 200, "not_json"),
        # PostHog refuses it even alone: dead-lettered with its answer, as the worker does.
        (entry_of(doc()), 400, "rejected_by_posthog"),
        # Written without its data by the Kinesis sink: nothing to redrive, written on as is.
        (json.dumps(TOO_LARGE), 200, "too_large_to_dead_letter"),
    ],
)
def test_what_still_fails_goes_to_the_new_destination(
    props: Path, tmp_path: Path, entry: str, answer: int, reason: str
) -> None:
    source = tmp_path / "dead.jsonl"
    source.write_text(entry + "\n")
    status, summary = run(props, source, PostHog(answer))
    assert status == ExitStatus.OK
    assert summary is not None
    assert (summary["delivered"], summary["stillFailing"]) == (0, {reason: 1})
    [written] = read_dead_letters(tmp_path / f"dead.redrive-{STAMP}.jsonl")
    assert written["reason"] == reason
    original = json.loads(entry)
    if reason == "too_large_to_dead_letter":
        assert written == original
    else:  # the same record, redrivable again later
        position = (
            "stream",
            "shardId",
            "sequenceNumber",
            "subSequenceNumber",
            "partitionKey",
            "approximateArrivalTimestamp",
            "data",
        )
        assert {key: written[key] for key in position} == {key: original[key] for key in position}


@pytest.mark.parametrize(
    "line",
    [
        # A line torn by a crash (the file sink's own line follows it).
        '{"reason":"not_js',
        # JSON, but not an object.
        "[1, 2]",
        # An object, but no entry (what else DeadLetter.from_json refuses: test_deadletter.py).
        json.dumps({"reason": "not_json", "stream": "events", "shardId": SHARD, "data": ""}),
    ],
)
def test_an_unreadable_entry_is_skipped_and_named(
    props: Path, tmp_path: Path, line: str, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "dead.jsonl"
    source.write_text(f"{line}\n\n{entry_of(doc())}\n")
    posthog = PostHog()
    status, summary = run(props, source, posthog)
    assert status == ExitStatus.OK
    assert summary is not None
    assert (summary["read"], summary["delivered"], summary["skipped"]) == (2, 1, 1)
    assert f"{source}:1: skipped" in caplog.text
    assert read_dead_letters(tmp_path / f"dead.redrive-{STAMP}.jsonl") == []


# --- Where it reads and writes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "to", "key"),
    [
        # The destination is the source, spelled another way.
        ("{tmp}/dead.jsonl", "file:{tmp}/./dead.jsonl", "--to"),
        # The worker's own stream: it would read these dead letters again as input.
        ("{tmp}/dead.jsonl", "kinesis:events", "--to"),
        # Not deadLetter's syntax.
        ("{tmp}/dead.jsonl", "s3:bucket", "--to"),
        # No such file.
        ("{tmp}/missing.jsonl", None, "--from"),
        # Not a stream name.
        ("kinesis:no such stream", None, "--from"),
    ],
)
def test_wrong_sources_and_destinations_are_refused_before_anything_is_sent(
    props: Path, tmp_path: Path, source: str, to: str | None, key: str
) -> None:
    dead_letters(tmp_path / "dead.jsonl", record(doc()))
    posthog = PostHog()
    with pytest.raises(ConfigError) as caught:
        run(
            props,
            source.format(tmp=tmp_path),
            posthog,
            to=None if to is None else to.format(tmp=tmp_path),
        )
    assert caught.value.key == key
    assert posthog.bodies == []


def test_a_dead_letter_of_another_stream_needs_the_option(props: Path, tmp_path: Path) -> None:
    """Refused by default, naming the stream and the option; allowed, the event is that
    stream's: the uuid and $kinesis_stream its own worker gave it."""
    original = record(doc())
    source = dead_letters(tmp_path / "dead.jsonl", original, stream="old-events")
    refused = PostHog()
    with pytest.raises(ConfigError, match=r"'old-events'.*--allow-other-streams") as caught:
        run(props, source, refused)
    assert caught.value.key == "streamName"
    assert refused.bodies == []

    allowed = PostHog()
    assert run(props, source, allowed, allow_other_streams=True)[0] == ExitStatus.OK
    [event] = allowed.events()
    assert event["uuid"] == event_uuid("old-events", SHARD, original)
    assert event["properties"]["$kinesis_stream"] == "old-events"


# --- Delivery, as the worker's ----------------------------------------------------------


def test_events_go_in_batches_in_order(tmp_path: Path) -> None:
    props = write_props(tmp_path / "app.properties", batchMaxEvents="2")
    records = [record(doc(f"e{n}"), str(n)) for n in range(5)]
    posthog = PostHog()
    assert run(props, dead_letters(tmp_path / "dead.jsonl", *records), posthog)[0] == ExitStatus.OK
    batches = [[event["event"] for event in r["body"]["batch"]] for r in posthog.batch.requests]
    assert batches == [["e0", "e1"], ["e2", "e3"], ["e4"]]


def test_an_unreachable_posthog_is_waited_for(props: Path, tmp_path: Path) -> None:
    """Timeouts and 5xx are retried with the worker's backoff, nothing lost or doubled."""
    sleeps: list[float] = []
    posthog = PostHog("timeout", 503, 200)
    source = dead_letters(tmp_path / "dead.jsonl", record(doc()))
    status, summary = run(props, source, posthog, sleeps=sleeps)
    assert status == ExitStatus.OK
    assert summary is not None
    assert summary["delivered"] == 1
    assert len(sleeps) == 2
    assert all(wait > 0 for wait in sleeps)
    assert len(set(posthog.bodies)) == 1  # the same request, sent three times


@pytest.mark.parametrize(
    "answer",
    [
        # The key was refused (revoked since the start-up check).
        401,
        # posthogHost redirects: not PostHog's address.
        (302, {"Location": "https://elsewhere.example/"}),
        # A 200 that is not PostHog's answer (a proxy's page).
        (200, {"Content-Type": "text/html"}, "<html>welcome</html>"),
    ],
)
def test_a_permanent_failure_stops_with_the_worker_s_status_saying_what_was_delivered(
    tmp_path: Path, answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    props = write_props(tmp_path / "app.properties", batchMaxEvents="1")
    source = dead_letters(tmp_path / "dead.jsonl", record(doc(), "1"), record(doc(), "2"))
    status, summary = run(props, source, PostHog(200, answer))
    assert (status, summary) == (ExitStatus.CONFIG, None)
    [stop] = [r.message for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "redrive stopped: 2 read, 1 delivered" in stop


def test_a_key_posthog_does_not_know_stops_before_anything_is_sent(
    props: Path, tmp_path: Path
) -> None:
    posthog = PostHog(key=KEY_UNKNOWN)
    with pytest.raises(ConfigError, match="POSTHOG_API_KEY"):
        run(props, dead_letters(tmp_path / "dead.jsonl", record(doc())), posthog)
    assert posthog.bodies == []


def test_logs_and_stdout_carry_no_payload_or_key(
    props: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every outcome logged (delivered, still failing, refused), none of the data or key."""
    caplog.set_level(logging.DEBUG)
    marker = "s3cret-payload"
    source = dead_letters(
        tmp_path / "dead.jsonl",
        record(doc(user=marker), "1"),
        record(json.dumps({"oops": marker}).encode(), "2"),
        record(doc(name=marker), "3"),
    )
    out_status, summary = run(props, source, PostHog(400, 400, 200))
    assert out_status == ExitStatus.OK
    assert summary is not None
    assert summary["stillFailing"] == {"missing_event": 1, "rejected_by_posthog": 1}
    assert marker not in caplog.text
    assert "phc_test" not in caplog.text
    assert marker not in json.dumps(summary)


# --- A dead-letter stream, on kinesis-mock --------------------------------------------------


def test_a_dead_letter_stream_is_read_from_its_start_to_its_current_end(
    emulators: Emulators, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every shard from TRIM_HORIZON (a gzipped entry too, as the Kinesis sink writes large
    ones), up to what arrived when the redrive started; what still fails goes to a new file
    in the current folder."""
    for name, value in LOCAL_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    stream = "redrive-dead-letters"
    client = harness.kinesis_client(emulators.kinesis_endpoint)
    harness.create_stream(client, stream, 2)
    entries = [
        DeadLetter.of(
            record(doc(f"e{n}"), str(n)), stream="events", shard_id=SHARD, reason="r", detail="d"
        )
        for n in range(6)
    ]
    KinesisSink(client, stream).write(entries[:4])
    gzipped = gzip.compress(entries[4].to_json().encode(), mtime=0)
    bad = entry_of(b"{oops", "9").encode()
    harness.put_records(client, stream, [("pk-a", gzipped), ("pk-b", bad)])
    time.sleep(0.05)  # arrival times are in milliseconds: the cut falls between the puts
    started = datetime.now(UTC)
    time.sleep(0.05)
    KinesisSink(client, stream).write(entries[5:])  # after the start: the next redrive's
    props = write_props(tmp_path / "app.properties", kinesisEndpoint=emulators.kinesis_endpoint)

    posthog = PostHog()
    status, summary = run(props, f"kinesis:{stream}", posthog, now=started)

    assert status == ExitStatus.OK
    assert sorted(event["event"] for event in posthog.events()) == [f"e{n}" for n in range(5)]
    destination = tmp_path / f"{stream}.redrive-{started.strftime('%Y%m%dT%H%M%SZ')}.jsonl"
    assert summary is not None
    assert summary["to"] == f"file:{destination.relative_to(tmp_path)}"
    assert [entry["sequenceNumber"] for entry in read_dead_letters(destination)] == ["9"]


def test_an_unreachable_dead_letter_stream_exits_69(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in LOCAL_ENV.items():
        monkeypatch.setenv(name, value)
    props = write_props(tmp_path / "app.properties", kinesisEndpoint="http://127.0.0.1:9")
    status, _ = run(props, "kinesis:dead-letters", PostHog())
    assert status == ExitStatus.UNAVAILABLE
    assert "cannot redrive" in caplog.text


class FakeStream:
    """One shard's GetRecords answers, in order, as boto3 gives them (times as datetimes)."""

    def __init__(self, answers: list[tuple[list[tuple[str, datetime]], int, str | None]]) -> None:
        self.answers = answers
        self.calls = 0

    def get_paginator(self, _name: str) -> Any:
        class Pages:
            @staticmethod
            def paginate(**_request: Any) -> list[dict[str, Any]]:
                return [{"Shards": [{"ShardId": SHARD}]}]

        return Pages()

    def get_shard_iterator(self, **_request: Any) -> dict[str, str]:
        return {"ShardIterator": "start"}

    def get_records(self, **_request: Any) -> dict[str, Any]:
        records, behind, following = self.answers[self.calls]
        self.calls += 1
        return {
            "Records": [
                {"Data": b"{}", "SequenceNumber": s, "ApproximateArrivalTimestamp": t}
                for s, t in records
            ],
            "MillisBehindLatest": behind,
            "NextShardIterator": following,
        }


BEFORE, AFTER = NOW - timedelta(seconds=1), NOW + timedelta(seconds=1)


@pytest.mark.parametrize(
    ("answers", "read"),
    [
        # An empty answer behind the tip is a gap in the shard, not its end.
        ([([], 5000, "i2"), ([("1", BEFORE)], 0, "i3"), ([], 0, "i4")], ["1"]),
        # A closed shard ends where Kinesis gives no next iterator.
        ([([("1", BEFORE)], 0, None)], ["1"]),
        # A record that arrived after the redrive started is the next redrive's.
        ([([("1", BEFORE), ("2", AFTER)], 0, "i2")], ["1"]),
    ],
)
def test_a_shard_is_read_to_its_current_end(
    answers: list[tuple[list[tuple[str, datetime]], int, str | None]], read: list[str]
) -> None:
    client = FakeStream(answers)
    sleeps: list[float] = []
    entries = list(stream_entries(client, "dl", until=NOW, sleep=sleeps.append))
    assert [where for _, where in entries] == [f"kinesis:dl/{SHARD}/{s}" for s in read]
    assert client.calls == len(answers)
    assert len(sleeps) == client.calls - 1  # a pause between calls, within the shard's rate


def test_an_aws_error_while_reading_names_the_stream() -> None:
    """A stream that fails mid-read is a DependencyError (exit 69), not a traceback."""

    class Failing(FakeStream):
        def get_records(self, **_request: Any) -> dict[str, Any]:
            error = {"Error": {"Code": "ExpiredIteratorException", "Message": "expired"}}
            raise ClientError(error, "GetRecords")  # type: ignore[arg-type]

    with pytest.raises(DependencyError, match=r"dead-letter stream dl: .*ExpiredIterator"):
        list(stream_entries(Failing([]), "dl", until=NOW, sleep=lambda _: None))


def test_ctrl_c_stops_saying_what_was_done(
    props: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped on request: status 0 (as the exit-status table has it), no summary line, and
    a warning with the counts so far; running it again is harmless."""
    source = dead_letters(tmp_path / "dead.jsonl", record(doc()))

    class Interrupted(PostHog):
        def __call__(self, url: str, body: bytes, headers: Any, timeout: float) -> Any:
            if url.endswith(BATCH_PATH):
                raise KeyboardInterrupt  # Ctrl+C while the batch is on its way
            return super().__call__(url, body, headers, timeout)

    status, summary = run(props, source, Interrupted())
    assert (status, summary) == (ExitStatus.OK, None)
    assert "redrive interrupted (again is harmless): 1 read, 0 delivered" in caplog.text
