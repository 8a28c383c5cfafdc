"""The Kinesis dead-letter sink (consumer/kinesis_sink.py) within PutRecords' limits, its
failures, and kinesis-mock taking what it writes."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import time
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError

from consumer.deadletter import DeadLetter
from consumer.decoding import decode
from consumer.errors import DeadLetterError
from consumer.kinesis_sink import KinesisSink
from local import harness
from local.emulators import Emulators
from tests.support import letter

# AWS's PutRecords limits, written out here rather than imported, so that a wrong constant
# in the module under test fails these tests instead of agreeing with them.
AWS_MAX_RECORDS = 500
AWS_MAX_REQUEST_BYTES = 5 * 1024 * 1024
AWS_MAX_RECORD_BYTES = 1024 * 1024
AWS_MAX_KEY_CHARS = 256
MIB = 1024 * 1024
THROTTLED = "ProvisionedThroughputExceededException"
MARKER = "m4rker-payload"


def sized(size: int, *, key: str = "pk-1", sequence: str = "1") -> DeadLetter:
    """An entry whose record (JSON + partition key, as AWS counts it) is ``size`` bytes."""
    empty = letter(b"", key=key, detail="", sequence=sequence)
    room = size - len(empty.to_json()) - len(key.encode())
    quads, rest = divmod(room, 4)
    # 3 zero bytes are 4 base64 characters; the detail takes up the remainder.
    return letter(b"\0" * (3 * quads), key=key, detail="x" * rest, sequence=sequence)


def record_bytes(record: tuple[str, bytes]) -> int:
    key, data = record
    return len(data) + len(key.encode("utf-8"))


def aws_violation(records: list[tuple[str, bytes]]) -> str | None:
    """What AWS would refuse in this PutRecords request, if anything."""
    if not 1 <= len(records) <= AWS_MAX_RECORDS:
        return f"{len(records)} records"
    if sum(map(record_bytes, records)) > AWS_MAX_REQUEST_BYTES:
        return "request over 5 MiB"
    for key, data in records:
        if not 1 <= len(key.encode("utf-16-le")) // 2 <= AWS_MAX_KEY_CHARS:
            return "partition key length"
        if record_bytes((key, data)) > AWS_MAX_RECORD_BYTES:
            return "record over 1 MiB"
    return None


class FakeKinesis:
    """put_records as AWS answers it: limits enforced; failed slots (or errors) scripted per call."""

    def __init__(self, *script: set[int] | Exception) -> None:
        self.script = list(script)
        self.calls: list[list[tuple[str, bytes]]] = []
        self.stored: list[tuple[str, bytes]] = []

    def put_records(self, **request: Any) -> dict[str, Any]:
        records = [(item["PartitionKey"], item["Data"]) for item in request["Records"]]
        self.calls.append(records)
        problem = aws_violation(records)
        if problem is not None:
            error = {"Error": {"Code": "ValidationException", "Message": problem}}
            raise ClientError(error, "PutRecords")  # type: ignore[arg-type]
        step = self.script.pop(0) if self.script else set()
        if isinstance(step, Exception):
            raise step
        results: list[dict[str, str]] = []
        for slot, record in enumerate(records):
            if slot in step:
                results.append({"ErrorCode": THROTTLED, "ErrorMessage": "Rate exceeded"})
            else:
                self.stored.append(record)
                results.append({"SequenceNumber": str(len(self.stored)), "ShardId": "shardId-0"})
        return {"FailedRecordCount": len(step), "Records": results}

    def stored_entries(self) -> list[dict[str, Any]]:
        """What a reader of the stream sees (gzip read transparently, as the consumer does)."""
        return [decode(data) for _, data in self.stored]


def sink_for(fake: FakeKinesis) -> KinesisSink:
    return KinesisSink(cast("Any", fake), "dead-letters")


class TestKinesisSinkLimits:
    def test_cuts_requests_at_500_records(self) -> None:
        fake = FakeKinesis()
        entries = [letter(sequence=str(n)) for n in range(1201)]
        sink_for(fake).write(entries)
        assert [len(call) for call in fake.calls] == [500, 500, 201]
        assert [e["sequenceNumber"] for e in fake.stored_entries()] == [str(n) for n in range(1201)]

    @pytest.mark.parametrize(
        ("sizes", "key", "requests"),
        [
            # Exactly 5 MiB, partition keys included: one request.
            ([1_000_000] * 5 + [242_880], "pk-1", [6]),
            # One byte more: the last record goes into a second request.
            ([1_000_000] * 5 + [242_881], "pk-1", [5, 1]),
            # Keys count in UTF-8 bytes (here 200 per key), not characters.
            ([1_000_000] * 5 + [242_881], "é" * 100, [5, 1]),
            # Full-size records: five to a request.
            ([MIB] * 11, "pk-1", [5, 5, 1]),
            # Small records after a full request start the next one.
            ([MIB] * 5 + [1000] * 3, "pk-1", [5, 3]),
        ],
    )
    def test_cuts_requests_at_5_mib(self, sizes: list[int], key: str, requests: list[int]) -> None:
        fake = FakeKinesis()
        entries = [sized(size, key=key, sequence=str(n)) for n, size in enumerate(sizes)]
        sink_for(fake).write(entries)
        assert [len(call) for call in fake.calls] == requests
        assert [record_bytes(r) for call in fake.calls for r in call] == sizes
        assert all(sum(map(record_bytes, call)) <= AWS_MAX_REQUEST_BYTES for call in fake.calls)

    @pytest.mark.parametrize(
        ("size", "key", "gzipped"),
        [
            # Exactly 1 MiB of JSON + key: put as it is.
            (MIB, "pk-1", False),
            # One byte over: gzipped.
            (MIB + 1, "pk-1", True),
            # The partition key counts: a 256-character key takes 256 bytes of the MiB.
            (MIB, "k" * 256, False),
            (MIB + 1, "k" * 256, True),
            # ... counted in UTF-8: 100 two-byte characters are 200 bytes.
            (MIB, "é" * 100, False),
            (MIB + 1, "é" * 100, True),
        ],
    )
    def test_record_limit_counts_the_partition_key(
        self, size: int, key: str, gzipped: bool
    ) -> None:
        fake = FakeKinesis()
        entry = sized(size, key=key)
        sink_for(fake).write([entry])
        [(put_key, data)] = fake.calls[0]
        assert put_key == key
        assert data.startswith(b"\x1f\x8b") is gzipped
        assert (gzip.decompress(data) if gzipped else data) == entry.to_json().encode()

    def test_a_large_compressible_entry_is_gzipped(self) -> None:
        fake = FakeKinesis()
        entry = letter(b'{"blob": "' + b"x" * (1200 * 1024) + b'"}')
        sink_for(fake).write([entry])
        [(_, data)] = fake.stored
        assert data[:2] == b"\x1f\x8b"
        assert fake.stored_entries() == [json.loads(entry.to_json())]

    def test_an_incompressible_entry_is_written_without_its_data(self) -> None:
        fake = FakeKinesis()
        noise = os.urandom(1536 * 1024)
        sink_for(fake).write([letter(noise, detail="event is 1572864 bytes")])
        [stored] = fake.stored_entries()
        assert stored == {
            "reason": "too_large_to_dead_letter",
            "detail": "not_json: event is 1572864 bytes; the record's data (1572864 bytes) "
            "does not fit in a 1048576-byte Kinesis record even gzipped, so it is omitted: "
            "re-read it from the source stream at this position within the stream's retention",
            "originalReason": "not_json",
            "stream": "events",
            "shardId": "shardId-000000000001",
            "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
            "subSequenceNumber": 3,
            "partitionKey": "pk-1",
            "approximateArrivalTimestamp": 1_700_000_000_123,
            "dataLength": len(noise),
            "dataSha256": hashlib.sha256(noise).hexdigest(),
        }

    def test_gzip_is_not_used_past_what_our_reader_inflates(self) -> None:
        fake = FakeKinesis()
        # Zeros gzip to almost nothing, but their entry inflates past the reader's 10 MiB.
        sink_for(fake).write([letter(b"\0" * (8 * MIB))])
        [stored] = fake.stored_entries()
        assert (stored["reason"], stored["dataLength"]) == ("too_large_to_dead_letter", 8 * MIB)

    def test_hostile_fields_still_make_a_record_that_fits(self) -> None:
        fake = FakeKinesis()
        emoji = "\U0001f600"  # escaped by JSON to 12 bytes
        entry = letter(
            os.urandom(1536 * 1024),
            key=emoji * 1_000_000,
            detail=emoji * 1_000_000,
            stream=emoji * 1_000_000,
            sequence=emoji * 1_000_000,
        )
        sink_for(fake).write([entry])  # the fake refuses anything over AWS's limits
        [stored] = fake.stored_entries()
        assert stored["reason"] == "too_large_to_dead_letter"
        assert stored["partitionKey"].startswith(emoji * 1024)

    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            # An ordinary key is used as it is.
            ("user-42", "user-42"),
            # 256 characters is allowed.
            ("k" * 256, "k" * 256),
            # 128 characters outside the BMP: 256 UTF-16 units, still allowed.
            ("\U0001f600" * 128, "\U0001f600" * 128),
            # Empty: a fixed key.
            ("", "dead-letter"),
            # 257 characters: its digest.
            ("k" * 257, "sha256:" + hashlib.sha256(b"k" * 257).hexdigest()),
            # 129 characters outside the BMP (258 UTF-16 units): its digest.
            (
                "\U0001f600" * 129,
                "sha256:" + hashlib.sha256(("\U0001f600" * 129).encode()).hexdigest(),
            ),
            # A lone surrogate cannot be sent: the digest of its bytes.
            ("a\ud800", "sha256:" + hashlib.sha256(b"a\xed\xa0\x80").hexdigest()),
        ],
    )
    def test_partition_key_is_always_valid(self, key: str, expected: str) -> None:
        fake = FakeKinesis()
        sink_for(fake).write([letter(key=key)])
        [(put_key, data)] = fake.stored
        assert put_key == expected
        assert json.loads(data)["partitionKey"] == key  # the entry keeps the original


class TestKinesisSinkFailures:
    def test_only_failed_slots_are_put_again(self) -> None:
        fake = FakeKinesis({1, 3})
        sink = sink_for(fake)
        entries = [letter(sequence=str(n)) for n in range(5)]
        with pytest.raises(DeadLetterError, match=rf"2 of 5 .*{THROTTLED} x2"):
            sink.write(entries)
        sink.write(entries)  # what Delivery.dead_letter does after backing off
        assert [len(call) for call in fake.calls] == [5, 2]
        stored = [e["sequenceNumber"] for e in fake.stored_entries()]
        assert stored == ["0", "2", "4", "1", "3"]

    def test_a_failure_in_a_later_request_keeps_the_earlier_requests_written(self) -> None:
        fake = FakeKinesis(set(), {0})
        sink = sink_for(fake)
        entries = [letter(sequence=str(n)) for n in range(700)]
        with pytest.raises(DeadLetterError, match="1 of 200"):
            sink.write(entries)
        sink.write(entries)
        assert [len(call) for call in fake.calls] == [500, 200, 1]
        stored = sorted(int(e["sequenceNumber"]) for e in fake.stored_entries())
        assert stored == list(range(700))

    def test_a_completed_write_forgets_what_it_wrote(self) -> None:
        fake = FakeKinesis({0})
        sink = sink_for(fake)
        entries = [letter(sequence="1"), letter(sequence="2")]
        with pytest.raises(DeadLetterError):
            sink.write(entries)
        sink.write(entries)
        sink.write(entries)  # a new write of the same entries stores them again
        assert [len(call) for call in fake.calls] == [2, 1, 2]

    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            # AWS refused the call: its code and message.
            (
                ClientError(
                    {"Error": {"Code": "ResourceNotFoundException", "Message": "no stream"}},
                    "PutRecords",
                ),
                "ResourceNotFoundException: no stream",
            ),
            # No connection: botocore's message.
            (
                EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
                "Could not connect to the endpoint URL",
            ),
            # botocore's validation quotes values, which may be payloads: not repeated.
            (
                ParamValidationError(report=f"Invalid type for parameter Data, value: {MARKER}"),
                "botocore refused the request's parameters",
            ),
        ],
    )
    def test_botocore_errors_are_translated(self, error: Exception, expected: str) -> None:
        fake = FakeKinesis(error)
        with pytest.raises(DeadLetterError) as caught:
            sink_for(fake).write([letter(MARKER.encode())])
        assert caught.value.__cause__ is error
        assert expected in str(caught.value)
        assert "dead-letters" in str(caught.value)
        assert MARKER not in str(caught.value)
        assert base64.b64encode(MARKER.encode()).decode() not in str(caught.value)

    def test_nothing_to_write_puts_nothing(self) -> None:
        fake = FakeKinesis()
        sink_for(fake).write([])
        assert fake.calls == []


@pytest.mark.e2e
def test_emulator_takes_an_oversized_dead_letter_and_600_small_ones(emulators: Emulators) -> None:
    client = harness.kinesis_client(emulators.kinesis_endpoint)
    harness.create_stream(client, "dead-letter-limits", 1)
    noise = os.urandom(1536 * 1024)
    keys = ["user-1", "", "k" * 300, "a\ud800", "\U0001f600" * 200]
    small = [
        letter(b'{"n": %d}' % n, key=keys[n % len(keys)], sequence=str(n + 1)) for n in range(600)
    ]
    entries = [letter(noise, reason="event_too_large", sequence="0"), *small]
    sink = KinesisSink(client, "dead-letter-limits")
    started = time.monotonic()
    for _ in range(20):  # as Delivery.dead_letter would, should the emulator throttle
        try:
            sink.write(entries)
            break
        except DeadLetterError:
            time.sleep(0.5)
    else:
        pytest.fail("the dead letters were never all written")
    written_in = time.monotonic() - started

    shard = client.list_shards(StreamName="dead-letter-limits")["Shards"][0]["ShardId"]
    iterator = client.get_shard_iterator(
        StreamName="dead-letter-limits", ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    found: list[dict[str, Any]] = []
    for _ in range(50):
        answer = client.get_records(ShardIterator=iterator, Limit=10_000)
        found += [decode(record["Data"]) for record in answer["Records"]]
        iterator = answer["NextShardIterator"]
        if len(found) >= len(entries) or (not answer["Records"] and found):
            break
    print(f"601 dead letters written in {written_in:.2f}s")

    assert sorted(int(e["sequenceNumber"]) for e in found) == list(range(601))
    [big] = [e for e in found if e["sequenceNumber"] == "0"]
    assert (big["reason"], big["originalReason"], "data" in big) == (
        "too_large_to_dead_letter",
        "event_too_large",
        False,
    )
    assert (big["dataLength"], big["dataSha256"]) == (len(noise), hashlib.sha256(noise).hexdigest())
    by_sequence = {e["sequenceNumber"]: e for e in found}
    for entry in small:
        stored = by_sequence[entry.sequence_number]
        assert base64.b64decode(stored["data"]) == base64.b64decode(entry.data_base64)
        assert stored["partitionKey"] == entry.partition_key
