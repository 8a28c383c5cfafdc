"""`preview` and `check`, and the Kinesis dead-letter sink, against real emulators."""

from __future__ import annotations

import base64
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest

from consumer import __main__ as cli
from consumer.deadletter import DeadLetter, FileSink
from consumer.errors import ConfigError
from consumer.event_ids import event_uuid
from consumer.exits import ExitStatus
from consumer.health import StateFile, state_dir
from consumer.kinesis_sink import KINESIS_RECORD_MAX_BYTES, KinesisSink
from consumer.record import KinesisRecord
from consumer.tools import check, health_check, preview
from local import harness
from local.emulators import LOCAL_ENV, Emulators
from tests.support import ARRIVAL_MILLIS, ARRIVAL_TEXT, BASE_PROPERTIES


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


class TestPreviewDeadLetter:
    """`preview --dead-letter FILE[:LINE]`: the event a dead letter becomes on redrive."""

    SHARD = "shardId-000000000004"

    def letters(self, path: Path, *records: KinesisRecord, stream: str = "events") -> Path:
        """``path`` holding a dead letter of each record, written by the worker's file sink."""
        FileSink(path).write(
            [
                DeadLetter.of(r, stream=stream, shard_id=self.SHARD, reason="x", detail="d")
                for r in records
            ]
        )
        return path

    def test_prints_the_event_with_its_first_delivery_s_uuid_and_timestamp(
        self, props: Path, tmp_path: Path
    ) -> None:
        """LINE picks the entry; the event keeps the record's own identity, not a preview's."""
        data = b'{"properties": {"eventName": "signup", "userId": "u1"}}'
        wanted = KinesisRecord(data, "pk-2", "4959002", 1, ARRIVAL_MILLIS)
        other = KinesisRecord(b"{}", "pk-1", "4959001", 0, ARRIVAL_MILLIS)
        path = self.letters(tmp_path / "dead.jsonl", other, wanted)
        out = io.StringIO()
        status = preview(props, data=None, path=None, dead_letter=f"{path}:2", out=out, environ={})
        assert status == ExitStatus.OK
        event = json.loads(out.getvalue())
        assert event["uuid"] == event_uuid("events", self.SHARD, wanted)
        assert (event["timestamp"], event["distinct_id"]) == (ARRIVAL_TEXT, "u1")
        assert event["properties"]["$kinesis_shard_id"] == self.SHARD

    def test_a_dead_letter_that_still_fails_prints_its_reason(
        self, props: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Through the command line; no LINE means the first entry."""
        monkeypatch.setattr(cli, "configure_logging", lambda: None)  # keep pytest's handlers
        path = self.letters(tmp_path / "dead.jsonl", KinesisRecord(b"{}", "pk", "1", 0, 1))
        status = cli.main(["preview", str(props), "--dead-letter", str(path)])
        assert status == ExitStatus.RECORD_ERROR

    @pytest.mark.parametrize(
        ("line", "problem"),
        [
            # Past the end of the file.
            (3, "counted from 1"),
            # Lines count from 1.
            (0, "counted from 1"),
            # A line that is no dead letter.
            (2, "a dead-letter entry"),
        ],
    )
    def test_a_line_that_is_no_dead_letter_is_a_config_error(
        self, props: Path, tmp_path: Path, line: int, problem: str
    ) -> None:
        path = self.letters(tmp_path / "dead.jsonl", KinesisRecord(b"{}", "pk", "1", 0, 1))
        with path.open("a") as handle:
            handle.write('{"reason": "not_js\n')
        with pytest.raises(ConfigError, match=problem) as caught:
            self.preview(props, f"{path}:{line}")
        assert caught.value.key == "--dead-letter"

    def test_an_entry_without_data_cannot_be_previewed(self, props: Path, tmp_path: Path) -> None:
        path = tmp_path / "dead.jsonl"
        entry = json.loads(self.letters(path, KinesisRecord(b"{}", "pk", "1", 0, 1)).read_text())
        del entry["data"]
        path.write_text(json.dumps({**entry, "reason": "too_large_to_dead_letter"}) + "\n")
        with pytest.raises(ConfigError, match="too_large_to_dead_letter"):
            self.preview(props, str(path))

    def test_the_entry_is_read_before_the_settings(self, tmp_path: Path) -> None:
        """As the command line always did: a wrong --dead-letter is named first."""
        with pytest.raises(ConfigError) as caught:
            self.preview(tmp_path / "no.properties", str(tmp_path / "no.jsonl"))
        assert caught.value.key == "--dead-letter"

    @staticmethod
    def preview(props: Path, spec: str) -> int:
        return preview(props, data=None, path=None, dead_letter=spec, out=io.StringIO(), environ={})


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


class TestHealth:
    """`health`: the container health check reads the shard state files of this host."""

    @pytest.fixture(name="folder")
    def _folder(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        import tempfile

        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        monkeypatch.setenv("POSTHOG_API_KEY", "phc_test")
        return state_dir(BASE_PROPERTIES["applicationName"])

    def test_an_idle_worker_is_healthy(self, props: Path, folder: Path) -> None:
        state = StateFile(folder, "shardId-000000000001", clock=lambda: 1000.0)
        state.batch_arrived(0, 0)
        state.batch_done(delivered=5, dead_lettered=0)
        out = io.StringIO()
        assert health_check(props, out=out, now=lambda: 1000.0 + 86_400) == ExitStatus.OK
        assert out.getvalue().startswith("healthy: 1 shards")

    def test_a_batch_stuck_in_flight_is_unhealthy(self, props: Path, folder: Path) -> None:
        StateFile(folder, "shardId-000000000001", clock=lambda: 1000.0).batch_arrived(
            90_000, 90_000
        )
        out = io.StringIO()
        assert health_check(props, out=out, now=lambda: 1000.0 + 301) == ExitStatus.UNHEALTHY
        assert (
            "stuck: shard shardId-000000000001: a batch not delivered for 301 s" in out.getvalue()
        )

    def test_no_shard_yet_is_healthy(self, props: Path, folder: Path) -> None:
        assert not folder.exists()
        assert health_check(props, out=io.StringIO()) == ExitStatus.OK
