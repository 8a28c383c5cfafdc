"""`preview` and `check`, and the Kinesis dead-letter sink, against real emulators."""

from __future__ import annotations

import base64
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest

from consumer.deadletter import DeadLetter
from consumer.errors import ConfigError
from consumer.exits import ExitStatus
from consumer.kinesis_sink import KINESIS_RECORD_MAX_BYTES, KinesisSink
from consumer.record import KinesisRecord
from consumer.tools import check, preview
from local import harness
from local.emulators import LOCAL_ENV, Emulators
from tests.support import BASE_PROPERTIES


def write(path: Path, values: dict[str, str]) -> Path:
    return harness.write_properties(path, values)


@pytest.fixture(name="props")
def _props(tmp_path: Path) -> Path:
    values = {k: v for k, v in BASE_PROPERTIES.items() if k != "posthogApiKey"}
    return write(
        tmp_path / "app.properties",
        {**values, "additionalPropertyMappings": "properties.userId:distinct_id"},
    )


class TestPreview:
    def test_prints_the_event(self, props: Path) -> None:
        """A good record prints its event; no PostHog key or AWS needed."""
        out = io.StringIO()
        data = '{"properties": {"eventName": "signup", "userId": "u1"}}'
        assert preview(props, data=data, path=None, out=out, environ={}) == 0
        event = json.loads(out.getvalue())
        assert (event["event"], event["distinct_id"]) == ("signup", "u1")

    def test_prints_the_dead_letter_reason(self, props: Path, tmp_path: Path) -> None:
        """A bad record (here from a file) prints its reason and exits 65."""
        record = tmp_path / "record.bin"
        record.write_bytes(b'{"properties": {}}')
        out = io.StringIO()
        assert (
            preview(props, data=None, path=str(record), out=out, environ={})
            == ExitStatus.RECORD_ERROR
        )
        assert json.loads(out.getvalue())["deadLetter"]["reason"] == "missing_event"


@pytest.mark.e2e
class TestCheck:
    def test_all_reachable(
        self, emulators: Emulators, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With the emulators and a stand-in up, every probe answers ok."""
        for name, value in LOCAL_ENV.items():
            monkeypatch.setenv(name, value)
        standin = harness.StandIn(tmp_path / "standin.log")
        try:
            harness.create_stream(
                harness.kinesis_client(emulators.kinesis_endpoint), "check-stream", 1
            )
            props = write(
                tmp_path / "check.properties",
                {
                    **BASE_PROPERTIES,
                    "streamName": "check-stream",
                    "kinesisEndpoint": emulators.kinesis_endpoint,
                    "dynamoDBEndpoint": emulators.dynamodb_endpoint,
                    "posthogHost": standin.url,
                    "posthogApiKey": standin.api_key,
                    "deadLetter": f"file:{tmp_path / 'dead' / 'letters.jsonl'}",
                },
            )
            out = io.StringIO()
            assert check(props, out=out) == 0, out.getvalue()
            assert out.getvalue().count(": ok") == 5
        finally:
            standin.close()

    def test_unreachable_is_reported(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Nothing listening, no writable dead-letter folder: each is reported FAILED, exit 69."""
        for name, value in LOCAL_ENV.items():
            monkeypatch.setenv(name, value)
        dead = "http://127.0.0.1:9"
        props = write(
            tmp_path / "dead.properties",
            {
                **BASE_PROPERTIES,
                "kinesisEndpoint": dead,
                "dynamoDBEndpoint": dead,
                "posthogHost": dead,
                "deadLetter": "file:/proc/no-such-place/dead.jsonl",
            },
        )
        out = io.StringIO()
        assert check(props, out=out) == ExitStatus.UNAVAILABLE
        assert out.getvalue().count("FAILED") == 4


@pytest.mark.e2e
def test_kinesis_dead_letter_sink_round_trip(emulators: Emulators) -> None:
    """Dead letters put into a stream come back whole; an oversized one comes back gzipped."""
    client = harness.kinesis_client(emulators.kinesis_endpoint)
    harness.create_stream(client, "dead-letters", 1)
    small = DeadLetter.of(
        KinesisRecord(b"\xffbad", "pk", "42", 0, 1),
        stream="s",
        shard_id="shardId-0",
        reason="not_utf8",
        detail="x",
    )
    big = DeadLetter.of(
        KinesisRecord(b"x" * KINESIS_RECORD_MAX_BYTES, "pk", "43", 0, 1),
        stream="s",
        shard_id="shardId-0",
        reason="event_too_large",
        detail="y",
    )
    KinesisSink(client, "dead-letters").write([small, big])
    shard = client.list_shards(StreamName="dead-letters")["Shards"][0]["ShardId"]
    iterator = client.get_shard_iterator(
        StreamName="dead-letters", ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )
    records: list[Any] = client.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    first = json.loads(records[0]["Data"])
    second = json.loads(gzip.decompress(records[1]["Data"]))
    assert (first["reason"], first["sequenceNumber"], base64.b64decode(first["data"])) == (
        "not_utf8",
        "42",
        b"\xffbad",
    )
    assert second["reason"] == "event_too_large"


def test_preview_of_a_missing_file_is_one_line(props: Path) -> None:
    """`preview --record` naming no file is a ConfigError, not a traceback."""
    with pytest.raises(ConfigError, match="--record"):
        preview(props, data=None, path="/no/such/record", out=io.StringIO(), environ={})
