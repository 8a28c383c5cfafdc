"""Checkpointing what was delivered, on a cadence, with CheckpointError handled by kind.

The daemon answers a checkpoint with the simple name of a Java exception; it is
mapped to :class:`CheckpointFailure` here and nowhere else:

* ``ThrottlingException``, ``KinesisClientLibDependencyException``: DynamoDB was busy
  or unreachable: back off and retry (:meth:`RetryPolicy.call
  <consumer.retry.RetryPolicy.call>`, at most :data:`MAX_CHECKPOINT_ATTEMPTS` attempts),
  then leave it to the next cadence (the position is kept, so a later checkpoint covers
  it).
* ``ShutdownException``: the lease is gone: stop checkpointing for good.
* anything else (``InvalidStateException``, ``IllegalArgumentException``): log with
  context; retrying the same call cannot help.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from amazon_kclpy.checkpoint_error import CheckpointError

from consumer.retry import RetryPolicy

log = logging.getLogger(__name__)

# Attempts at one checkpoint call (retryable refusals only) before leaving it to the
# next cadence.
MAX_CHECKPOINT_ATTEMPTS = 5


class CheckpointFailure(enum.Enum):
    """What a ``CheckpointError`` means for us."""

    RETRYABLE = "retryable"
    LEASE_GONE = "lease_gone"
    FATAL = "fatal"

    @classmethod
    def of(cls, error_name: str) -> CheckpointFailure:
        """Classify the Java exception name the daemon sent back."""
        if error_name in ("ThrottlingException", "KinesisClientLibDependencyException"):
            return cls.RETRYABLE
        if error_name == "ShutdownException":
            return cls.LEASE_GONE
        return cls.FATAL


class KclCheckpointer(Protocol):
    """amazon-kclpy's checkpointer, as far as we use it."""

    def checkpoint(
        self, sequence_number: str | None = None, sub_sequence_number: int | None = None
    ) -> Any:
        """Ask the daemon to record the position."""
        ...


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a shard: the last record that was delivered or dead-lettered."""

    sequence_number: str
    sub_sequence_number: int


class CheckpointKeeper:
    """Tracks the delivered position and checkpoints it every N records or T seconds."""

    def __init__(  # noqa: PLR0913 - clock and sleep are injected for tests
        self,
        *,
        shard_id: str,
        every_records: int,
        every_seconds: float,
        policy: RetryPolicy,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Start with nothing delivered and the cadence timer running."""
        self._shard_id = shard_id
        self._every_records = every_records
        self._every_seconds = every_seconds
        self._policy = policy
        self._clock = clock
        self._sleep = sleep
        self._delivered: Position | None = None
        self._checkpointed: Position | None = None
        self._since = 0
        self._last_time = clock()
        self.lease_gone = False

    def delivered(self, position: Position, count: int) -> None:
        """Record that everything up to ``position`` is accepted or dead-lettered."""
        self._delivered = position
        self._since += count

    def due(self) -> bool:
        """True when the cadence says a checkpoint should be written now."""
        if self._delivered is None or self._delivered == self._checkpointed:
            return False
        return (
            self._since >= self._every_records
            or self._clock() - self._last_time >= self._every_seconds
        )

    def checkpoint(self, checkpointer: KclCheckpointer) -> bool:
        """Checkpoint the delivered position, if any is new; True if it was written."""
        if self._delivered is None or self._delivered == self._checkpointed:
            return True
        position = self._delivered
        if self._call(checkpointer, position.sequence_number, position.sub_sequence_number):
            self._checkpointed = position
            self._since = 0
            self._last_time = self._clock()
            return True
        return False

    def checkpoint_shard_end(self, checkpointer: KclCheckpointer) -> bool:
        """Checkpoint the end of the shard (no arguments), which lets its children start."""
        return self._call(checkpointer, None, None)

    def _call(self, checkpointer: KclCheckpointer, sequence: str | None, sub: int | None) -> bool:
        """Ask for one checkpoint, retrying only a retryable refusal; True if it was written."""
        if self.lease_gone:
            return False
        where = sequence or "SHARD_END"

        def checkpoint_once() -> CheckpointError | None:
            # Only a retryable refusal is raised (for the policy to retry); any other
            # refusal is returned, to be handled by its kind below.
            try:
                checkpointer.checkpoint(sequence, sub)
            except CheckpointError as exc:
                if _kind(exc) is CheckpointFailure.RETRYABLE:
                    raise
                return exc
            return None

        def on_retry(attempt: int, delay: float, exc: CheckpointError) -> None:
            log.warning(
                "shard %s: checkpoint %s (attempt %d), retrying in %.1fs",
                self._shard_id,
                exc.value,
                attempt,
                delay,
            )

        try:
            refused = self._policy.call(
                checkpoint_once,
                retryable=CheckpointError,
                sleep=self._sleep,
                on_retry=on_retry,
                max_attempts=MAX_CHECKPOINT_ATTEMPTS,
            )
        except CheckpointError as exc:
            log.warning(
                "shard %s: checkpoint %s (attempt %d); leaving %s to the next checkpoint",
                self._shard_id,
                exc.value,
                MAX_CHECKPOINT_ATTEMPTS,
                where,
            )
            return False
        if refused is None:
            log.debug("shard %s: checkpointed at %s", self._shard_id, where)
            return True
        if _kind(refused) is CheckpointFailure.LEASE_GONE:
            log.warning(
                "shard %s: lease gone (ShutdownException); not checkpointing", self._shard_id
            )
            self.lease_gone = True
            return False
        log.error("shard %s: checkpoint at %s refused: %s", self._shard_id, where, refused.value)
        return False


def _kind(error: CheckpointError) -> CheckpointFailure:
    return CheckpointFailure.of(str(error.value))
