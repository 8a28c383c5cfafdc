"""KCL glue: one :class:`RecordProcessor` per shard, driven by amazon-kclpy.

Data path per ``process_records`` call: records -> :class:`~consumer.mapping.Mapper`
-> events (bad records -> dead letters) -> :class:`~consumer.delivery.Delivery` ->
:class:`~consumer.checkpoint.CheckpointKeeper`. Delivery returns only when every
event was accepted or dead-lettered, so the position handed to the keeper never
runs ahead of PostHog.

amazon-kclpy swallows exceptions from processor methods and then acknowledges the
message, after which a later checkpoint would move past the failed records. So any
unexpected exception here ends the process instead (``SystemExit``): the daemon
then stops, and the restarted worker resumes from the last checkpoint.
"""

from __future__ import annotations

import binascii
import collections
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from amazon_kclpy.v3 import processor as kcl

from consumer import logs
from consumer.checkpoint import CheckpointKeeper, Position
from consumer.deadletter import DeadLetter
from consumer.delivery import Delivery, DeliveryStats
from consumer.errors import AuthenticationError, PermanentDeliveryError, RecordError
from consumer.exits import ExitStatus
from consumer.mapping import Mapper
from consumer.record import KinesisRecord, Pending
from consumer.telemetry import BatchOutcome, ShardTelemetry

log = logging.getLogger(__name__)


# Each builds one shard's part from its shard id (see consumer.wiring).
TelemetryFactory = Callable[[str], ShardTelemetry]
MapperFactory = Callable[[str], Mapper]
DeliveryFactory = Callable[[str], Delivery]
KeeperFactory = Callable[[str], CheckpointKeeper]
_F = TypeVar("_F", bound=Callable[..., None])


def _fatal_on_error(method: _F) -> _F:
    """End the process on any exception, so amazon-kclpy cannot move past lost work."""

    @functools.wraps(method)
    def wrapper(self: RecordProcessor, *args: Any) -> None:
        try:
            method(self, *args)
        except AuthenticationError as exc:
            self._failed()
            log.critical("%s; stopping without checkpointing. Fix the key and restart.", exc)
            raise SystemExit(ExitStatus.CONFIG) from exc
        except PermanentDeliveryError as exc:
            self._failed()
            log.critical("%s; stopping without checkpointing. Check posthogHost.", exc)
            raise SystemExit(ExitStatus.CONFIG) from exc
        except SystemExit:
            self._failed()  # the daemon is gone (75), or a refusal streak (78)
            raise
        except Exception as exc:
            self._failed()
            log.critical(
                "shard %s: unexpected error; stopping without checkpointing",
                self.shard_id,
                exc_info=True,
            )
            raise SystemExit(ExitStatus.UNEXPECTED) from exc

    return wrapper  # type: ignore[return-value]


class RecordProcessor(kcl.RecordProcessorBase):  # type: ignore[misc]
    """amazon-kclpy v3 processor for one shard lease."""

    def __init__(
        self,
        *,
        stream: str,
        mapper: MapperFactory,
        delivery: DeliveryFactory,
        keeper: KeeperFactory,
        telemetry: TelemetryFactory | None = None,
    ) -> None:
        """Collaborators are built per shard in :meth:`initialize`, from these factories.

        ``stream`` is the source stream's name, which every dead letter records;
        ``telemetry`` (metrics, health state, progress) is left out by tests that need none.
        """
        self._stream = stream
        self._mapper_factory = mapper
        self._delivery_factory = delivery
        self._keeper_factory = keeper
        self.shard_id = "?"
        self._mapper: Mapper | None = None
        self._delivery: Delivery | None = None
        self._keeper: CheckpointKeeper | None = None
        self._telemetry_factory = telemetry
        self._telemetry: ShardTelemetry | None = None
        self.records_seen = 0

    @_fatal_on_error
    def initialize(self, initialize_input: Any) -> None:
        """Bind this process to its shard."""
        self.shard_id = initialize_input.shard_id
        self._mapper = self._mapper_factory(self.shard_id)
        self._delivery = self._delivery_factory(self.shard_id)
        self._keeper = self._keeper_factory(self.shard_id)
        logs.set_shard(self.shard_id)
        if self._telemetry_factory is not None:
            self._telemetry = self._telemetry_factory(self.shard_id)
        log.info("shard %s: starting after %s", self.shard_id, initialize_input.sequence_number)

    @_fatal_on_error
    def process_records(self, process_records_input: Any) -> None:
        """Map, deliver, and checkpoint on cadence.

        Records are mapped as delivery cuts them into batches (the next while PostHog
        has one), so a batch or two of events is held at a time, not the whole call's.
        The position moves only once delivery has returned (every event accepted or
        dead-lettered), the records the mapper refused were dead-lettered, and every
        record of the call was read doing so.
        """
        mapper, delivery, keeper = self._parts()
        raws = process_records_input.records
        if not raws:
            return
        before = dataclasses.replace(
            delivery.stats, dead_lettered=collections.Counter(delivery.stats.dead_lettered)
        )
        if self._telemetry is not None:
            newest = _to_record(raws[-1]).arrival_millis
            self._telemetry.batch_arrived(len(raws), _millis_behind(process_records_input), newest)
        rejected: list[DeadLetter] = []
        mapped = _Mapped(mapper, raws, rejected, stream=self._stream, shard_id=self.shard_id)
        delivery.deliver(mapped)
        if mapped.count != len(raws):
            raise RuntimeError(f"delivery returned after {mapped.count} of {len(raws)} records")
        delivery.dead_letter(rejected)
        self.records_seen += len(raws)
        if self._telemetry is not None:
            self._telemetry.batch_done(_outcome(before, delivery.stats))
        last = _to_record(raws[-1])
        keeper.delivered(Position(last.sequence_number, last.sub_sequence_number), len(raws))
        if keeper.due():
            keeper.checkpoint(process_records_input.checkpointer)
            self._log_progress()

    @_fatal_on_error
    def lease_lost(self, lease_lost_input: Any) -> None:  # noqa: ARG002 - required signature
        """Another worker owns the shard now: checkpointing is impossible and must not be tried."""
        log.info("shard %s: lease lost; not checkpointing", self.shard_id)
        self._stopped()

    @_fatal_on_error
    def shard_ended(self, shard_ended_input: Any) -> None:
        """Checkpoint the shard's end so the daemon starts its children (after a split or merge)."""
        _, _, keeper = self._parts()
        if keeper.checkpoint_shard_end(shard_ended_input.checkpointer):
            log.info("shard %s: shard ended and checkpointed", self.shard_id)
        else:
            # The keeper logged why; the daemon re-delivers shardEnded to the next owner.
            log.warning("shard %s: shard ended, but its end was not checkpointed", self.shard_id)
        self._stopped()

    @_fatal_on_error
    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        """The worker is stopping: checkpoint what was delivered, for a clean hand-off."""
        _, _, keeper = self._parts()
        written = keeper.checkpoint(shutdown_requested_input.checkpointer)
        outcome = "checkpointed" if written else "not checkpointed (see above)"
        log.info("shard %s: shutdown requested; %s", self.shard_id, outcome)
        self._stopped()

    def _parts(self) -> tuple[Mapper, Delivery, CheckpointKeeper]:
        if self._mapper is None or self._delivery is None or self._keeper is None:
            raise RuntimeError("the daemon sent a message before initialize")
        return self._mapper, self._delivery, self._keeper

    def _failed(self) -> None:
        """The shard process is ending on an error: its last metrics go out first."""
        if self._telemetry is not None:
            self._telemetry.failed()
            self._telemetry = None

    def _stopped(self) -> None:
        """The shard process is done with its shard: its counts, last metrics, no state."""
        self._log_progress()
        if self._telemetry is not None:
            self._telemetry.stopped()
            self._telemetry = None

    def _log_progress(self) -> None:
        if self._delivery is None:
            return
        stats = self._delivery.stats
        log.info(
            "shard %s: records=%d sent=%d requests=%d retries=%d dead_lettered=%s",
            self.shard_id,
            self.records_seen,
            stats.sent,
            stats.requests,
            stats.retries,
            dict(stats.dead_lettered) or 0,
        )


class _Mapped:
    """The events of one call's records, mapped as they are read; refusals dead-lettered."""

    def __init__(
        self,
        mapper: Mapper,
        raws: Sequence[Any],
        rejected: list[DeadLetter],
        *,
        stream: str,
        shard_id: str,
    ) -> None:
        self._mapper = mapper
        self._raws = raws
        self._rejected = rejected
        self._stream = stream
        self._shard_id = shard_id
        self.count = 0  # records read so far

    def __iter__(self) -> Iterator[Pending]:
        map_record = self._mapper.map
        for raw in self._raws:
            record = raw if type(raw) is KinesisRecord else _to_record(raw)
            self.count += 1
            try:
                event = map_record(record)
            except RecordError as exc:
                self._rejected.append(
                    DeadLetter.of(
                        record,
                        stream=self._stream,
                        shard_id=self._shard_id,
                        reason=exc.reason,
                        detail=exc.detail,
                    )
                )
                continue
            yield Pending(record, event)


def _millis_behind(process_records_input: Any) -> int | None:
    """The lag the daemon reported with the message (None if it sent none)."""
    value = getattr(process_records_input, "millis_behind_latest", None)
    return int(value) if isinstance(value, int | float) else None


def _outcome(before: DeliveryStats, after: DeliveryStats) -> BatchOutcome:
    """What one call's delivery added to the shard's counters."""
    return BatchOutcome(
        delivered=after.sent - before.sent,
        dead_lettered=after.dead_lettered - before.dead_lettered,
        requests=after.requests - before.requests,
        retries=after.retries - before.retries,
        bytes_sent=after.bytes_sent - before.bytes_sent,
    )


def _to_record(raw: Any) -> KinesisRecord:
    """Ours as it is (consumer.protocol's), or amazon-kclpy's (base64 data, ms timestamps)."""
    if type(raw) is KinesisRecord:
        return raw
    return KinesisRecord(
        # What base64.b64decode does with text, without its per-call checks of the argument.
        data=binascii.a2b_base64(raw.data),
        partition_key=raw.partition_key,
        sequence_number=raw.sequence_number,
        sub_sequence_number=int(raw.sub_sequence_number or 0),
        arrival_millis=int(raw.timestamp_millis),
    )
