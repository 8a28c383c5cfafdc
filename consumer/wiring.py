"""Build one shard's processor from :class:`~consumer.config.Settings` (production wiring)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from consumer.checkpoint import CheckpointKeeper
from consumer.config import Settings
from consumer.deadletter import build_sink
from consumer.delivery import Delivery
from consumer.exits import ExitStatus
from consumer.processor import RecordProcessor
from consumer.retry import RetryPolicy
from consumer.sender import Sender, Transport

log = logging.getLogger(__name__)

# A shard process whose daemon is gone must not go on retrying as an orphan: nothing
# it delivers could be checkpointed. Checked at least this often while waiting.
ORPHAN_CHECK_SECONDS = 1.0
EXIT_DAEMON_GONE = ExitStatus.DAEMON_GONE  # the records are re-read by the next lease owner


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
                raise SystemExit(EXIT_DAEMON_GONE)
            if remaining <= 0:
                return
            step = min(remaining, ORPHAN_CHECK_SECONDS)
            sleep(step)
            remaining -= step

    return wait


def build_processor(
    settings: Settings,
    transport: Transport | None = None,
    sleep: Callable[[float], None] | None = None,
) -> RecordProcessor:
    """Return a processor whose per-shard parts share one HTTP session and one sink.

    ``transport`` and ``sleep`` are for tests: no real HTTP, no real waits.
    """
    policy = RetryPolicy()
    sleep = sleep or orphan_aware_sleep(os.getppid())
    sender = Sender(
        host=settings.posthog_host,
        api_key=settings.api_key,
        historical_migration=settings.historical_migration,
        timeout=settings.timeout_seconds,
        transport=transport,
    )
    sink = build_sink(settings)

    def delivery(shard_id: str) -> Delivery:
        return Delivery(
            sender=sender,
            sink=sink,
            policy=policy,
            stream=settings.stream_name,
            shard_id=shard_id,
            max_events=settings.batch_max_events,
            max_bytes=settings.batch_max_bytes,
            sleep=sleep,
        )

    def keeper(shard_id: str) -> CheckpointKeeper:
        return CheckpointKeeper(
            shard_id=shard_id,
            every_records=settings.checkpoint_interval_records,
            every_seconds=settings.checkpoint_interval_seconds,
            policy=policy,
            sleep=sleep,
        )

    return RecordProcessor(settings, delivery, keeper)
