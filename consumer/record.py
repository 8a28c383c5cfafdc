"""The values that flow between the stages: a Kinesis record in, a mapped event out.

And the two together on their way to PostHog (:class:`Pending`).

They live apart from any stage so that every stage (mapping, delivery, dead letters,
the KCL glue) can name them without importing another stage.

Nothing changes them once built, but they are not ``frozen`` dataclasses: those set each
field through ``object.__setattr__`` and cost three times as much to build (0.6 µs for a
record), and these are built for every record, three per record.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class KinesisRecord:
    """The parts of a Kinesis record we use, independent of amazon-kclpy's classes."""

    data: bytes
    partition_key: str
    sequence_number: str
    sub_sequence_number: int
    arrival_millis: int


@dataclass(slots=True)
class MappedEvent:
    """One event ready for a batch: its uuid and its compact JSON encoding."""

    uuid: str
    payload: bytes


@dataclass(slots=True)
class Pending:
    """An event on its way, with the record it came from (for dead-lettering)."""

    record: KinesisRecord
    event: MappedEvent

    @property
    def payload(self) -> bytes:
        """The event's encoded JSON."""
        return self.event.payload
