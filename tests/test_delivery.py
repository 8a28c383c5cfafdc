"""Delivery returns only when every event is accepted or dead-lettered."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from consumer.deadletter import DeadLetter
from consumer.delivery import Delivery, Pending
from consumer.errors import AuthenticationError, DeadLetterError, PermanentDeliveryError
from consumer.mapping import Mapper
from consumer.retry import RetryPolicy
from consumer.sender import Sender
from tests.conftest import RecordFactory, ScriptedTransport, SettingsFactory


class MemorySink:
    def __init__(self, failures: int = 0) -> None:
        self.entries: list[DeadLetter] = []
        self.failures = failures

    def write(self, entries: Sequence[DeadLetter]) -> None:
        if self.failures:
            self.failures -= 1
            raise DeadLetterError("disk full")
        self.entries.extend(entries)


@pytest.fixture(name="pending")
def _pending(make_settings: SettingsFactory, make_record: RecordFactory) -> list[Pending]:
    mapper = Mapper(make_settings(), "shardId-0")
    records = [
        make_record(
            {"properties": {"eventName": f"e{i}"}}, sequence=str(1000 + i), partition_key=f"u{i}"
        )
        for i in range(10)
    ]
    return [Pending(record, mapper.map(record)) for record in records]


def delivery(
    transport: ScriptedTransport, sink: MemorySink, sleeps: list[float], **kw: Any
) -> Delivery:
    sender = Sender(
        host="http://ph",
        api_key="phc_k",
        historical_migration=False,
        timeout=1,
        transport=transport,
    )
    return Delivery(
        sender=sender,
        sink=sink,
        policy=RetryPolicy(jitter=0.0),
        stream="events",
        shard_id="shardId-0",
        max_events=kw.get("max_events", 100),
        max_bytes=kw.get("max_bytes", 10**6),
        sleep=sleeps.append,
    )


def names(transport: ScriptedTransport) -> list[list[str]]:
    return [[e["event"] for e in r["body"]["batch"]] for r in transport.requests]


class TestRetries:
    @pytest.mark.parametrize(
        "failure",
        [
            503,  # PostHog's transient error
            500,  # any 5xx
            429,  # rate limited
            408,  # request timeout
            "timeout",  # no answer in time (outcome unknown)
        ],
    )
    def test_retried_until_accepted(
        self, pending: list[Pending], sleeps: list[float], failure: Any
    ) -> None:
        """The same batch is resent, with growing waits, until PostHog says 200."""
        transport = ScriptedTransport(failure, failure, failure, 200)
        subject = delivery(transport, MemorySink(), sleeps)
        subject.deliver(pending)
        assert len(transport.requests) == 4
        assert all(r["body"] == transport.requests[0]["body"] for r in transport.requests)
        assert sleeps == [0.5, 1.0, 2.0]
        assert subject.stats.sent == 10

    def test_retry_after_honoured(self, pending: list[Pending], sleeps: list[float]) -> None:
        """A 429's Retry-After sets the minimum wait."""
        transport = ScriptedTransport((429, {"Retry-After": "7"}), 200)
        delivery(transport, MemorySink(), sleeps).deliver(pending)
        assert sleeps == [7.0]


class TestRefusals:
    def test_400_bisects_to_the_bad_event(
        self, pending: list[Pending], sleeps: list[float]
    ) -> None:
        """Only the event PostHog refuses is dead-lettered, with PostHog's answer; the rest arrive."""
        sink = MemorySink()

        def judge(batch: list[dict[str, Any]]) -> int:
            return 400 if any(e["event"] == "e6" for e in batch) else 200

        transport = ScriptedTransport(judge=judge)
        subject = delivery(transport, sink, sleeps)
        subject.deliver(pending)
        accepted = {name for batch in names(transport) if "e6" not in batch for name in batch}
        assert accepted == {f"e{i}" for i in range(10)} - {"e6"}
        assert [(d.reason, d.sequence_number) for d in sink.entries] == [
            ("rejected_by_posthog", "1006")
        ]
        assert "400" in sink.entries[0].detail
        assert subject.stats.sent == 9
        assert sleeps == []

    def test_413_splits(self, pending: list[Pending], sleeps: list[float]) -> None:
        """A 413 halves the batch until the parts are accepted."""
        transport = ScriptedTransport(judge=lambda batch: 413 if len(batch) > 3 else 200)
        subject = delivery(transport, MemorySink(), sleeps)
        subject.deliver(pending)
        accepted = [batch for batch in names(transport) if len(batch) <= 3]
        assert sorted(name for batch in accepted for name in batch) == sorted(
            f"e{i}" for i in range(10)
        )
        assert subject.stats.sent == 10

    @pytest.mark.parametrize(
        ("status", "error"),
        [
            (401, AuthenticationError),  # wrong key: a configuration error
            (403, AuthenticationError),  # forbidden
            (404, PermanentDeliveryError),  # wrong host
        ],
    )
    def test_configuration_errors_raise_and_drop_nothing(
        self, pending: list[Pending], sleeps: list[float], status: int, error: type[Exception]
    ) -> None:
        """401/403/404 raise without dead-lettering: nothing is given up on."""
        sink = MemorySink()
        with pytest.raises(error):
            delivery(ScriptedTransport(status), sink, sleeps).deliver(pending)
        assert sink.entries == []


def test_batches_are_cut_by_count(pending: list[Pending], sleeps: list[float]) -> None:
    """max_events bounds each request."""
    transport = ScriptedTransport()
    delivery(transport, MemorySink(), sleeps, max_events=4).deliver(pending)
    assert [len(n) for n in names(transport)] == [4, 4, 2]


def test_dead_letter_retries_until_written(pending: list[Pending], sleeps: list[float]) -> None:
    """A failing dead-letter sink is retried with backoff, never skipped."""
    sink = MemorySink(failures=2)
    subject = delivery(ScriptedTransport(), sink, sleeps)
    entry = DeadLetter.of(
        pending[0].record, stream="events", shard_id="shardId-0", reason="not_json", detail="x"
    )
    subject.dead_letter([entry])
    assert sink.entries == [entry]
    assert sleeps == [0.5, 1.0]
    assert subject.stats.dead_lettered["not_json"] == 1
