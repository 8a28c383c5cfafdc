"""Helpers for the end-to-end tests: records with known identities, and waiting on them."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumer.mapping import event_uuid
from consumer.record import KinesisRecord
from local import harness


@dataclass(frozen=True)
class Put:
    """One record we put: what it held, and where Kinesis stored it."""

    document: dict[str, Any] | None
    data: bytes
    partition_key: str
    shard_id: str
    sequence_number: str
    uuid: str


def put_all(
    client: Any, stream: str, items: Sequence[tuple[str, bytes, dict[str, Any] | None]]
) -> list[Put]:
    """Put records in order (500 per call, by the harness) and return where each landed."""
    slots = harness.put_and_place(client, stream, [(key, data) for key, data, _ in items])
    puts: list[Put] = []
    for (key, data, document), slot in zip(items, slots, strict=True):
        record = KinesisRecord(data, key, slot["SequenceNumber"], 0, 0)
        shard = slot["ShardId"]
        puts.append(
            Put(
                document,
                data,
                key,
                shard,
                slot["SequenceNumber"],
                event_uuid(stream, shard, record),
            )
        )
    return puts


def good(number: int, *, with_time: bool = True) -> tuple[str, bytes, dict[str, Any]]:
    """A record with nested keys, as the seed app documents them."""
    document: dict[str, Any] = {
        "properties": {
            "eventName": f"event-{number % 5}",
            "userId": f"user-{number % 37}",
            "foo": number,
        },
        "context": {"page.url": f"/p/{number}", "tags": ["a", number]},
    }
    if with_time:
        document["meta"] = {"ts": 1_700_000_000 + number}
    return f"pk-{number % 11}", json.dumps(document).encode(), document


def read_dead_letters(path: Path) -> list[dict[str, Any]]:
    """Entries of a JSON-lines dead-letter file (none if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_events(standin: harness.StandIn, count: int, timeout: float) -> list[dict[str, Any]]:
    """Wait until the stand-in accepted at least ``count`` events; return them all."""
    harness.wait_until(lambda: standin.stats()["events"] >= count, timeout)
    return standin.events()


def elapsed_since(start: float) -> str:
    """Seconds since ``start``, for the figures tests print."""
    return f"{time.monotonic() - start:.1f}s"
