"""CheckpointKeeper: the cadence, checkpoints only of new positions, and errors by kind."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from amazon_kclpy.checkpoint_error import CheckpointError

from consumer.checkpoint import (
    MAX_CHECKPOINT_ATTEMPTS,
    CheckpointFailure,
    CheckpointKeeper,
    Position,
)
from consumer.retry import RetryPolicy


class FakeCheckpointer:
    """Records every checkpoint call; answers each with the next scripted error name, if any."""

    def __init__(self, *errors: str) -> None:
        self.errors = list(errors)
        self.calls: list[tuple[str | None, int | None]] = []

    def checkpoint(
        self, sequence_number: str | None = None, sub_sequence_number: int | None = None
    ) -> Any:
        self.calls.append((sequence_number, sub_sequence_number))
        if self.errors:
            raise CheckpointError(self.errors.pop(0))


class Clock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="clock")
def _clock() -> Clock:
    return Clock()


@pytest.fixture(name="keeper")
def _keeper(clock: Clock, sleeps: list[float]) -> CheckpointKeeper:
    return CheckpointKeeper(
        shard_id="shardId-000000000000",
        every_records=10,
        every_seconds=60.0,
        policy=RetryPolicy(jitter=0.0),
        clock=clock,
        sleep=sleeps.append,
    )


def at(sequence: int, sub: int = 0) -> Position:
    return Position(str(sequence), sub)


class TestCadence:
    def test_nothing_delivered_is_never_due(self, keeper: CheckpointKeeper, clock: Clock) -> None:
        """With nothing delivered there is nothing to checkpoint, however long it has been."""
        clock.now += 3600
        assert not keeper.due()

    def test_due_by_records(self, keeper: CheckpointKeeper) -> None:
        """Due once every_records records were delivered since the last checkpoint."""
        keeper.delivered(at(1), 9)
        assert not keeper.due()
        keeper.delivered(at(2), 1)
        assert keeper.due()

    def test_due_by_seconds(self, keeper: CheckpointKeeper, clock: Clock) -> None:
        """Due once every_seconds passed on the injected clock, even for one record."""
        keeper.delivered(at(1), 1)
        clock.now += 59.9
        assert not keeper.due()
        clock.now += 0.1
        assert keeper.due()

    def test_a_checkpoint_restarts_both_counts(
        self, keeper: CheckpointKeeper, clock: Clock
    ) -> None:
        """After a checkpoint, records and seconds are counted from zero again."""
        keeper.delivered(at(1), 10)
        clock.now += 60
        assert keeper.checkpoint(FakeCheckpointer())
        keeper.delivered(at(2), 9)
        clock.now += 59
        assert not keeper.due()
        keeper.delivered(at(3), 1)
        assert keeper.due()

    def test_checkpointed_position_is_not_due(self, keeper: CheckpointKeeper, clock: Clock) -> None:
        """Once the delivered position is checkpointed, time alone does not make it due."""
        keeper.delivered(at(1), 10)
        assert keeper.checkpoint(FakeCheckpointer())
        clock.now += 3600
        assert not keeper.due()

    def test_a_failed_checkpoint_stays_due(self, keeper: CheckpointKeeper) -> None:
        """A checkpoint refused for good this time leaves the position due for the next cadence."""
        keeper.delivered(at(1), 10)
        assert not keeper.checkpoint(FakeCheckpointer("InvalidStateException"))
        assert keeper.due()


class TestCheckpoint:
    def test_writes_the_delivered_position(self, keeper: CheckpointKeeper) -> None:
        """The last delivered record's sequence and subsequence numbers are checkpointed."""
        checkpointer = FakeCheckpointer()
        keeper.delivered(at(1), 1)
        keeper.delivered(at(7, 3), 1)
        assert keeper.checkpoint(checkpointer)
        assert checkpointer.calls == [("7", 3)]

    def test_only_when_the_position_moved(self, keeper: CheckpointKeeper) -> None:
        """Nothing delivered, or nothing new since the last checkpoint: no call, and True."""
        checkpointer = FakeCheckpointer()
        assert keeper.checkpoint(checkpointer)
        keeper.delivered(at(1), 1)
        assert keeper.checkpoint(checkpointer)
        assert keeper.checkpoint(checkpointer)
        keeper.delivered(at(2), 1)
        assert keeper.checkpoint(checkpointer)
        assert checkpointer.calls == [("1", 0), ("2", 0)]

    def test_shard_end_checkpoints_with_no_position(self, keeper: CheckpointKeeper) -> None:
        """The end of a shard is checkpointed with no arguments, delivered or not."""
        checkpointer = FakeCheckpointer()
        assert keeper.checkpoint_shard_end(checkpointer)
        assert checkpointer.calls == [(None, None)]

    def test_shard_end_after_checkpoint_still_calls(self, keeper: CheckpointKeeper) -> None:
        """SHARD_END is written even when the delivered position already was."""
        checkpointer = FakeCheckpointer()
        keeper.delivered(at(1), 1)
        assert keeper.checkpoint(checkpointer)
        assert keeper.checkpoint_shard_end(checkpointer)
        assert checkpointer.calls == [("1", 0), (None, None)]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ThrottlingException", CheckpointFailure.RETRYABLE),
        ("KinesisClientLibDependencyException", CheckpointFailure.RETRYABLE),
        ("ShutdownException", CheckpointFailure.LEASE_GONE),
        ("InvalidStateException", CheckpointFailure.FATAL),
        ("IllegalArgumentException", CheckpointFailure.FATAL),
        ("SomethingNew", CheckpointFailure.FATAL),
    ],
)
def test_classification(name: str, kind: CheckpointFailure) -> None:
    """The daemon's Java exception names map to the three kinds."""
    assert CheckpointFailure.of(name) is kind


class TestErrors:
    @pytest.mark.parametrize("name", ["ThrottlingException", "KinesisClientLibDependencyException"])
    def test_retryable_backs_off_then_writes(
        self, keeper: CheckpointKeeper, sleeps: list[float], name: str
    ) -> None:
        """Throttling or DynamoDB trouble: back off (0.5 s doubling) and try again."""
        checkpointer = FakeCheckpointer(name, name)
        keeper.delivered(at(1), 1)
        assert keeper.checkpoint(checkpointer)
        assert checkpointer.calls == [("1", 0)] * 3
        assert sleeps == [0.5, 1.0]
        assert not keeper.due()

    def test_retryable_gives_up_after_the_bound(
        self, keeper: CheckpointKeeper, sleeps: list[float], caplog: pytest.LogCaptureFixture
    ) -> None:
        """MAX_CHECKPOINT_ATTEMPTS refusals: give up, keep the position for the next cadence."""
        checkpointer = FakeCheckpointer(*["ThrottlingException"] * MAX_CHECKPOINT_ATTEMPTS)
        keeper.delivered(at(1), 10)
        with caplog.at_level(logging.WARNING, logger="consumer.checkpoint"):
            assert not keeper.checkpoint(checkpointer)
        assert len(checkpointer.calls) == MAX_CHECKPOINT_ATTEMPTS
        assert sleeps == [0.5, 1.0, 2.0, 4.0]  # no wait after the last attempt
        messages = [r.getMessage() for r in caplog.records]
        assert messages[0] == (
            "shard shardId-000000000000: checkpoint ThrottlingException (attempt 1), "
            "retrying in 0.5s"
        )
        assert "leaving 1 to the next checkpoint" in messages[-1]
        assert not keeper.lease_gone
        assert keeper.due()
        # The next cadence tries again, and this time it is written.
        assert keeper.checkpoint(checkpointer)
        assert checkpointer.calls[-1] == ("1", 0)

    def test_lease_gone_stops_checkpointing_for_good(
        self, keeper: CheckpointKeeper, sleeps: list[float]
    ) -> None:
        """ShutdownException: no retry, and no checkpoint call ever again, shard end included."""
        checkpointer = FakeCheckpointer("ShutdownException")
        keeper.delivered(at(1), 1)
        assert not keeper.checkpoint(checkpointer)
        assert keeper.lease_gone
        keeper.delivered(at(2), 1)
        assert not keeper.checkpoint(checkpointer)
        assert not keeper.checkpoint_shard_end(checkpointer)
        assert checkpointer.calls == [("1", 0)]
        assert sleeps == []

    def test_lease_gone_after_a_retry(self, keeper: CheckpointKeeper, sleeps: list[float]) -> None:
        """A retry that meets ShutdownException stops there, without more attempts."""
        checkpointer = FakeCheckpointer("ThrottlingException", "ShutdownException")
        keeper.delivered(at(1), 1)
        assert not keeper.checkpoint(checkpointer)
        assert keeper.lease_gone
        assert len(checkpointer.calls) == 2
        assert sleeps == [0.5]

    @pytest.mark.parametrize("name", ["InvalidStateException", "IllegalArgumentException"])
    def test_fatal_is_logged_and_not_retried(
        self,
        keeper: CheckpointKeeper,
        sleeps: list[float],
        caplog: pytest.LogCaptureFixture,
        name: str,
    ) -> None:
        """Another refusal: logged with shard and position, no retry, checkpointing goes on."""
        checkpointer = FakeCheckpointer(name)
        keeper.delivered(at(1), 1)
        with caplog.at_level(logging.ERROR, logger="consumer.checkpoint"):
            assert not keeper.checkpoint(checkpointer)
        assert checkpointer.calls == [("1", 0)]
        assert sleeps == []
        assert not keeper.lease_gone
        assert [r.getMessage() for r in caplog.records] == [
            f"shard shardId-000000000000: checkpoint at 1 refused: {name}"
        ]
        assert keeper.checkpoint(checkpointer)

    def test_fatal_at_shard_end_names_it(
        self, keeper: CheckpointKeeper, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A refused SHARD_END checkpoint is logged as such."""
        with caplog.at_level(logging.ERROR, logger="consumer.checkpoint"):
            assert not keeper.checkpoint_shard_end(FakeCheckpointer("InvalidStateException"))
        assert "checkpoint at SHARD_END refused" in caplog.records[0].getMessage()

    def test_other_exceptions_propagate(self, keeper: CheckpointKeeper) -> None:
        """Anything but a CheckpointError is not the keeper's to handle."""

        class Exploding:
            def checkpoint(self, *_: Any) -> Any:
                raise OSError("pipe closed")

        keeper.delivered(at(1), 1)
        with pytest.raises(OSError, match="pipe closed"):
            keeper.checkpoint(Exploding())
