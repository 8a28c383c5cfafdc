"""The leader-lock watchdog releases only a lock that stopped being renewed."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from consumer.leader import LeaderLockWatchdog, coordinator_table


class FakeTable:
    """A DynamoDB client holding one lock item; delete honours the version condition."""

    def __init__(self, version: str = "v1", lease_millis: str = "120000") -> None:
        self.item: dict[str, Any] | None = {
            "key": {"S": "Leader"},
            "ownerName": {"S": "worker-a"},
            "recordVersionNumber": {"S": version},
            "leaseDuration": {"S": lease_millis},
        }
        self.deletes = 0

    def get_item(self, **_: Any) -> dict[str, Any]:
        return {"Item": self.item} if self.item else {}

    def delete_item(self, **kwargs: Any) -> None:
        assert self.item is not None
        if kwargs["ExpressionAttributeValues"][":version"] != self.item["recordVersionNumber"]:
            raise ClientError({"Error": {"Code": "ConditionalCheckFailedException"}}, "DeleteItem")
        self.deletes += 1
        self.item = None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_stale_lock_is_released_after_its_lease() -> None:
    """Unchanged for the item's own lease duration: deleted, once."""
    table, clock = FakeTable(), Clock()
    watchdog = LeaderLockWatchdog("t", table, clock=clock)
    assert not watchdog.check()  # first sight starts the clock
    clock.now = 119.0
    assert not watchdog.check()  # not yet a full lease
    clock.now = 121.0
    assert watchdog.check()
    assert table.deletes == 1


def test_renewed_lock_is_left_alone() -> None:
    """A changing recordVersionNumber means a live leader."""
    table, clock = FakeTable(), Clock()
    watchdog = LeaderLockWatchdog("t", table, clock=clock)
    for step in range(1, 10):
        assert table.item is not None
        table.item["recordVersionNumber"] = {"S": f"v{step}"}
        clock.now = step * 60.0
        assert not watchdog.check()
    assert table.deletes == 0


def test_renewal_racing_the_delete_wins() -> None:
    """If the owner renews between our read and our delete, the condition keeps its lock."""
    table, clock = FakeTable(), Clock()
    watchdog = LeaderLockWatchdog("t", table, stale_after=10, clock=clock)
    watchdog.check()
    clock.now = 11.0
    original_get = table.get_item

    def get_then_renew(**kwargs: Any) -> dict[str, Any]:
        answer = original_get(**kwargs)
        table.item = {**answer["Item"], "recordVersionNumber": {"S": "v2"}}
        return answer

    table.get_item = get_then_renew  # type: ignore[method-assign]
    assert not watchdog.check()
    assert table.item is not None


def test_table_name() -> None:
    """KCL 3's default CoordinatorState table, unless the properties name another."""
    assert coordinator_table({}, "app") == "app-CoordinatorState"
    assert coordinator_table({"coordinatorStateTableName": "custom"}, "app") == "custom"
