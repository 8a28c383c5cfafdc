"""Batches -> PostHog, until every event is either accepted or dead-lettered.

:meth:`Delivery.deliver` returns only when that is true for all it was given, which
is what allows the processor to checkpoint afterwards:

* connection errors, timeouts, 408, 429, 5xx: wait (see :mod:`consumer.retry`) and
  resend the same events, for as long as it takes;
* 413: split the batch in halves; 400: bisect. An event refused even alone is set
  aside, and what PostHog refused is dead-lettered (with PostHog's answer) at the end
  of the call, once PostHog has shown it is judging events (below);
* 401/403, 3xx, a 200 that is not PostHog's, any other 4xx: raise; nothing is
  dead-lettered or checkpointed, since resending later with the right configuration
  will succeed.

Refusals are trusted only while PostHog is seen judging events (our mapper sends only
events capture accepts, so a lone refusal is rare, while a host answering 400 to
everything refuses every event alone). The events refused in one :meth:`Delivery.deliver`
call are dead-lettered only if PostHog accepted some batch in that call, or else accepts
a probe (the smallest event of the last batch it accepted, sent again: byte-identical,
so PostHog collapses it with the original); otherwise
:class:`~consumer.errors.RefusalStreakError` is raised and nothing of the call is
dead-lettered. The same check runs as soon as :data:`MAX_REFUSALS_IN_A_ROW` events in a
row were refused alone with nothing accepted between. Before anything was accepted
there is nothing to probe with: fewer refusals in a row are trusted, and at that many the
rest of the call (every event not yet sent, cut again) is sent whole, once, without
bisecting; if PostHog accepts none of it, RefusalStreakError. So an always-400 host costs
at most 2 x :data:`MAX_REFUSALS_IN_A_ROW` + ceil(log2(``batchMaxEvents``)) + 1 requests
plus a probe or one per batch of the rest (README, "Delivery guarantees").

Batches go out one at a time, in order, each answered before the next is sent. The events
are read as batches are cut, so a caller may map records on demand. While PostHog has a
batch (gzipped and posted on a sender thread: ISA-L's deflate and the socket release the
GIL), the next batch is cut here, so the mapping of one batch overlaps the round trip of
the one before: about 12% more records per second in ``./run.sh bench``. While PostHog accepts
every batch, at most two batches of events are held at a time (after a refusal, the rest
of the call is mapped and held, to be bisected); nothing about the order or the answers
changes (a refused batch is bisected as before, one request at a time).
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NoReturn

from consumer.batching import cut
from consumer.deadletter import DeadLetter, DeadLetterSink
from consumer.errors import (
    BadBatchError,
    DeadLetterError,
    PayloadTooLargeError,
    RefusalStreakError,
    RetryableDeliveryError,
)
from consumer.record import Pending

__all__ = ["MAX_REFUSALS_IN_A_ROW", "Delivery", "DeliveryStats", "Pending"]
from consumer.retry import RetryPolicy
from consumer.sender import Sender

log = logging.getLogger(__name__)

# Events refused alone in a row, with nothing accepted between, before delivery checks
# that PostHog still accepts a known-good event (or, with none yet, any of the rest of
# the call). Bisecting a batch down to that many single events costs at most
# 2 * 10 + ceil(log2(batchMaxEvents)) + 1 requests, plus the probe (or one per batch of
# the rest): that is what an always-400 host costs before the stop. Fewer would send
# probes for a few adjacent bad records; more would only let a wrong host cost more.
MAX_REFUSALS_IN_A_ROW = 10

_Refusal = PayloadTooLargeError | BadBatchError


@dataclass
class DeliveryStats:
    """Counters for one shard process; logged, never used for decisions."""

    sent: int = 0
    requests: int = 0
    retries: int = 0
    probes: int = 0
    # Times the rest of a call was sent whole because nothing was known good yet.
    rests_sent_whole: int = 0
    dead_lettered: collections.Counter[str] = field(default_factory=collections.Counter)
    # Gzipped request bodies PostHog accepted.
    bytes_sent: int = 0


@dataclass(frozen=True, slots=True)
class _Refused:
    item: Pending
    error: _Refusal


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
        sending: Executor | None = None,
    ) -> None:
        """Bind the collaborators; nothing is sent until :meth:`deliver`.

        ``sending`` runs each request while the next batch is made: by default one sender
        thread (tests may pass one that runs each request at once, for exact orderings).
        """
        self._sender = sender
        self._sink = sink
        self._policy = policy
        self._stream = stream
        self._shard_id = shard_id
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._sleep = sleep
        self.stats = DeliveryStats()
        self._sending = sending or ThreadPoolExecutor(max_workers=1, thread_name_prefix="send")
        # Events refused alone since PostHog last accepted anything.
        self._refused_in_a_row = 0
        # An event PostHog accepted (the probe), and whether it accepted anything this call.
        self._known_good: bytes | None = None
        self._accepted_this_call = False

    def deliver(self, items: Iterable[Pending]) -> None:
        """Return once every item was accepted by PostHog or dead-lettered.

        ``items`` is read as batches are cut, so it may map records on demand. Raises
        :class:`RefusalStreakError` (dead-lettering nothing of ``items``) when events
        were refused one by one and PostHog gave no sign of judging them.
        """
        self._accepted_this_call = False
        batches = cut(items, max_events=self._max_events, max_bytes=self._max_bytes)
        first_refused = self._send_until_refused(batches)
        if first_refused is None:
            return
        first, refusal, rest = first_refused
        refused: list[_Refused] = []
        # The unsent rest of the call, in order (all mapped now); a refused batch's halves
        # go to the front, so bisection is depth-first.
        pending: collections.deque[list[Pending]] = collections.deque(rest)
        self._judge(first, refusal, pending, refused)
        while pending:
            batch = pending.popleft()
            exc = self._try(batch)
            if exc is not None:
                self._judge(batch, exc, pending, refused)
        if not refused:
            return
        if not self._accepted_this_call:
            self._verify_posthog_judges(refused)
        log.warning(
            "shard %s: dead-lettering %d events PostHog refused", self._shard_id, len(refused)
        )
        self.dead_letter([self._dead_letter_of(entry) for entry in refused])

    def _send_until_refused(
        self, batches: Iterator[list[Pending]]
    ) -> tuple[list[Pending], _Refusal, Iterator[list[Pending]]] | None:
        """Send ``batches`` in order while PostHog accepts them; None if it accepted all.

        At the first refusal, returns that batch, the refusal, and the batches not yet
        sent, in order.
        The next batch is made while PostHog has the current one, and is sent only once
        PostHog answered it (see the module's docstring).
        """
        batch = next(batches, None)
        while batch is not None:
            answer = self._sending.submit(self._try, batch)
            try:
                following = next(batches, None)  # mapped while the batch is in flight
            finally:
                exc = answer.result()  # whatever happens here, no request is left behind
            if exc is not None:
                rest = batches if following is None else itertools.chain([following], batches)
                return batch, exc, rest
            batch = following
        return None

    def _judge(
        self,
        batch: list[Pending],
        exc: _Refusal,
        pending: collections.deque[list[Pending]],
        refused: list[_Refused],
    ) -> None:
        """A refused batch: bisect it, or set a lone event aside and check the streak."""
        if len(batch) > 1:
            pending.extendleft(reversed(_halves(batch)))
            return
        self._refused_alone(batch[0], exc, refused)
        if self._refused_in_a_row >= MAX_REFUSALS_IN_A_ROW:
            if self._known_good is None:
                self._send_rest_whole(pending, refused)
            else:
                self._verify_posthog_judges(refused)

    def dead_letter(self, entries: Sequence[DeadLetter]) -> None:
        """Write ``entries`` to the sink, backing off while it fails; never gives up."""
        if not entries:
            return

        def on_retry(attempt: int, delay: float, exc: DeadLetterError) -> None:
            log.warning(
                "dead-letter write failed (attempt %d), retrying in %.1fs: %s", attempt, delay, exc
            )

        self._policy.call(
            lambda: self._sink.write(entries),
            retryable=DeadLetterError,
            sleep=self._sleep,
            on_retry=on_retry,
        )
        self.stats.dead_lettered.update(entry.reason for entry in entries)

    def _try(self, batch: list[Pending]) -> _Refusal | None:
        """Send ``batch``; None if PostHog accepted it, else its refusal (400 or 413)."""
        try:
            self._post([item.payload for item in batch])
        except (PayloadTooLargeError, BadBatchError) as exc:
            return exc
        self.stats.sent += len(batch)
        return None

    def _post(self, payloads: list[bytes]) -> None:
        """Send until PostHog answers anything but a retryable failure; note an acceptance."""

        def send() -> None:
            self.stats.requests += 1
            self.stats.bytes_sent += self._sender.send(payloads)

        def on_retry(attempt: int, delay: float, exc: RetryableDeliveryError) -> None:
            self.stats.retries += 1
            log.warning(
                "shard %s: %s; attempt %d failed, retrying in %.1fs",
                self._shard_id,
                exc,
                attempt,
                delay,
            )

        self._policy.call(
            send,
            retryable=RetryableDeliveryError,
            sleep=self._sleep,
            on_retry=on_retry,
            retry_after=lambda exc: exc.retry_after,
        )
        self._refused_in_a_row = 0
        self._accepted_this_call = True
        self._known_good = min(payloads, key=len)

    def _refused_alone(self, item: Pending, exc: _Refusal, refused: list[_Refused]) -> None:
        refused.append(_Refused(item, exc))
        self._refused_in_a_row += 1
        log.warning(
            "shard %s: PostHog refused event %s alone (%s); %d refused in a row",
            self._shard_id,
            item.event.uuid,
            exc.status,
            self._refused_in_a_row,
        )

    def _send_rest_whole(
        self, pending: collections.deque[list[Pending]], refused: list[_Refused]
    ) -> None:
        """With nothing known good yet, see whether PostHog accepts any of the rest of the call.

        Every event not yet sent is cut into batches again and each batch is sent once,
        whole. Returns if PostHog accepted any (the halves of the batches it refused are
        left in ``pending``, to be bisected as usual; events refused alone are recorded);
        raises RefusalStreakError if it accepted none, or nothing was left to send.
        """
        rest = [item for batch in pending for item in batch]
        pending.clear()
        batches = list(cut(rest, max_events=self._max_events, max_bytes=self._max_bytes))
        if batches:
            self.stats.rests_sent_whole += 1
            log.warning(
                "shard %s: %d events refused one by one and PostHog has accepted none since "
                "this shard process started; sending the rest of the call (%d events in %d "
                "batches) whole, to see whether it accepts any",
                self._shard_id,
                self._refused_in_a_row,
                len(rest),
                len(batches),
            )
        accepted = False
        for batch in batches:
            exc = self._try(batch)
            if exc is None:
                accepted = True
            elif len(batch) > 1:
                pending.extend(_halves(batch))
            else:
                self._refused_alone(batch[0], exc, refused)
        if not accepted:
            self._raise_nothing_accepted(refused, rest_batches=len(batches))
        if self._refused_in_a_row >= MAX_REFUSALS_IN_A_ROW:
            # Refused one by one again since the last acceptance: now there is a probe.
            self._verify_posthog_judges(refused)

    def _raise_nothing_accepted(self, refused: list[_Refused], *, rest_batches: int) -> NoReturn:
        last = refused[-1].error
        rest = (
            f", nor any of the {rest_batches} batches of the rest of the call sent whole"
            if rest_batches
            else ""
        )
        raise RefusalStreakError(
            f"shard {self._shard_id}: PostHog refused {len(refused)} events one by one{rest}, "
            f"and has accepted none since this shard process started ({_answer(last)}): "
            "posthogHost or a proxy in front of it may be wrong, or these records are events "
            "PostHog refuses (try one with `run.sh preview`); none was dead-lettered or "
            "checkpointed",
            status=last.status,
            body=last.body,
        )

    def _verify_posthog_judges(self, refused: list[_Refused]) -> None:
        """Return if PostHog accepts a known-good event now; raise RefusalStreakError if not.

        With no known-good event yet, fewer than :data:`MAX_REFUSALS_IN_A_ROW` refusals
        in a row are trusted (that many are :meth:`_send_rest_whole`'s to judge).
        """
        last = refused[-1].error
        if self._known_good is None:
            if self._refused_in_a_row < MAX_REFUSALS_IN_A_ROW:
                return  # nothing to probe with, and too few to suspect the host: trust them
            self._raise_nothing_accepted(refused, rest_batches=0)
        self.stats.probes += 1
        log.warning(
            "shard %s: %d events refused one by one with nothing accepted between; "
            "resending an event PostHog accepted before, to see whether it still accepts any",
            self._shard_id,
            self._refused_in_a_row,
        )
        try:
            self._post([self._known_good])
        except (PayloadTooLargeError, BadBatchError) as exc:
            raise RefusalStreakError(
                f"shard {self._shard_id}: PostHog refused {self._refused_in_a_row} events in a "
                f"row one by one, accepted none between, and now refuses an event it accepted "
                f"before ({_answer(last)}): posthogHost or a proxy in front of it is wrong; none "
                "was dead-lettered or checkpointed",
                status=exc.status,
                body=exc.body,
            ) from exc

    def _dead_letter_of(self, refused: _Refused) -> DeadLetter:
        detail = f"PostHog answered {refused.error.status}: {refused.error.body}".strip()
        return DeadLetter.of(
            refused.item.record,
            stream=self._stream,
            shard_id=self._shard_id,
            reason="rejected_by_posthog",
            detail=detail,
        )


def _halves(batch: list[Pending]) -> tuple[list[Pending], list[Pending]]:
    """A refused batch's two halves, in order: the bisection step."""
    middle = len(batch) // 2
    return batch[:middle], batch[middle:]


def _answer(error: _Refusal) -> str:
    """PostHog's answer, on one line and short, for an error message."""
    return f"last answer {error.status}: {' '.join(error.body.split())[:200]!r}"
