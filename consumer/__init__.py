"""kinesis-posthog: Kinesis records -> PostHog events, checkpointing only what PostHog accepted.

The data's path, one module each: :mod:`~consumer.mapping` (record -> event, the values
being :mod:`~consumer.record`'s), :mod:`~consumer.batching` (events -> request bodies),
:mod:`~consumer.sender` (HTTP to PostHog), :mod:`~consumer.delivery` with
:mod:`~consumer.retry` (until accepted or dead-lettered, :mod:`~consumer.deadletter`),
:mod:`~consumer.checkpoint`, glued to the KCL daemon by :mod:`~consumer.processor`.
Settings: :mod:`~consumer.config`, which only :mod:`~consumer.wiring` and the commands
read; they hand every part its own plain values.
"""

__version__ = "0.1.0"
