"""Build one shard's processor from :class:`~consumer.config.Settings` (production wiring)."""

from __future__ import annotations

from consumer.checkpoint import CheckpointKeeper
from consumer.config import Settings
from consumer.deadletter import build_sink
from consumer.delivery import Delivery
from consumer.processor import RecordProcessor
from consumer.retry import RetryPolicy
from consumer.sender import Sender, Transport


def build_processor(settings: Settings, transport: Transport | None = None) -> RecordProcessor:
    """Return a processor whose per-shard parts share one HTTP session and one sink."""
    policy = RetryPolicy()
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
        )

    def keeper(shard_id: str) -> CheckpointKeeper:
        return CheckpointKeeper(
            shard_id=shard_id,
            every_records=settings.checkpoint_interval_records,
            every_seconds=settings.checkpoint_interval_seconds,
            policy=policy,
        )

    return RecordProcessor(settings, delivery, keeper)
