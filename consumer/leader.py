"""Release a KCL leader lock whose owner died, so lease assignment never stalls for good.

KCL 3 assigns leases only on the worker holding the leader lock (an item ``Leader`` in
the ``<applicationName>-CoordinatorState`` table, kept by amazon-dynamodb-lock-client).
When the leader dies without releasing it (``kill -9``, OOM, a failed shutdown), no
other worker ever takes it over, and shards whose leases expire are never read again
(awslabs/amazon-kinesis-client issue 1803; the reported fix is deleting the item).

Every worker runs this watchdog beside the daemon. It applies the lock client's own
rule: a lock whose ``recordVersionNumber`` has not changed for its ``leaseDuration``
belongs to a dead owner. Such a lock is deleted with a condition on that version, so a
live leader's renewed lock is never touched; KCL then elects a new leader within seconds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consumer.aws import AwsAccess, client

log = logging.getLogger(__name__)

LEADER_KEY = "Leader"
HASH_KEY_ATTRIBUTE = "key"
# KCL 3's default leader lease duration (milliseconds); used if the item lacks one.
DEFAULT_LEASE_MILLIS = 120_000
POLL_SECONDS = 5.0


@dataclass
class _Observation:
    version: str
    since: float


class LeaderLockWatchdog:
    """Watches the leader lock item and deletes it once it has been stale long enough."""

    def __init__(
        self,
        table: str,
        client: Any,
        *,
        stale_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``stale_after`` overrides the lock's own lease duration (seconds), for tests."""
        self._table = table
        self._client = client
        self._stale_after = stale_after
        self._clock = clock
        self._seen: _Observation | None = None

    def check(self) -> bool:
        """Look once; return True if a dead leader's lock was released."""
        item = self._read()
        if item is None or item.get("isReleased", {}).get("BOOL", False):
            self._seen = None
            return False
        version = item.get("recordVersionNumber", {}).get("S", "")
        now = self._clock()
        if self._seen is None or self._seen.version != version:
            self._seen = _Observation(version, now)
            return False
        lease_millis = int(item.get("leaseDuration", {}).get("S", DEFAULT_LEASE_MILLIS))
        stale_after = self._stale_after if self._stale_after is not None else lease_millis / 1000
        stale_for = now - self._seen.since
        if stale_for < stale_after or not self._release(version):
            return False
        log.warning(
            "released the KCL leader lock of worker %s: not renewed for %.0fs (owner gone); "
            "a live worker becomes leader next",
            item.get("ownerName", {}).get("S", "?"),
            stale_for,
        )
        self._seen = None
        return True

    def _read(self) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            item: dict[str, Any] | None = self._client.get_item(
                TableName=self._table,
                Key={HASH_KEY_ATTRIBUTE: {"S": LEADER_KEY}},
                ConsistentRead=True,
            ).get("Item")
        except (BotoCoreError, ClientError) as exc:
            # A missing table (first start) lands here too; nothing to release yet.
            log.debug("leader lock check failed: %s", exc)
            return None
        return item

    def _release(self, version: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.delete_item(
                TableName=self._table,
                Key={HASH_KEY_ATTRIBUTE: {"S": LEADER_KEY}},
                ConditionExpression="recordVersionNumber = :version",
                ExpressionAttributeValues={":version": {"S": version}},
            )
        except ClientError as exc:
            # ConditionalCheckFailed: renewed or released meanwhile, so the owner is alive.
            log.debug("leader lock not released: %s", exc)
            return False
        except BotoCoreError as exc:
            log.warning("could not release the stale leader lock: %s", exc)
            return False
        return True


def coordinator_table(properties: dict[str, str], application_name: str) -> str:
    """The CoordinatorState table KCL 3 uses for this application."""
    return properties.get("coordinatorStateTableName") or f"{application_name}-CoordinatorState"


def watch(access: AwsAccess, table: str, parent_pid: int, stale_after: float | None) -> int:
    """Run until ``parent_pid`` (the daemon) is gone, using DynamoDB where ``access`` says."""
    watchdog = LeaderLockWatchdog(table, client(access, "dynamodb"), stale_after=stale_after)
    while os.getppid() == parent_pid:
        watchdog.check()
        time.sleep(POLL_SECONDS)
    return 0
