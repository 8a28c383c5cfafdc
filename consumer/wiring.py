"""Production wiring: the one place that turns :class:`~consumer.config.Settings` into parts.

Each stage takes plain values or a small value object of its own (the mapping its
:class:`~consumer.mapping.MappingRules`, the dead-letter sinks a
:class:`~consumer.deadletter.DeadLetterTarget`, AWS clients an
:class:`~consumer.aws.AwsAccess`), never the settings: so a stage is built and tested
without a properties file, and a new setting touches the table and this module only.
The functions below make those values; the commands (``preview``, ``check``, ``run``,
``redrive``) call them too, so every command builds its parts the same way.
Per-shard parts come from factories, called once the shard id is known.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

from consumer import aws, health, logs
from consumer.checkpoint import CheckpointKeeper
from consumer.config import Settings
from consumer.deadletter import DeadLetterSink, build_sink
from consumer.delivery import Delivery
from consumer.exits import ExitStatus
from consumer.kinesis_sink import KinesisSink
from consumer.mapping import Mapper, MappingRules
from consumer.metrics import ShardMetrics
from consumer.processor import RecordProcessor
from consumer.progress import WorkerProgress
from consumer.retry import RetryPolicy
from consumer.sender import Sender, Transport
from consumer.telemetry import ShardTelemetry

log = logging.getLogger(__name__)

# A shard process whose daemon is gone must not go on retrying as an orphan: nothing
# it delivers could be checkpointed. Checked at least this often while waiting.
ORPHAN_CHECK_SECONDS = 1.0


def orphan_aware_sleep(
    parent_pid: int,
    *,
    getppid: Callable[[], int] = os.getppid,
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[[float], None]:
    """A ``sleep`` that ends the process if the daemon (``parent_pid``) has exited."""

    def wait(seconds: float) -> None:
        remaining = seconds
        while True:
            if getppid() != parent_pid:
                log.warning("the KCL daemon is gone; exiting without checkpointing")
                raise SystemExit(ExitStatus.DAEMON_GONE)  # the next lease owner re-reads
            if remaining <= 0:
                return
            step = min(remaining, ORPHAN_CHECK_SECONDS)
            sleep(step)
            remaining -= step

    return wait


def mapping_rules(settings: Settings) -> MappingRules:
    """What the mapper reads of the settings."""
    return MappingRules(
        stream_name=settings.stream_name,
        event_key=settings.event_key,
        property_mappings=settings.property_mappings,
        distinct_id_key=settings.distinct_id_key,
        missing_distinct_id=settings.missing_distinct_id,
        fallback_distinct_id=settings.fallback_distinct_id,
        timestamp_key=settings.timestamp_key,
        include_all_properties=settings.include_all_properties,
    )


def aws_access(settings: Settings) -> aws.AwsAccess:
    """Where the daemon's AWS services are, and its static keys if any."""
    return aws.AwsAccess(
        region=settings.region,
        kinesis_endpoint=settings.kinesis_endpoint,
        dynamodb_endpoint=settings.dynamodb_endpoint,
        access_key_id=settings.aws_access_key_id,
        secret_access_key=settings.aws_secret_access_key,
    )


def dead_letter_sink(settings: Settings) -> DeadLetterSink:
    """The sink ``deadLetter`` names; a stream sink's client uses the daemon's AWS access."""
    access = aws_access(settings)

    def kinesis_sink(stream: str) -> DeadLetterSink:
        return KinesisSink(aws.client(access, "kinesis"), stream)

    return build_sink(settings.dead_letter, kinesis_sink)


def delivery_factory(
    settings: Settings,
    sink: DeadLetterSink,
    *,
    transport: Transport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[[str, str], Delivery]:
    """``delivery(stream, shard_id)``: a shard's Delivery, all sharing one Sender and ``sink``.

    One Sender is one HTTP session for the whole process. ``transport`` is for tests; a
    shard process's ``sleep`` is :func:`orphan_aware_sleep` (see :func:`build_processor`).
    """
    policy = RetryPolicy()
    sender = Sender(
        host=settings.posthog_host,
        api_key=settings.api_key,
        historical_migration=settings.historical_migration,
        timeout=settings.timeout_seconds,
        transport=transport,
    )

    def delivery(stream: str, shard_id: str) -> Delivery:
        return Delivery(
            sender=sender,
            sink=sink,
            policy=policy,
            stream=stream,
            shard_id=shard_id,
            max_events=settings.batch_max_events,
            max_bytes=settings.batch_max_bytes,
            sleep=sleep,
        )

    return delivery


def shard_telemetry(settings: Settings, shard_id: str) -> ShardTelemetry:
    """Metrics, health state and progress line of one shard process (see consumer.telemetry).

    EMF lines go to stderr only when the log is JSON: they are for CloudWatch, which
    reads the JSON log stream; on a terminal they would only be noise.
    """
    folder = health.state_dir(settings.application_name)
    json_log = logs.resolve_format(os.environ, sys.stderr) == "json"
    metrics = ShardMetrics(
        application=settings.application_name,
        worker=os.environ.get(logs.WORKER_ID_ENV, logs.UNKNOWN),
        shard=shard_id,
        write=_write_line if json_log else _drop,
    )
    return ShardTelemetry(
        metrics,
        health.StateFile(folder, shard_id),
        WorkerProgress(folder, shard_id),
        logging.getLogger("consumer.progress").info,
    )


def _write_line(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _drop(_line: str) -> None:
    pass


def build_processor(
    settings: Settings,
    transport: Transport | None = None,
    sleep: Callable[[float], None] | None = None,
    *,
    telemetry: bool = False,
) -> RecordProcessor:
    """Return a processor whose per-shard parts share one HTTP session and one sink.

    ``transport`` and ``sleep`` are for tests: no real HTTP, no real waits.
    ``telemetry``: metrics, the health state file and the progress line (a shard
    process started by the daemon; tests that do not look at them leave them out).
    """
    sleep = sleep or orphan_aware_sleep(os.getppid())
    deliveries = delivery_factory(
        settings, dead_letter_sink(settings), transport=transport, sleep=sleep
    )
    rules = mapping_rules(settings)

    def mapper(shard_id: str) -> Mapper:
        return Mapper(rules, shard_id)

    def delivery(shard_id: str) -> Delivery:
        return deliveries(settings.stream_name, shard_id)

    def keeper(shard_id: str) -> CheckpointKeeper:
        return CheckpointKeeper(
            shard_id=shard_id,
            every_records=settings.checkpoint_interval_records,
            every_seconds=settings.checkpoint_interval_seconds,
            policy=RetryPolicy(),
            sleep=sleep,
        )

    def shard_parts(shard_id: str) -> ShardTelemetry:
        return shard_telemetry(settings, shard_id)

    return RecordProcessor(
        stream=settings.stream_name,
        mapper=mapper,
        delivery=delivery,
        keeper=keeper,
        telemetry=shard_parts if telemetry else None,
    )
