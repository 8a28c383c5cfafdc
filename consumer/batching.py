"""Events -> request bodies no larger than PostHog accepts.

Batches are cut by count and by bytes *before* sending, so a 413 should only ever
come from a proxy with a smaller limit; the delivery layer splits further if it does.
Events arrive already encoded (see :mod:`consumer.mapping`), so building a body is a
join, not a second JSON encoding of every event.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol, TypeVar

# The envelope around the events: {"api_key":"...","historical_migration":false,"batch":[]}
# plus one comma per event; counted so that max_bytes bounds the whole body.
_ENVELOPE_SLACK_BYTES = 256


class Encoded(Protocol):
    """Anything carrying an encoded event."""

    @property
    def payload(self) -> bytes:
        """The event's compact JSON encoding."""
        ...


_T = TypeVar("_T", bound=Encoded)
_U = TypeVar("_U")


def cut(items: Iterable[_T], *, max_events: int, max_bytes: int) -> Iterator[list[_T]]:
    """Yield consecutive runs of ``items``, each within ``max_events`` and ``max_bytes``.

    An item that alone exceeds ``max_bytes`` travels alone: mapping already refused
    events over PostHog's per-event limit, so such an item is still deliverable. Items
    are read as runs are cut (a run is yielded when the item after it is read).
    """
    return runs(
        items,
        max_count=max_events,
        max_bytes=max_bytes,
        size=lambda item: len(item.payload) + 1,  # and its comma
        overhead=_ENVELOPE_SLACK_BYTES,
    )


def runs(
    items: Iterable[_U],
    *,
    max_count: int,
    max_bytes: int,
    size: Callable[[_U], int],
    overhead: int = 0,
) -> Iterator[list[_U]]:
    """Consecutive runs of ``items``, each within ``max_count`` items and ``max_bytes``.

    A run's bytes are ``overhead`` plus each item's ``size``; an item over ``max_bytes``
    runs alone. The one way requests are cut by count and bytes: PostHog batches here, PutRecords
    calls in :mod:`consumer.kinesis_sink` and in the local harness.
    """
    run: list[_U] = []
    total = overhead
    for item in items:
        item_size = size(item)
        if run and (len(run) >= max_count or total + item_size > max_bytes):
            yield run
            run, total = [], overhead
        run.append(item)
        total += item_size
    if run:
        yield run


def encode_body(api_key: str, payloads: Sequence[bytes], *, historical_migration: bool) -> bytes:
    """Build the ``/batch/`` request body around already-encoded events.

    No ``sent_at``: PostHog then uses each event's ``timestamp`` verbatim instead of
    shifting it by the sender's clock skew, which keeps a replay identical.
    """
    head = json.dumps({"api_key": api_key, "historical_migration": historical_migration})
    return head[:-1].encode() + b',"batch":[' + b",".join(payloads) + b"]}"
