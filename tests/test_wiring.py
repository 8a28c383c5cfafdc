"""Production wiring: settings become each part's own values; no shard outlives its daemon."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest

from consumer import wiring
from consumer.deadletter import DeadLetter
from consumer.exits import ExitStatus
from consumer.mapping import Mapper, MappingRules
from consumer.record import Pending
from consumer.sender import BATCH_PATH, Sender
from consumer.wiring import orphan_aware_sleep
from tests.support import RecordFactory, ScriptedTransport, SettingsFactory


def test_sleeps_in_steps_while_the_daemon_lives() -> None:
    """The wait is split into short steps that add up to the delay."""
    slept: list[float] = []
    orphan_aware_sleep(100, getppid=lambda: 100, sleep=slept.append)(2.5)
    assert slept == [1.0, 1.0, 0.5]


def test_exits_when_the_daemon_is_gone() -> None:
    """Reparented (the daemon exited): the process ends instead of retrying as an orphan."""
    parents = iter([100, 1])
    slept: list[float] = []
    with pytest.raises(SystemExit) as caught:
        orphan_aware_sleep(100, getppid=lambda: next(parents), sleep=slept.append)(30)
    assert caught.value.code == ExitStatus.DAEMON_GONE
    assert slept == [1.0]


def test_mapping_rules_are_the_settings_the_mapper_reads(make_settings: SettingsFactory) -> None:
    """Each rule is the settings field of the same name, so nothing is lost on the way."""
    settings = make_settings(
        additionalPropertyMappings="a:b",
        distinctIdKey="u",
        missingDistinctId="fixed",
        fallbackDistinctId="anon",
        timestampKey="ts",
        includeAllProperties="true",
    )
    rules = wiring.mapping_rules(settings)
    for field in dataclasses.fields(MappingRules):
        assert getattr(rules, field.name) == getattr(settings, field.name), field.name


def test_aws_access_keeps_the_keys_out_of_its_repr(make_settings: SettingsFactory) -> None:
    """The static keys reach boto3 but never a log line."""
    settings = make_settings(
        awsAccessKeyId="AKIDEXAMPLE",
        awsSecretAccessKey="secret-example",
        kinesisEndpoint="http://127.0.0.1:4567",
        dynamoDBEndpoint="http://127.0.0.1:4568",
    )
    access = wiring.aws_access(settings)
    assert (access.access_key_id, access.secret_access_key) == ("AKIDEXAMPLE", "secret-example")
    assert (access.endpoint("kinesis"), access.endpoint("dynamodb")) == (
        "http://127.0.0.1:4567",
        "http://127.0.0.1:4568",
    )
    assert "AKID" not in repr(access)
    assert "secret" not in repr(access)


class ListSink:
    def __init__(self) -> None:
        self.entries: list[DeadLetter] = []

    def write(self, entries: Sequence[DeadLetter]) -> None:
        self.entries.extend(entries)


def test_deliveries_share_one_sender_and_the_sink(
    make_settings: SettingsFactory, make_record: RecordFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One Sender (one HTTP session) for every shard, the settings' host, key and batch
    limits, and the sink given, with each Delivery's own stream and shard in its entries."""
    senders: list[dict[str, Any]] = []

    def sender(**options: Any) -> Sender:
        senders.append(options)
        return Sender(**options)

    monkeypatch.setattr("consumer.wiring.Sender", sender)
    settings = make_settings(batchMaxEvents="2")
    transport, sink = ScriptedTransport(200, 200, 400), ListSink()
    factory = wiring.delivery_factory(settings, sink, transport=transport, sleep=lambda _: None)
    first, second = factory("events", "shardId-1"), factory("old-events", "shardId-2")
    assert len(senders) == 1

    def pending(shard_id: str, *names: str) -> list[Pending]:
        mapper = Mapper(wiring.mapping_rules(settings), shard_id)
        records = [make_record({"properties": {"eventName": n}}, sequence=n) for n in names]
        return [Pending(record, mapper.map(record)) for record in records]

    first.deliver(pending("shardId-1", "1", "2", "3"))  # two batches of at most 2
    second.deliver(pending("shardId-2", "4"))  # refused even alone: dead-lettered
    assert [len(r["body"]["batch"]) for r in transport.requests] == [2, 1, 1]
    assert {r["url"] for r in transport.requests} == {settings.posthog_host + BATCH_PATH}
    assert {r["body"]["api_key"] for r in transport.requests} == {settings.api_key}
    [entry] = sink.entries
    assert (entry.stream, entry.shard_id, entry.sequence_number) == ("old-events", "shardId-2", "4")
