"""Many workers on real parts: leases shared, workers killed (the leader too), a stop sent
to a whole process group, and the stream resharded under them, while records flow.

One KCL application with its own stream and stand-in (the module's ``fleet``); workers
are named by their KCL ``workerId``. The tests run in file order and build on each other
(three workers, then the survivors), as a fleet lives. Each prints its figures (``-s``).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from local import harness
from local.emulators import Emulators
from tests.fleet import Fleet, running_fleet
from tests.support import FIRST_START_TIMEOUT, Put, elapsed_since, wait_delivered

pytestmark = pytest.mark.e2e

SHARDS = 4
# A worker joining a running fleet is given leases by the leader's next rebalancing, which
# balances measured throughput (KCL 3's worker-utilization-aware assignment).
SHARE_TIMEOUT = 150.0
# Not the leader: lease expiry (failoverTimeMillis, 5 s here) + one assignment round
# (leaseAssignmentIntervalMillis, twice that) + the shard's start. The README's target: 60 s.
FAILOVER_TIMEOUT = 60.0
# The leader: its lock is taken over once unchanged for its 120 s lease, checked every 30 s
# by the survivors (not tunable through multilang); then the same as above.
LEADER_FAILOVER_TIMEOUT = 120.0 + 30.0 + FAILOVER_TIMEOUT
DELIVERY_TIMEOUT = 180.0


@pytest.fixture(scope="module", name="fleet")
def _fleet(tmp_path_factory: pytest.TempPathFactory, emulators: Emulators) -> Iterator[Fleet]:
    with running_fleet(
        tmp_path_factory.mktemp("scale"),
        emulators,
        application="kinesis-posthog-scale",
        stream="scale-events",
        shards=SHARDS,
        first_record=10_000_000,
    ) as fleet:
        yield fleet


def ensure_workers(fleet: Fleet, count: int) -> list[str]:
    """At least ``count`` live workers, each owning a lease (starting new ones if needed)."""
    names = fleet.alive()
    number = len(fleet.workers)
    while len(names) < count:
        number += 1
        name = f"w{number}"
        fleet.start(name)
        names.append(name)
    history = fleet.wait_for_owners(set(names), FIRST_START_TIMEOUT + SHARE_TIMEOUT)
    assert all(fleet.reading(name) for name in names), "\n".join(history)
    return names


def assert_replays_identical(fleet: Fleet, since: int = 0) -> Counter[str]:
    """Every uuid delivered twice was the same bytes both times; returns deliveries per uuid."""
    events = fleet.standin.events(since)
    # Records keep flowing: the raw list, fetched second, may be longer; both only grow,
    # in the same order.
    raw = fleet.standin.raw_events(since)[: len(events)]
    assert len(raw) == len(events)
    originals: dict[str, str] = {}
    for event, text in zip(events, raw, strict=True):
        assert originals.setdefault(event["uuid"], text) == text, "a replay is byte-identical"
    return Counter(event["uuid"] for event in events)


def test_workers_share_the_leases(fleet: Fleet) -> None:
    """Two, then three workers of one application on 4 shards while records flow: every
    worker ends up owning leases, every record arrives, and any duplicate is a replay."""
    start = time.monotonic()
    for name in ("w1", "w2"):
        fleet.start(name)
    two = fleet.wait_for_owners({"w1", "w2"}, FIRST_START_TIMEOUT + SHARE_TIMEOUT)
    print("\n[scale] two workers, lease owners over time:\n  " + "\n  ".join(two))
    assert fleet.reading("w1"), "both workers read shards"
    assert fleet.reading("w2"), "both workers read shards"
    joined = time.monotonic()
    fleet.start("w3")
    three = fleet.wait_for_owners({"w1", "w2", "w3"}, FIRST_START_TIMEOUT + SHARE_TIMEOUT)
    print("[scale] w3 joins, lease owners over time:\n  " + "\n  ".join(three))
    print(f"[scale] w3 read a shard {elapsed_since(joined)} after it started")
    assert all(fleet.reading(name) for name in ("w1", "w2", "w3")), "all three read shards"
    puts = fleet.traffic.puts()
    wait_delivered(fleet.standin, puts, DELIVERY_TIMEOUT)
    deliveries = assert_replays_identical(fleet)
    replayed = sum(1 for count in deliveries.values() if count > 1)
    print(
        f"[scale] {len(puts)} records, {sum(deliveries.values())} deliveries, "
        f"{replayed} replayed, in {elapsed_since(start)}"
    )
    assert replayed == 0, "leases moved to a joining worker by graceful hand-off: no replay"


def kill_and_time_failover(fleet: Fleet, victim: str, timeout: float) -> dict[str, float]:
    """kill -9 ``victim``; return seconds from the kill to each orphaned shard's first event."""
    orphaned = {shard for shard, owner in fleet.owners().items() if owner == victim}
    assert orphaned, f"{victim} owns leases"
    since = fleet.standin.stats()["events"]
    killed = time.monotonic()
    fleet.workers[victim].kill()
    first = fleet.first_events_after(since, orphaned, timeout, killed)
    print(
        f"\n[scale] kill -9 {victim}: "
        + ", ".join(
            f"{shard[-4:]} resumed after {seconds:.1f}s" for shard, seconds in sorted(first.items())
        )
        + f"; owners now {Counter(fleet.owners().values())}"
    )
    assert set(first) == orphaned, f"shards {sorted(orphaned - set(first))} never resumed"
    return first


def test_a_dead_worker_s_shards_move_to_the_survivors(fleet: Fleet) -> None:
    """kill -9 a worker that is not the leader: its shards resume on the others within a minute."""
    names = ensure_workers(fleet, 3)
    leader = fleet.leader()
    victim = next(name for name in names if name != leader and fleet.reading(name))
    kill_and_time_failover(fleet, victim, FAILOVER_TIMEOUT)
    wait_delivered(fleet.standin, fleet.traffic.puts(), DELIVERY_TIMEOUT)
    assert_replays_identical(fleet)


def test_a_dead_leader_s_shards_move_after_its_lock_expires(fleet: Fleet) -> None:
    """kill -9 the worker holding KCL's leader lock: a survivor takes the lock over once it
    has seen it unrenewed for its 120 s lease, then assigns the orphaned shards."""
    ensure_workers(fleet, 2)
    leader = fleet.leader()
    assert leader is not None
    assert fleet.reading(leader), f"the leader {leader} reads a shard, which its death orphans"
    kill_and_time_failover(fleet, leader, LEADER_FAILOVER_TIMEOUT)
    print(f"[scale] new leader: {fleet.leader()}")
    wait_delivered(fleet.standin, fleet.traffic.puts(), DELIVERY_TIMEOUT)
    assert_replays_identical(fleet)


def test_sigterm_to_a_whole_process_group_replays_nothing(fleet: Fleet) -> None:
    """systemd's stop (SIGTERM to every process of the group) is as graceful as ECS's: the
    shard processes wait for the daemon, it checkpoints, and the survivors send nothing twice."""
    names = ensure_workers(fleet, 2)
    victim = names[-1]
    wait_delivered(fleet.standin, fleet.traffic.puts(), DELIVERY_TIMEOUT)
    since = fleet.standin.stats()["events"]
    delivered_before = {event["uuid"] for event in fleet.standin.events()}
    stopping = time.monotonic()
    status = fleet.workers[victim].stop(group=True)
    print(
        f"\n[scale] SIGTERM to {victim}'s process group: exit {status} in {elapsed_since(stopping)}"
    )
    after_stop = fleet.traffic.puts()
    wait_delivered(fleet.standin, after_stop, DELIVERY_TIMEOUT)
    time.sleep(3)  # anything re-sent would arrive now
    events = fleet.standin.events(since)
    again = [event["uuid"] for event in events if event["uuid"] in delivered_before]
    twice = [uuid for uuid, count in Counter(e["uuid"] for e in events).items() if count > 1]
    print(f"[scale] {len(events)} events since the stop; {len(again)} re-sent, {len(twice)} twice")
    assert not again, "nothing delivered before the stop is delivered again"
    assert not twice, "nothing is delivered twice after the stop"
    log = fleet.log(victim)
    assert "shutdown requested; checkpointed" in log
    assert "the KCL daemon is gone" not in log


def shard_ranges(fleet: Fleet) -> list[dict[str, Any]]:
    """Open shards, in hash-key order."""
    shards = fleet.kinesis.list_shards(StreamName=fleet.stream)["Shards"]
    open_shards = [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
    return sorted(open_shards, key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))


def wait_stream_active(fleet: Fleet) -> None:
    def active() -> bool:
        summary = fleet.kinesis.describe_stream_summary(StreamName=fleet.stream)
        return bool(summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE")

    assert harness.wait_until(active, 60, 0.2)


def assert_order_per_key(puts: list[Put], events: list[dict[str, Any]]) -> int:
    """For each partition key, first deliveries come in put order; returns keys checked."""
    rank = {put.uuid: index for index, put in enumerate(puts)}
    key_of = {put.uuid: put.partition_key for put in puts}
    last: dict[str, int] = {}
    seen: set[str] = set()
    for event in events:
        uuid = event["uuid"]
        if uuid not in rank or uuid in seen:
            continue
        seen.add(uuid)
        key = key_of[uuid]
        assert rank[uuid] > last.get(key, -1), f"partition key {key}: an event arrived out of order"
        last[key] = rank[uuid]
    return len(last)


def test_resharding_while_records_flow(fleet: Fleet) -> None:
    """Split a shard, then merge two adjacent ones, while records flow: nothing is lost,
    each partition key's events arrive in put order across the parent -> child boundary,
    and the shard processes of the closed shards end after shardEnded."""
    ensure_workers(fleet, 1)
    since = fleet.standin.stats()["events"]
    first_put = len(fleet.traffic.puts())
    start = time.monotonic()
    before = {shard["ShardId"] for shard in shard_ranges(fleet)}
    parent = shard_ranges(fleet)[0]
    low, high = (int(parent["HashKeyRange"][end]) for end in ("StartingHashKey", "EndingHashKey"))
    fleet.kinesis.split_shard(
        StreamName=fleet.stream,
        ShardToSplit=parent["ShardId"],
        NewStartingHashKey=str((low + high) // 2),
    )
    wait_stream_active(fleet)
    time.sleep(5)  # records flow into the children
    left, right = shard_ranges(fleet)[-2:]
    fleet.kinesis.merge_shards(
        StreamName=fleet.stream,
        ShardToMerge=left["ShardId"],
        AdjacentShardToMerge=right["ShardId"],
    )
    wait_stream_active(fleet)
    time.sleep(5)
    closed = before - {shard["ShardId"] for shard in shard_ranges(fleet)}
    assert len(closed) == 3, "one split parent and two merge parents"
    puts = fleet.traffic.puts()[first_put:]
    wait_delivered(fleet.standin, puts, DELIVERY_TIMEOUT, since)
    print(
        f"\n[scale] split {parent['ShardId'][-4:]}, merged {left['ShardId'][-4:]}+"
        f"{right['ShardId'][-4:]}: {len(puts)} records arrived in {elapsed_since(start)}"
    )
    keys = assert_order_per_key(puts, fleet.standin.events(since))
    assert_replays_identical(fleet, since)
    logs = "".join(fleet.log(name) for name in fleet.workers)
    for shard in closed:
        ended = re.search(rf"shard {shard}: shard ended and checkpointed", logs)
        exited = re.search(rf"shard {shard}: the daemon closed stdin; exiting", logs)
        assert ended, f"{shard} reached its end and checkpointed it"
        assert exited, f"{shard}'s process exited after shardEnded"
    print(f"[scale] order kept for {keys} partition keys; {len(closed)} closed shards ended")
