"""Batches -> PostHog, until every event is either accepted or dead-lettered.

:meth:`Delivery.deliver` returns only when that is true for all it was given, which
is what allows the processor to checkpoint afterwards:

* connection errors, timeouts, 408, 429, 5xx: wait (see :mod:`consumer.retry`) and
  resend the same events, for as long as it takes;
* 413: split the batch in halves; a single event still refused is dead-lettered;
* 400: bisect to find the events PostHog refuses, dead-letter only those (with
  PostHog's answer), deliver the rest;
* 401/403 and any other 4xx: raise; nothing is dead-lettered or checkpointed, since
  resending later with the right configuration will succeed.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from consumer.batching import cut
from consumer.deadletter import DeadLetter, DeadLetterSink
from consumer.errors import (
    BadBatchError,
    DeadLetterError,
    PayloadTooLargeError,
    RetryableDeliveryError,
)
from consumer.mapping import KinesisRecord, MappedEvent
from consumer.retry import RetryPolicy
from consumer.sender import Sender

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Pending:
    """An event on its way, with the record it came from (for dead-lettering)."""

    record: KinesisRecord
    event: MappedEvent

    @property
    def payload(self) -> bytes:
        """The event's encoded JSON."""
        return self.event.payload


@dataclass
class DeliveryStats:
    """Counters for one shard process; logged, never used for decisions."""

    sent: int = 0
    requests: int = 0
    retries: int = 0
    dead_lettered: collections.Counter[str] = field(default_factory=collections.Counter)


class Delivery:
    """Sends batches with retries, splitting and bisecting; dead-letters what PostHog refuses."""

    def __init__(  # noqa: PLR0913 - every collaborator is injected for tests
        self,
        *,
        sender: Sender,
        sink: DeadLetterSink,
        policy: RetryPolicy,
        stream: str,
        shard_id: str,
        max_events: int,
        max_bytes: int,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Bind the collaborators; nothing is sent until :meth:`deliver`."""
        self._sender = sender
        self._sink = sink
        self._policy = policy
        self._stream = stream
        self._shard_id = shard_id
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._sleep = sleep
        self.stats = DeliveryStats()

    def deliver(self, items: Sequence[Pending]) -> None:
        """Return once every item was accepted by PostHog or dead-lettered."""
        for batch in cut(items, max_events=self._max_events, max_bytes=self._max_bytes):
            self._send(batch)

    def dead_letter(self, entries: Sequence[DeadLetter]) -> None:
        """Write ``entries`` to the sink, backing off while it fails; never gives up."""
        if not entries:
            return
        attempt = 0
        while True:
            try:
                self._sink.write(entries)
            except DeadLetterError as exc:
                attempt += 1
                delay = self._policy.delay(attempt=attempt)
                log.warning(
                    "dead-letter write failed (attempt %d), retrying in %.1fs: %s",
                    attempt,
                    delay,
                    exc,
                )
                self._sleep(delay)
                continue
            self.stats.dead_lettered.update(entry.reason for entry in entries)
            return

    def _send(self, batch: list[Pending]) -> None:
        attempt = 0
        while True:
            self.stats.requests += 1
            try:
                self._sender.send([item.payload for item in batch])
            except RetryableDeliveryError as exc:
                attempt += 1
                self.stats.retries += 1
                delay = self._policy.delay(attempt=attempt, retry_after=exc.retry_after)
                log.warning(
                    "shard %s: %s; attempt %d failed, retrying in %.1fs",
                    self._shard_id,
                    exc,
                    attempt,
                    delay,
                )
                self._sleep(delay)
                continue
            except (PayloadTooLargeError, BadBatchError) as exc:
                self._narrow(batch, exc)
                return
            self.stats.sent += len(batch)
            return

    def _narrow(self, batch: list[Pending], exc: PayloadTooLargeError | BadBatchError) -> None:
        if len(batch) == 1:
            item = batch[0]
            log.warning(
                "shard %s: PostHog refused event %s (%s); dead-lettering it",
                self._shard_id,
                item.event.uuid,
                exc.status,
            )
            detail = f"PostHog answered {exc.status}: {exc.body}".strip()
            self.dead_letter(
                [
                    DeadLetter.of(
                        item.record,
                        stream=self._stream,
                        shard_id=self._shard_id,
                        reason="rejected_by_posthog",
                        detail=detail,
                    )
                ]
            )
            return
        middle = len(batch) // 2
        self._send(batch[:middle])
        self._send(batch[middle:])
