"""Events -> request bodies no larger than PostHog accepts.

Batches are cut by count and by bytes *before* sending, so a 413 should only ever
come from a proxy with a smaller limit; the delivery layer splits further if it does.
Events arrive already encoded (see :mod:`consumer.mapping`), so building a body is a
join, not a second JSON encoding of every event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
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


def cut(items: Sequence[_T], *, max_events: int, max_bytes: int) -> Iterator[list[_T]]:
    """Yield consecutive runs of ``items``, each within ``max_events`` and ``max_bytes``.

    An item that alone exceeds ``max_bytes`` travels alone: mapping already refused
    events over PostHog's per-event limit, so such an item is still deliverable.
    """
    batch: list[_T] = []
    size = _ENVELOPE_SLACK_BYTES
    for item in items:
        item_size = len(item.payload) + 1
        if batch and (len(batch) >= max_events or size + item_size > max_bytes):
            yield batch
            batch, size = [], _ENVELOPE_SLACK_BYTES
        batch.append(item)
        size += item_size
    if batch:
        yield batch


def encode_body(api_key: str, payloads: Sequence[bytes], *, historical_migration: bool) -> bytes:
    """Build the ``/batch/`` request body around already-encoded events.

    No ``sent_at``: PostHog then uses each event's ``timestamp`` verbatim instead of
    shifting it by the sender's clock skew, which keeps a replay identical.
    """
    head = json.dumps({"api_key": api_key, "historical_migration": historical_migration})
    return head[:-1].encode() + b',"batch":[' + b",".join(payloads) + b"]}"
