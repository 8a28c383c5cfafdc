"""Batches respect count and byte limits; bodies are valid PostHog /batch/ JSON."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from consumer.batching import cut, encode_body


@dataclass(frozen=True)
class Item:
    payload: bytes


def items(sizes: list[int]) -> list[Item]:
    return [Item(json.dumps({"event": "e", "pad": "x" * size}).encode()) for size in sizes]


def test_cut_by_count() -> None:
    """No batch holds more than max_events."""
    batches = list(cut(items([1] * 10), max_events=4, max_bytes=10**6))
    assert [len(b) for b in batches] == [4, 4, 2]


def test_oversized_item_travels_alone() -> None:
    """An item bigger than max_bytes is sent on its own rather than dropped."""
    batches = list(cut(items([10, 5000, 10]), max_events=100, max_bytes=2000))
    assert [len(b) for b in batches] == [1, 1, 1]


@given(st.lists(st.integers(min_value=0, max_value=3000), max_size=40), st.integers(1, 10))
def test_cut_keeps_order_and_limits(sizes: list[int], max_events: int) -> None:
    """Batches concatenate back to the input, and each fits both limits (or is a lone item)."""
    given_items = items(sizes)
    max_bytes = 4096
    batches = list(cut(given_items, max_events=max_events, max_bytes=max_bytes))
    assert [i for b in batches for i in b] == given_items
    for batch in batches:
        body = encode_body("phc_x", [i.payload for i in batch], historical_migration=False)
        assert len(batch) <= max_events
        assert len(body) <= max_bytes or len(batch) == 1


def test_body_shape() -> None:
    """The body is PostHog's batch envelope, without sent_at (timestamps used verbatim)."""
    body = json.loads(
        encode_body("phc_x", [b'{"event":"a"}', b'{"event":"b"}'], historical_migration=True)
    )
    assert body == {
        "api_key": "phc_x",
        "historical_migration": True,
        "batch": [{"event": "a"}, {"event": "b"}],
    }


def test_cut_reads_items_as_it_yields() -> None:
    """A batch is cut as soon as the item after it is read: items may be made on demand."""
    read: list[int] = []

    def endless() -> Iterator[Item]:
        for n in itertools.count():
            read.append(n)
            yield Item(b"{}")

    batches = cut(endless(), max_events=3, max_bytes=10**6)
    assert len(next(batches)) == 3
    assert len(read) == 4  # the first batch, and the item that closed it
    assert len(next(batches)) == 3
    assert len(read) == 7
