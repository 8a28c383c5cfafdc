"""Shared fixtures: settings, mapping rules and records from small dicts; a clean environment."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from consumer import config, wiring
from consumer.mapping import MappingRules
from consumer.record import KinesisRecord

BASE_PROPERTIES = {
    "applicationName": "test-app",
    "streamName": "events",
    "regionName": "us-east-1",
    "eventKey": "properties.eventName",
    "posthogApiKey": "phc_test",
    "posthogHost": "http://127.0.0.1:9",
}

SettingsFactory = Callable[..., config.Settings]
RulesFactory = Callable[..., MappingRules]
RecordFactory = Callable[..., KinesisRecord]


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


class ScriptedTransport:
    """A fake HTTP layer: answers from a script (or a function of the events), records requests.

    An answer is a status (200 comes with PostHog's body), ``(status, headers)`` or
    ``(status, headers, text)``, a :class:`~consumer.sender.Response`, an exception to
    raise, or ``"timeout"``.
    """

    # What PostHog's Rust capture answers to an accepted batch (rust/capture/src/api.rs).
    POSTHOG_OK = '{"status":"Ok"}'

    def __init__(
        self, *answers: Any, judge: Callable[[list[dict[str, Any]]], Any] | None = None
    ) -> None:
        self.answers = list(answers)
        self.judge = judge
        self.requests: list[dict[str, Any]] = []

    def __call__(self, url: str, body: bytes, headers: Any, timeout: float) -> Any:
        import gzip

        from consumer.errors import RetryableDeliveryError
        from consumer.sender import Response

        document = json.loads(gzip.decompress(body))
        self.requests.append(
            {"url": url, "body": document, "headers": dict(headers), "timeout": timeout}
        )
        answer = (
            self.judge(document["batch"])
            if self.judge
            else (self.answers.pop(0) if self.answers else 200)
        )
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, Response):
            return answer
        if isinstance(answer, tuple):
            status, extra, *text = answer
            return Response(status, extra, text[0] if text else self._body_for(status))
        if answer == "timeout":
            raise RetryableDeliveryError("no answer from PostHog within 1s")
        return Response(answer, {}, self._body_for(answer))

    def _body_for(self, status: int) -> str:
        return self.POSTHOG_OK if status == 200 else "refused"

    def delivered_uuids(self) -> list[str]:
        """Uuids of events in requests the script answered 200 (only meaningful with judge=None)."""
        return [e["uuid"] for r in self.requests for e in r["body"]["batch"]]


@pytest.fixture(name="sleeps")
def _sleeps() -> list[float]:
    """Collects the waits a component asked for, instead of waiting."""
    return []


@pytest.fixture(scope="session", name="emulators")
def _emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """kinesis-mock and moto, started once for every test that needs AWS."""
    from local import emulators

    with emulators.running(tmp_path_factory.mktemp("emulators")) as endpoints:
        yield endpoints
