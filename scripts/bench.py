"""Throughput of one shard process's Python path, printed as figures (not asserted).

    .venv/bin/python scripts/bench.py [--records 50000]

Stages, each on the same synthetic records (nested JSON, ~300 bytes):

1. decode floor: base64 + json.loads, the least any processor must do per record;
2. map + batch + gzip: everything we do before the network;
3. full delivery over real HTTP to the capture stand-in (loopback, separate process);
4. the alternative: one POST per record to the stand-in's /capture/ (on a sample).

Peak RSS of this process is printed last. Figures vary with the machine's load.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import requests

from consumer import config, wiring
from consumer.batching import cut, encode_body
from consumer.deadletter import FileSink
from consumer.delivery import Delivery, Pending
from consumer.mapping import Mapper
from consumer.record import KinesisRecord
from consumer.retry import RetryPolicy
from consumer.sender import Sender

# The capture stand-in is repository tooling (local/), not installed with the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from local.harness import StandIn

PER_RECORD_SAMPLE = 2000


def make_records(count: int) -> list[dict[str, object]]:
    """Records as the daemon hands them over (base64 data)."""
    records = []
    for n in range(count):
        document = {
            "properties": {
                "eventName": f"event-{n % 7}",
                "userId": f"user-{n % 1000}",
                "foo": n,
                "ok": True,
            },
            "context": {
                "page": {"path": f"/p/{n % 50}", "title": "A page title"},
                "tags": ["a", "b", n],
            },
            "meta": {"ts": 1_700_000_000 + n},
        }
        records.append(
            {
                "data": base64.b64encode(json.dumps(document).encode()).decode(),
                "partitionKey": f"user-{n % 1000}",
                "sequenceNumber": str(49_000_000_000_000_000_000 + n),
                "subSequenceNumber": 0,
                "approximateArrivalTimestamp": 1_700_000_000_000 + n,
            }
        )
    return records


def rate(label: str, count: int, seconds: float) -> None:
    """Print one figure."""
    print(f"{label:<44} {count / seconds:>12,.0f} records/s  ({seconds:.2f}s for {count:,})")


def main() -> None:
    """Run every stage and print its figure."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000)
    count = parser.parse_args().records
    raw = make_records(count)
    settings = config.from_mapping(
        {
            "applicationName": "bench",
            "streamName": "bench",
            "eventKey": "properties.eventName",
            "additionalPropertyMappings": "properties.userId:distinct_id, properties.foo:foo, context.page.path:path",
            "timestampKey": "meta.ts",
            "posthogApiKey": "phc_bench",
        }
    )

    start = time.perf_counter()
    for item in raw:
        json.loads(base64.b64decode(str(item["data"])))
    rate("1. decode floor (base64 + json.loads)", count, time.perf_counter() - start)

    start = time.perf_counter()
    mapper = Mapper(wiring.mapping_rules(settings), "shardId-000000000000")
    records = [
        KinesisRecord(
            base64.b64decode(str(item["data"])),
            str(item["partitionKey"]),
            str(item["sequenceNumber"]),
            0,
            int(str(item["approximateArrivalTimestamp"])),
        )
        for item in raw
    ]
    pending = [Pending(record, mapper.map(record)) for record in records]
    for batch in cut(
        pending, max_events=settings.batch_max_events, max_bytes=settings.batch_max_bytes
    ):
        gzip.compress(
            encode_body("phc_bench", [p.payload for p in batch], historical_migration=False), 1
        )
    rate("2. map + batch + gzip (no network)", count, time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as scratch:
        standin = StandIn(Path(scratch) / "standin.log", api_key="phc_bench")
        try:
            sender = Sender(
                host=standin.url, api_key="phc_bench", historical_migration=False, timeout=30
            )
            delivery = Delivery(
                sender=sender,
                sink=FileSink(Path(scratch) / "dlq.jsonl"),
                policy=RetryPolicy(),
                stream="bench",
                shard_id="shardId-000000000000",
                max_events=settings.batch_max_events,
                max_bytes=settings.batch_max_bytes,
            )
            start = time.perf_counter()
            delivery.deliver([Pending(record, mapper.map(record)) for record in records])
            rate(
                "3. map + deliver over HTTP (stand-in, batched)", count, time.perf_counter() - start
            )

            session = requests.Session()
            sample = [json.loads(p.payload) for p in pending[:PER_RECORD_SAMPLE]]
            start = time.perf_counter()
            for event in sample:
                session.post(
                    f"{standin.url}/capture/", json={"api_key": "phc_bench", **event}, timeout=30
                )
            rate("4. alternative: one POST per record", len(sample), time.perf_counter() - start)
        finally:
            standin.close()

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
