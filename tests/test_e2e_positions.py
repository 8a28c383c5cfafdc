"""Where a new application starts reading, on real parts: TRIM_HORIZON, LATEST and
AT_TIMESTAMP, each a fresh KCL application (its own lease table and stand-in) on one
stream that already holds records. The three start together, to pay KCL's start-up once.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from consumer.kclkeys import AT_TIMESTAMP_KEY
from local import harness
from local.emulators import Emulators
from tests.support import (
    FIRST_START_TIMEOUT,
    RESTART_TIMEOUT,
    Put,
    elapsed_since,
    good,
    put_all,
    wait_delivered,
    worker_properties,
)

pytestmark = pytest.mark.e2e

STREAM = "positions"
SHARDS = 2
BATCH = 40
# Records put before the AT_TIMESTAMP start must have arrived before it: whole seconds
# (the daemon's unit), with a margin for the emulator's clock.
AT_TIMESTAMP_MARGIN_SECONDS = 1.5
MARKER_KEYS = 16  # enough partition keys to land on every shard
SETTLE_SECONDS = 3.0  # anything unexpected would arrive by now


@dataclass
class App:
    """One application: its stand-in and its worker."""

    name: str
    standin: harness.StandIn
    worker: harness.Worker

    def uuids(self) -> set[str]:
        return {event["uuid"] for event in self.standin.events() if event["event"] != "marker"}


@pytest.fixture(name="kinesis")
def _kinesis(emulators: Emulators) -> object:
    return harness.kinesis_client(emulators.kinesis_endpoint)


def marker(number: int) -> tuple[str, bytes, dict[str, Any]]:
    document: dict[str, Any] = {"properties": {"eventName": "marker", "userId": "m", "foo": number}}
    return f"marker-{number % MARKER_KEYS}", json.dumps(document).encode(), document


@pytest.fixture(name="apps")
def _apps() -> Iterator[dict[str, App]]:
    apps: dict[str, App] = {}
    try:
        yield apps
    finally:
        for app in apps.values():
            app.worker.stop()
            app.standin.close()


def start_app(
    tmp_path: Path, emulators: Emulators, apps: dict[str, App], name: str, position: dict[str, str]
) -> None:
    standin = harness.StandIn(tmp_path / f"{name}-standin.log")
    values = worker_properties(
        emulators,
        standin,
        application=f"kinesis-posthog-{name}",
        stream=STREAM,
        dead_letter=tmp_path / f"{name}-dead-letter.jsonl",
    )
    values.pop("initialPositionInStream")  # one key per KCL setting: the test's own
    properties = harness.write_properties(tmp_path / f"{name}.properties", values | position)
    apps[name] = App(name, standin, harness.Worker.start(properties, tmp_path / f"{name}.log"))


def test_start_positions_read_what_they_should(
    tmp_path: Path, emulators: Emulators, kinesis: object, apps: dict[str, App]
) -> None:
    """On a stream holding records: TRIM_HORIZON reads all of them, AT_TIMESTAMP those that
    arrived from its time on, LATEST only those put once it reads; each exactly once."""
    harness.create_stream(kinesis, STREAM, SHARDS)
    old = put_all(kinesis, STREAM, [good(n) for n in range(BATCH)])
    time.sleep(AT_TIMESTAMP_MARGIN_SECONDS)
    at = math.ceil(time.time())
    time.sleep(max(0.0, at - time.time()) + AT_TIMESTAMP_MARGIN_SECONDS)
    middle = put_all(kinesis, STREAM, [good(n) for n in range(BATCH, 2 * BATCH)])

    start = time.monotonic()
    start_app(
        tmp_path, emulators, apps, "trim-horizon", {"initialPositionInStream": "TRIM_HORIZON"}
    )
    start_app(tmp_path, emulators, apps, "latest", {"initialPositionInStream": "LATEST"})
    start_app(tmp_path, emulators, apps, "at-timestamp", {AT_TIMESTAMP_KEY: str(at)})

    # LATEST reads from wherever each shard's iterator is taken: put markers until some
    # arrive from every shard, and only then the records it must read.
    markers = 0
    latest = apps["latest"]

    def reading_every_shard() -> bool:
        nonlocal markers
        put_all(kinesis, STREAM, [marker(markers + n) for n in range(MARKER_KEYS)])
        markers += MARKER_KEYS
        shards = {e["properties"]["$kinesis_shard_id"] for e in latest.standin.events()}
        return len(shards) == SHARDS

    assert harness.wait_until(reading_every_shard, FIRST_START_TIMEOUT, interval=1.0)
    print(f"\n[positions] LATEST reading every shard after {elapsed_since(start)}")
    new = put_all(kinesis, STREAM, [good(n) for n in range(2 * BATCH, 3 * BATCH)])

    expected: dict[str, list[Put]] = {
        "trim-horizon": old + middle + new,
        "at-timestamp": middle + new,
        "latest": new,
    }
    for name, puts in expected.items():
        wait_delivered(apps[name].standin, puts, RESTART_TIMEOUT)
    time.sleep(SETTLE_SECONDS)
    for name, puts in expected.items():
        events = [e for e in apps[name].standin.events() if e["event"] != "marker"]
        print(f"[positions] {name}: {len(events)} events")
        assert apps[name].uuids() == {put.uuid for put in puts}, f"{name} read what it should"
        assert len(events) == len(puts), f"{name}: each record once"
