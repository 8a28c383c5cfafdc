"""The two processors ours is compared with, as shard processes speaking the same protocol.

    python -m scripts.bench.alternatives per-record|posthog-python

Both are amazon-kclpy v3 processors reading the same settings file as ours (from
``KINESIS_POSTHOG_PROPERTIES``, the key from ``POSTHOG_API_KEY``) and mapping each record
with our :class:`~consumer.mapping.Mapper`, so they send the same events; they differ
only in how the events reach PostHog:

* ``per-record``: one ``POST /capture/`` per event on a keep-alive ``requests`` session,
  checkpointing after the last record of each ``processRecords`` call was answered 200;
* ``posthog-python``: each event handed to posthog-python's ``Posthog.capture`` (its
  defaults: batches of 100, no gzip, one sender thread), then ``flush()`` before the
  checkpoint at the end of each call. Its queue is made large enough to hold a whole
  call, or it would drop events.
"""

from __future__ import annotations

import base64
import logging
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import requests
from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor as kcl_processor

from consumer import config, wiring
from consumer.errors import RecordError
from consumer.mapping import Mapper
from consumer.record import KinesisRecord

log = logging.getLogger(__name__)

# posthog-python drops events once its queue holds max_queue_size (default 10,000); a
# processRecords call may hold up to KCL's maxRecords (10,000) and the queue drains
# while it fills, so twice that never drops.
POSTHOG_QUEUE_SIZE = 20_000
HTTP_OK = 200


class _Base(kcl_processor.RecordProcessorBase):  # type: ignore[misc]
    """Maps each record with our mapper, hands its event to :meth:`send`, checkpoints per call."""

    def __init__(self, settings: config.Settings) -> None:
        """Bind the settings; the mapper is made once the shard is known."""
        self.settings = settings
        self.mapper = Mapper(wiring.mapping_rules(settings), "?")

    def initialize(self, initialize_input: Any) -> None:
        """Map for this shard."""
        self.mapper = Mapper(wiring.mapping_rules(self.settings), initialize_input.shard_id)

    def process_records(self, process_records_input: Any) -> None:
        """Send every record's event, flush, then checkpoint the last record."""
        last = None
        for raw in process_records_input.records:
            record = KinesisRecord(
                data=base64.b64decode(raw.data),
                partition_key=raw.partition_key,
                sequence_number=raw.sequence_number,
                sub_sequence_number=int(raw.sub_sequence_number or 0),
                arrival_millis=int(raw.timestamp_millis),
            )
            try:
                self.send(self.mapper.map(record).payload)
            except RecordError:
                log.warning("record %s not mappable", record.sequence_number)
            last = record
        self.flush()
        if last is not None:
            process_records_input.checkpointer.checkpoint(
                last.sequence_number, last.sub_sequence_number
            )

    def send(self, payload: bytes) -> None:
        """Deliver (or hand over) one event."""
        raise NotImplementedError

    def flush(self) -> None:
        """Return once everything sent so far was delivered (or handed over, for posthog-python)."""

    def lease_lost(self, lease_lost_input: Any) -> None:
        """Nothing to do."""

    def shard_ended(self, shard_ended_input: Any) -> None:
        """Checkpoint the end of the shard."""
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        """Nothing to do: every call checkpointed what it sent."""


class PerRecordProcessor(_Base):
    """One POST per event, each answered before the next."""

    def __init__(self, settings: config.Settings) -> None:
        """One keep-alive session to PostHog's single-event endpoint."""
        super().__init__(settings)
        self._session = requests.Session()
        self._url = settings.posthog_host.rstrip("/") + "/capture/"
        # {"api_key":"...", + the event's own fields
        self._head = orjson.dumps({"api_key": settings.api_key})[:-1] + b","

    def send(self, payload: bytes) -> None:
        """POST one event; anything but 200 ends the process."""
        body = self._head + payload[1:]
        answer = self._session.post(
            self._url, data=body, headers={"Content-Type": "application/json"}, timeout=30
        )
        if answer.status_code != HTTP_OK:
            raise SystemExit(f"PostHog answered {answer.status_code}")


class PosthogPythonProcessor(_Base):
    """posthog-python's client, flushed before each checkpoint."""

    def __init__(self, settings: config.Settings) -> None:
        """posthog-python's client, with a queue that holds a whole call."""
        from posthog import Posthog

        super().__init__(settings)
        self._client = Posthog(
            settings.api_key,
            host=settings.posthog_host,
            max_queue_size=POSTHOG_QUEUE_SIZE,
            disable_geoip=True,
        )

    def send(self, payload: bytes) -> None:
        """Hand the event to posthog-python (it sends it in the background)."""
        event = orjson.loads(payload)
        self._client.capture(
            event["event"],
            distinct_id=event["distinct_id"],
            properties=event["properties"],
            timestamp=event["timestamp"],
            uuid=event["uuid"],
        )

    def flush(self) -> None:
        """Wait until posthog-python's queue is empty."""
        self._client.flush(timeout_seconds=None)


KINDS = {"per-record": PerRecordProcessor, "posthog-python": PosthogPythonProcessor}


def main() -> int:
    """Run the processor named on the command line over stdin/stdout."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    settings = config.load(Path(os.environ[config.PROPERTIES_ENV]))
    kcl.KCLProcess(KINDS[sys.argv[1]](settings)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
