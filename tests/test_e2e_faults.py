"""End to end on real parts, under faults: PostHog down, slow, refusing, a wrong key, a
lease taken away. Shares the session's ``pipeline`` with ``test_e2e.py``; each test
gets a reading worker from ``pipeline.running_worker()``, so it also runs alone (``-k``).
"""

from __future__ import annotations

import math
import re
import time

import boto3
import pytest

from consumer.exits import ExitStatus
from local import harness
from local.emulators import LOCAL_ENV, Emulators
from tests.support import (
    ECS_STOP_TIMEOUT_SECONDS,
    OUTAGE_PHASE_SECONDS,
    RESTART_TIMEOUT,
    SHARDS,
    STREAM,
    Pipeline,
    elapsed_since,
    good,
    group_alive,
    put_all,
    read_dead_letters,
    wait_delivered,
)

pytestmark = pytest.mark.e2e


def test_posthog_outage_waits_and_loses_nothing(pipeline: Pipeline) -> None:
    """PostHog answers 503, then refuses connections, then hangs past the client timeout;
    when it is back every record arrives, and the request rate while down stays low."""
    pipeline.running_worker()
    before = pipeline.standin.stats()["events"]
    first_request = len(pipeline.standin.requests())
    pipeline.standin.control(status=503)
    new = put_all(pipeline.kinesis, STREAM, [good(n) for n in range(4000, 4100)])
    harness.wait_until(
        lambda: any(r["status"] == 503 for r in pipeline.standin.requests()[first_request:]),
        RESTART_TIMEOUT,
    )
    time.sleep(OUTAGE_PHASE_SECONDS)
    refused = [r for r in pipeline.standin.requests()[first_request:] if r["status"] == 503]
    pipeline.standin.close()  # connection refused
    time.sleep(OUTAGE_PHASE_SECONDS)
    pipeline.standin.restart()
    pipeline.standin.control(
        reject_events=["poison"], hang_seconds=4
    )  # past the 2 s client timeout
    # Backoff has grown by now; hold the hang until at least one attempt has timed out in it.
    harness.wait_until(lambda: len(pipeline.standin.requests()) > 0, RESTART_TIMEOUT)
    hung = len(pipeline.standin.requests())
    pipeline.standin.control(reject_events=["poison"])
    wait_delivered(pipeline.standin, new, RESTART_TIMEOUT, before)
    span = refused[-1]["time"] - refused[0]["time"] if len(refused) > 1 else 0.0
    print(
        f"\n[e2e] outage: {len(refused)} requests answered 503 over {span:.1f}s "
        f"({len(refused) / max(span, 1.0):.2f}/s for all shards), {hung} requests during the hang"
    )
    assert hung > 0, "the hang phase was exercised"
    # Backoff 0.5 s doubling to 30 s, per shard: far below one request per second per shard.
    assert len(refused) <= SHARDS * 8


def test_sigterm_while_posthog_is_down_exits_in_time_and_loses_nothing(pipeline: Pipeline) -> None:
    """ECS stops the task while a batch cannot be delivered: the worker exits within ECS's
    default 30 s stop timeout, nothing stuck is checkpointed, and the next worker delivers it."""
    worker = pipeline.running_worker()
    before = pipeline.standin.stats()["events"]
    pipeline.standin.control(reject_events=["poison"], status=503)
    first_request = len(pipeline.standin.requests())
    new = put_all(pipeline.kinesis, STREAM, [good(n) for n in range(4500, 4540)])
    harness.wait_until(
        lambda: any(r["status"] == 503 for r in pipeline.standin.requests()[first_request:]),
        RESTART_TIMEOUT,
    )
    start = time.monotonic()
    status = worker.stop(timeout=60)
    stopped_in = time.monotonic() - start
    # Shard processes and the watchdog notice the daemon is gone within a few seconds.
    group_empty = harness.wait_until(lambda: not group_alive(worker), 10)
    print(
        f"\n[e2e] SIGTERM with PostHog down: worker exited in {stopped_in:.1f}s (status {status})"
    )
    assert stopped_in < ECS_STOP_TIMEOUT_SECONDS
    assert group_empty, "no shard process outlives its daemon"
    pipeline.standin.control(reject_events=["poison"])
    pipeline.start()
    wait_delivered(pipeline.standin, new, RESTART_TIMEOUT, before)


def test_retry_after_is_honoured(pipeline: Pipeline) -> None:
    """A 429 with Retry-After: 3 delays that shard's next attempt by at least 3 s."""
    pipeline.running_worker()
    first_request = len(pipeline.standin.requests())
    pipeline.standin.control(reject_events=["poison"], status=429, remaining=1, retry_after="3")
    new = put_all(pipeline.kinesis, STREAM, [("one-key", *good(n)[1:]) for n in range(5000, 5005)])
    wait_delivered(pipeline.standin, new, RESTART_TIMEOUT)
    requests = pipeline.standin.requests()[first_request:]
    limited = next(r for r in requests if r["status"] == 429)
    retry = next(
        r for r in requests if r["time"] > limited["time"] and r["shards"] == limited["shards"]
    )
    waited = retry["time"] - limited["time"]
    print(f"\n[e2e] retry after a 429 with Retry-After: 3 came {waited:.2f}s later")
    assert waited >= 2.95


def test_wrong_key_stops_a_worker_before_it_reads(pipeline: Pipeline) -> None:
    """PostHog's capture answers 200 to a well-formed but wrong key and drops the events
    later, so the key is proven at start-up: a second worker started with a wrong key exits
    78 with one line before its daemon starts, while the running worker goes on delivering."""
    pipeline.running_worker()
    before = pipeline.standin.stats()
    new = put_all(pipeline.kinesis, STREAM, [good(n) for n in range(3000, 3020)])
    start = time.monotonic()
    wrong = harness.Worker.start(
        pipeline.properties,
        pipeline.workdir / "wrong-key.log",
        {"POSTHOG_API_KEY": "phc_wrong_key"},
    )
    status = wrong.process.wait(RESTART_TIMEOUT)
    print(f"\n[e2e] wrong key: worker exited with {status} after {elapsed_since(start)}")
    assert status == ExitStatus.CONFIG
    log = (pipeline.workdir / "wrong-key.log").read_text()
    assert "POSTHOG_API_KEY" in log
    assert "MultiLangDaemon" not in log, "the daemon never started"
    assert "phc_wrong_key" not in log, "the key is not echoed"
    wait_delivered(pipeline.standin, new, RESTART_TIMEOUT, before["events"])
    assert pipeline.standin.stats().get("dropped", {}) == before.get("dropped", {})


def test_host_refusing_every_event_stops_without_dead_lettering(pipeline: Pipeline) -> None:
    """A proxy or wrong path that answers 400 to everything: the worker stops (78) after a
    bounded number of requests, dead-letters nothing, and a fixed host delivers every record."""
    worker = pipeline.running_worker()
    dead_before = len(read_dead_letters(pipeline.dead_letter))
    first_request = len(pipeline.standin.requests())
    pipeline.standin.control(reject_all=True)
    # One partition key: one shard reads all 40 in one call, as a backlog would arrive.
    new = put_all(
        pipeline.kinesis, STREAM, [("refused-key", *good(n)[1:]) for n in range(3500, 3540)]
    )
    start = time.monotonic()
    status = worker.process.wait(RESTART_TIMEOUT)
    requests = pipeline.standin.requests()[first_request:]
    print(
        f"\n[e2e] every event refused: worker exited {status} after {elapsed_since(start)}, "
        f"{len(requests)} requests"
    )
    assert status != 0  # the shard process exits 78; the daemon then exits 1
    log = (pipeline.workdir / f"worker-{pipeline.starts}.log").read_text()
    assert "stopping without checkpointing. Check posthogHost" in log, "it stopped with 78"
    # 2 x 10 refusals + log2(40) bisection steps + 1, and a probe or the rest of the call.
    assert len(requests) <= 2 * 10 + math.ceil(math.log2(len(new))) + 1 + 1
    assert len(read_dead_letters(pipeline.dead_letter)) == dead_before, "nothing dead-lettered"
    pipeline.standin.control(reject_events=["poison"])
    pipeline.start()
    wait_delivered(pipeline.standin, new, RESTART_TIMEOUT)


def test_lease_loss_mid_batch_never_checkpoints(pipeline: Pipeline, emulators: Emulators) -> None:
    """Another owner takes the lease while our shard process is stuck mid-batch: when the
    batch finally goes through, the loser's checkpoint is refused and the lease's
    checkpoint stays where it was; the records then arrive under the next owner."""
    pipeline.running_worker()
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=emulators.dynamodb_endpoint,
        region_name=LOCAL_ENV["AWS_REGION"],
        aws_access_key_id=LOCAL_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    table = "kinesis-posthog-e2e"
    before = pipeline.standin.stats()["events"]
    pipeline.standin.control(
        reject_events=["poison"], hang_seconds=5
    )  # every attempt times out (2 s)
    new = put_all(
        pipeline.kinesis, STREAM, [("lease-key", *good(n)[1:]) for n in range(6000, 6020)]
    )
    shard = new[0].shard_id
    key = {"leaseKey": {"S": shard}}
    time.sleep(4)  # the shard process is now retrying its batch
    checkpoint_before = dynamodb.get_item(TableName=table, Key=key)["Item"]["checkpoint"]["S"]

    def steal() -> None:
        dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET leaseOwner = :thief ADD leaseCounter :one",
            ExpressionAttributeValues={":thief": {"S": "thief-worker"}, ":one": {"N": "1"}},
        )

    steal()
    deadline = time.monotonic() + 8  # the thief renews, as a live worker would
    while time.monotonic() < deadline:
        time.sleep(1)
        steal()
    pipeline.standin.control(reject_events=["poison"])  # the stuck batch now goes through
    log_file = pipeline.workdir / f"worker-{pipeline.starts}.log"
    refused = re.compile(rf"shard {shard}: (lease gone|checkpoint at \S+ refused)")
    deadline = time.monotonic() + 60
    while not refused.search(log_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.5)
        steal()
    checkpoint_after = dynamodb.get_item(TableName=table, Key=key)["Item"]["checkpoint"]["S"]
    match = refused.search(log_file.read_text())
    print(
        f"\n[e2e] lease stolen mid-batch: loser's checkpoint -> {match.group(0) if match else None!r}"
    )
    assert match is not None, "the loser tried to checkpoint after delivering, and was refused"
    assert checkpoint_after == checkpoint_before, "the lease's checkpoint did not move"
    # The thief stops renewing; the lease expires and is reassigned; nothing is missing.
    wait_delivered(pipeline.standin, new, RESTART_TIMEOUT, before)
