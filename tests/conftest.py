"""Fixtures only: settings, mapping rules and records from small dicts; a clean environment;
the emulators and the end-to-end pipeline. Helpers and types live in ``tests/support.py``.

And one check before any test: every compiled file matches its source
(consumer/hot_path.py), or the tests would pass or fail on code that is no longer there."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from consumer import config, hot_path, wiring
from consumer.mapping import MappingRules
from consumer.record import KinesisRecord
from tests.support import (
    BASE_PROPERTIES,
    RecordFactory,
    RulesFactory,
    SettingsFactory,
)


def pytest_sessionstart(session: pytest.Session) -> None:  # noqa: ARG001 - pytest's hook signature
    """Refuse to test compiled modules that do not match their source."""
    if old := hot_path.stale():
        pytest.exit(
            f"{', '.join(old)}: changed since compiled, so the tests would run the old code; "
            "./run.sh setup compiles them again (./run.sh test does that first)",
            returncode=2,
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip the tests marked ``interpreted`` where the package runs compiled."""
    if not hot_path.compiled():
        return
    skip = pytest.mark.skip(
        reason="replaces a function compiled code calls directly: "
        "tests/test_hot_path.py runs it against the interpreted package"
    )
    for item in items:
        if item.get_closest_marker("interpreted"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's POSTHOG_* or KINESIS_POSTHOG_* variables."""
    import os

    for name in list(os.environ):
        if name.startswith(("KINESIS_POSTHOG_", "POSTHOG_")):
            monkeypatch.delenv(name)


@pytest.fixture(name="make_settings")
def _make_settings() -> SettingsFactory:
    """Settings from BASE_PROPERTIES updated with keyword overrides (None removes a key)."""

    def make(**overrides: str | None) -> config.Settings:
        values = dict(BASE_PROPERTIES)
        for key, value in overrides.items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
        return config.from_mapping(values)

    return make


@pytest.fixture(name="make_rules")
def _make_rules(make_settings: SettingsFactory) -> RulesFactory:
    """The mapping rules of ``make_settings(**overrides)``, made as the wiring makes them."""

    def make(**overrides: str | None) -> MappingRules:
        return wiring.mapping_rules(make_settings(**overrides))

    return make


@pytest.fixture(name="make_record")
def _make_record() -> RecordFactory:
    """A KinesisRecord holding ``document`` as JSON (or ``data`` bytes as given)."""

    def make(  # noqa: PLR0913 - every field of a record can matter to a test
        document: Any = None,
        *,
        data: bytes | None = None,
        sequence: str = "49590338271490256608559692538361571095921575989136588898",
        sub_sequence: int = 0,
        partition_key: str = "pk-1",
        arrival_millis: int = 1_700_000_000_123,
    ) -> KinesisRecord:
        payload = data if data is not None else json.dumps(document).encode()
        return KinesisRecord(
            data=payload,
            partition_key=partition_key,
            sequence_number=sequence,
            sub_sequence_number=sub_sequence,
            arrival_millis=arrival_millis,
        )

    return make


@pytest.fixture(name="sleeps")
def _sleeps() -> list[float]:
    """Collects the waits a component asked for, instead of waiting."""
    return []


@pytest.fixture(scope="session", name="emulators")
def _emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """kinesis-mock and moto, started once for every test that needs AWS, recording the
    calls they serve (tests/test_iam_policy.py checks them against the task role)."""
    from local import emulators

    with emulators.running(tmp_path_factory.mktemp("emulators"), record_calls=True) as endpoints:
        yield endpoints


@pytest.fixture(scope="session", name="pipeline")
def _pipeline(tmp_path_factory: pytest.TempPathFactory, emulators: Any) -> Iterator[Any]:
    """The stand-in, the stream and the worker every end-to-end module shares."""
    from tests.support import shared_pipeline

    with shared_pipeline(tmp_path_factory.mktemp("e2e"), emulators) as pipeline:
        yield pipeline
