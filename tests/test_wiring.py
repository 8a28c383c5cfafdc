"""Production wiring: settings become each part's own values; no shard outlives its daemon."""

from __future__ import annotations

import dataclasses

import pytest

from consumer import wiring
from consumer.exits import ExitStatus
from consumer.mapping import MappingRules
from consumer.wiring import orphan_aware_sleep
from tests.support import SettingsFactory


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
