"""Delivery returns only when every event is accepted or dead-lettered."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from consumer.deadletter import DeadLetter
from consumer.delivery import MAX_REFUSALS_IN_A_ROW, Delivery, Pending
from consumer.errors import (
    AuthenticationError,
    DeadLetterError,
    PermanentDeliveryError,
    RefusalStreakError,
)
from consumer.mapping import Mapper
from consumer.retry import RetryPolicy
from consumer.sender import Sender
from tests.support import InlineExecutor, RecordFactory, RulesFactory, ScriptedTransport


class MemorySink:
    def __init__(self, failures: int = 0) -> None:
        self.entries: list[DeadLetter] = []
        self.failures = failures

    def write(self, entries: Sequence[DeadLetter]) -> None:
        if self.failures:
            self.failures -= 1
            raise DeadLetterError("disk full")
        self.entries.extend(entries)


PendingFactory = Callable[..., list[Pending]]


@pytest.fixture(name="make_pending")
def _make_pending(make_rules: RulesFactory, make_record: RecordFactory) -> PendingFactory:
    """``count`` events named e<i>, from records with sequence numbers 1000 + i."""
    mapper = Mapper(make_rules(), "shardId-0")

    def make(count: int, first: int = 0) -> list[Pending]:
        records = [
            make_record(
                {"properties": {"eventName": f"e{i}"}},
                sequence=str(1000 + i),
                partition_key=f"u{i}",
            )
            for i in range(first, first + count)
        ]
        return [Pending(record, mapper.map(record)) for record in records]

    return make


NamedFactory = Callable[[list[str]], list[Pending]]


@pytest.fixture(name="make_named")
def _make_named(make_rules: RulesFactory, make_record: RecordFactory) -> NamedFactory:
    """One event per name, from records with sequence numbers 1000 + position."""
    mapper = Mapper(make_rules(), "shardId-0")

    def make(names: list[str]) -> list[Pending]:
        records = [
            make_record({"properties": {"eventName": name}}, sequence=str(1000 + i))
            for i, name in enumerate(names)
        ]
        return [Pending(record, mapper.map(record)) for record in records]

    return make


@pytest.fixture(name="pending")
def _pending(make_pending: PendingFactory) -> list[Pending]:
    return make_pending(10)


def delivery(
    transport: ScriptedTransport, sink: MemorySink, sleeps: list[float], **kw: Any
) -> Delivery:
    sender = Sender(
        host="http://ph",
        api_key="phc_k",
        historical_migration=False,
        timeout=1,
        transport=transport,
    )
    return Delivery(
        sender=sender,
        sink=sink,
        policy=RetryPolicy(jitter=0.0),
        stream="events",
        shard_id="shardId-0",
        max_events=kw.get("max_events", 100),
        max_bytes=kw.get("max_bytes", 10**6),
        sleep=sleeps.append,
        sending=kw.get("sending"),
    )


def names(transport: ScriptedTransport) -> list[list[str]]:
    return [[e["event"] for e in r["body"]["batch"]] for r in transport.requests]


def names_of_accepted(transport: ScriptedTransport) -> list[list[str]]:
    """Event names of each request the transport's judge answered 200."""
    assert transport.judge is not None
    return [
        batch
        for batch, request in zip(names(transport), transport.requests, strict=True)
        if transport.judge(request["body"]["batch"]) == 200
    ]


class TestRetries:
    @pytest.mark.parametrize(
        "failure",
        [
            503,  # PostHog's transient error
            500,  # any 5xx
            429,  # rate limited
            408,  # request timeout
            "timeout",  # no answer in time (outcome unknown)
        ],
    )
    def test_retried_until_accepted(
        self, pending: list[Pending], sleeps: list[float], failure: Any
    ) -> None:
        """The same batch is resent, with growing waits, until PostHog says 200."""
        transport = ScriptedTransport(failure, failure, failure, 200)
        subject = delivery(transport, MemorySink(), sleeps)
        subject.deliver(pending)
        assert len(transport.requests) == 4
        assert all(r["body"] == transport.requests[0]["body"] for r in transport.requests)
        assert sleeps == [0.5, 1.0, 2.0]
        assert subject.stats.sent == 10

    def test_retry_after_honoured(self, pending: list[Pending], sleeps: list[float]) -> None:
        """A 429's Retry-After sets the minimum wait."""
        transport = ScriptedTransport((429, {"Retry-After": "7"}), 200)
        delivery(transport, MemorySink(), sleeps).deliver(pending)
        assert sleeps == [7.0]


class TestRefusals:
    def test_400_bisects_to_the_bad_event(
        self, pending: list[Pending], sleeps: list[float]
    ) -> None:
        """Only the event PostHog refuses is dead-lettered, with PostHog's answer; the rest arrive."""
        sink = MemorySink()

        def judge(batch: list[dict[str, Any]]) -> int:
            return 400 if any(e["event"] == "e6" for e in batch) else 200

        transport = ScriptedTransport(judge=judge)
        subject = delivery(transport, sink, sleeps)
        subject.deliver(pending)
        accepted = {name for batch in names(transport) if "e6" not in batch for name in batch}
        assert accepted == {f"e{i}" for i in range(10)} - {"e6"}
        assert [(d.reason, d.sequence_number) for d in sink.entries] == [
            ("rejected_by_posthog", "1006")
        ]
        assert "400" in sink.entries[0].detail
        assert subject.stats.sent == 9
        assert sleeps == []

    def test_413_splits(self, pending: list[Pending], sleeps: list[float]) -> None:
        """A 413 halves the batch until the parts are accepted."""
        transport = ScriptedTransport(judge=lambda batch: 413 if len(batch) > 3 else 200)
        subject = delivery(transport, MemorySink(), sleeps)
        subject.deliver(pending)
        accepted = [batch for batch in names(transport) if len(batch) <= 3]
        assert sorted(name for batch in accepted for name in batch) == sorted(
            f"e{i}" for i in range(10)
        )
        assert subject.stats.sent == 10

    @pytest.mark.parametrize(
        ("status", "error"),
        [
            (401, AuthenticationError),  # wrong key: a configuration error
            (403, AuthenticationError),  # forbidden
            (404, PermanentDeliveryError),  # wrong host
        ],
    )
    def test_configuration_errors_raise_and_drop_nothing(
        self, pending: list[Pending], sleeps: list[float], status: int, error: type[Exception]
    ) -> None:
        """401/403/404 raise without dead-lettering: nothing is given up on."""
        sink = MemorySink()
        with pytest.raises(error):
            delivery(ScriptedTransport(status), sink, sleeps).deliver(pending)
        assert sink.entries == []


def refuse_names(*bad: str) -> Callable[[list[dict[str, Any]]], int]:
    """A PostHog that refuses (400) any batch holding one of the ``bad`` event names."""
    return lambda batch: 400 if any(e["event"] in bad for e in batch) else 200


class Host:
    """A PostHog that works until ``breaks`` is set, then answers 400 to everything."""

    def __init__(self, *bad: str) -> None:
        self.broken = False
        self.judge = refuse_names(*bad)

    def __call__(self, batch: list[dict[str, Any]]) -> int:
        return 400 if self.broken else self.judge(batch)


# The bound the README promises, written out so that a larger streak fails here.
DOCUMENTED_STREAK = 10


def request_bound(events: int, *, rest_batches: int = 0) -> int:
    """Requests bisecting ``events`` down to the streak of single refusals may cost, plus one
    per batch of the rest of the call sent whole (a fresh process has nothing to probe with)."""
    return 2 * DOCUMENTED_STREAK + math.ceil(math.log2(max(events, 2))) + 1 + rest_batches


def dead_sequences(sink: MemorySink) -> list[str]:
    return [d.sequence_number for d in sink.entries]


class TestRefusalRule:
    """Refusals are dead-lettered only while PostHog is seen accepting; else delivery stops."""

    @pytest.mark.parametrize(
        ("count", "max_events", "rests"),
        [
            # one big batch: bisection stops after the streak, then the rest goes once, whole
            (1000, 1000, 1),
            (1000, 100, 1),  # several batches: the rest is every event not yet sent, re-cut
            (1000, 1, 1),  # one event per request: the rest is one request per event
            (10, 100, 0),  # exactly the streak in one call: no rest to try
        ],
    )
    def test_host_refusing_everything_from_the_start_stops_bounded(
        self,
        make_pending: PendingFactory,
        sleeps: list[float],
        count: int,
        max_events: int,
        rests: int,
    ) -> None:
        """A host that never accepted anything and refuses all, the rest of the call included:
        stop, dead-letter nothing, within the documented number of requests."""
        transport = ScriptedTransport(judge=lambda _: 400)
        sink = MemorySink()
        subject = delivery(transport, sink, sleeps, max_events=max_events)
        with pytest.raises(RefusalStreakError, match="has accepted none since"):
            subject.deliver(make_pending(count))
        assert sink.entries == []
        rest_batches = math.ceil((count - DOCUMENTED_STREAK) / max_events)
        assert len(transport.requests) <= request_bound(
            min(count, max_events), rest_batches=rest_batches
        )
        assert subject.stats.rests_sent_whole == rests
        assert subject.stats.probes == 0
        assert subject.stats.sent == 0

    @pytest.mark.parametrize(
        "max_events",
        [
            100,  # all eleven in one batch: the good event is the last untried half
            4,  # several batches: the good event is in a batch not yet tried
            1,  # one event per request
        ],
    )
    def test_fresh_process_with_a_run_of_refused_events_then_a_good_one_goes_on(
        self, make_named: NamedFactory, sleeps: list[float], max_events: int
    ) -> None:
        """The reviewer's reproduction: a fresh process (nothing accepted yet) is fed ten events
        PostHog refuses, then one it accepts, in one call. The good event is sent with the rest
        of the call, PostHog accepts it, so the ten are dead-lettered and nothing raises; a
        restarted process re-reading the same records does the same, so the shard never stalls."""
        names = ["bad"] * MAX_REFUSALS_IN_A_ROW + ["ok"]
        for _restart in range(2):
            transport = ScriptedTransport(judge=refuse_names("bad"))
            sink = MemorySink()
            subject = delivery(transport, sink, sleeps, max_events=max_events)
            subject.deliver(make_named(names))
            assert dead_sequences(sink) == [str(1000 + i) for i in range(MAX_REFUSALS_IN_A_ROW)]
            assert all(d.reason == "rejected_by_posthog" for d in sink.entries)
            assert subject.stats.sent == 1
            assert subject.stats.rests_sent_whole == 1
            assert subject.stats.probes == 0

    def test_rest_sent_whole_is_bisected_where_refused(
        self, make_named: NamedFactory, sleeps: list[float]
    ) -> None:
        """Once PostHog accepts part of the rest, the parts of it that it refused are bisected as
        usual: their bad events dead-lettered, their good ones delivered."""
        names = ["bad"] * MAX_REFUSALS_IN_A_ROW + ["ok", "ok", "bad", "ok"] + ["ok"] * 4
        transport = ScriptedTransport(judge=refuse_names("bad"))
        sink = MemorySink()
        subject = delivery(transport, sink, sleeps, max_events=4)
        subject.deliver(make_named(names))
        assert dead_sequences(sink) == [str(1000 + i) for i in range(MAX_REFUSALS_IN_A_ROW)] + [
            "1012"
        ]
        assert subject.stats.sent == names.count("ok")
        delivered = [n for batch in names_of_accepted(transport) for n in batch]
        assert sorted(delivered) == ["ok"] * names.count("ok")
        sent = [tuple(e["uuid"] for e in r["body"]["batch"]) for r in transport.requests]
        assert len(set(sent)) == len(sent), "a refused part of the rest is bisected, not resent"

    def test_fresh_process_whose_rest_is_all_refused_stops(
        self, make_named: NamedFactory, sleeps: list[float]
    ) -> None:
        """Ten refused alone, then the rest of the call refused whole as well: nothing shows
        PostHog judging, so the process stops and nothing of the call is dead-lettered."""
        names = ["bad"] * MAX_REFUSALS_IN_A_ROW + ["bad", "ok"] * 3
        transport = ScriptedTransport(judge=refuse_names("bad"))
        sink = MemorySink()
        subject = delivery(transport, sink, sleeps, max_events=2)
        with pytest.raises(RefusalStreakError, match="nor any of the 3 batches of the rest"):
            subject.deliver(make_named(names))
        assert sink.entries == []
        assert subject.stats.sent == 0
        assert subject.stats.rests_sent_whole == 1

    def test_a_second_streak_after_the_rest_was_accepted_is_probed(
        self, make_named: NamedFactory, sleeps: list[float]
    ) -> None:
        """After the rest gave a known-good event, another run of refusals in the same call is
        checked with a probe, as for any process that has had an acceptance."""
        names = ["bad"] * MAX_REFUSALS_IN_A_ROW + ["ok"] + ["bad"] * MAX_REFUSALS_IN_A_ROW
        transport = ScriptedTransport(judge=refuse_names("bad"))
        sink = MemorySink()
        subject = delivery(transport, sink, sleeps, max_events=1)
        subject.deliver(make_named(names))
        assert len(sink.entries) == 2 * MAX_REFUSALS_IN_A_ROW
        assert (subject.stats.rests_sent_whole, subject.stats.probes) == (1, 1)
        assert transport.requests[-1]["body"]["batch"][0]["event"] == "ok"

    @pytest.mark.parametrize(
        "count",
        [
            9,  # one short of the streak
            1,  # a lone event
        ],
    )
    def test_fresh_process_trusts_fewer_refusals_than_the_streak(
        self, make_pending: PendingFactory, sleeps: list[float], count: int
    ) -> None:
        """Nothing accepted yet, nothing to probe with: fewer refusals in a row than the streak
        are dead-lettered, so a shard with a few records PostHog refuses does not stop its
        worker on every restart."""
        transport = ScriptedTransport(judge=lambda _: 400)
        sink = MemorySink()
        subject = delivery(transport, sink, sleeps, max_events=100)
        subject.deliver(make_pending(count))
        assert len(sink.entries) == count
        assert subject.stats.probes == 0

    @pytest.mark.parametrize(
        "count",
        [
            1000,  # the streak trips mid-call: one probe, then stop
            3,  # the call ends with refusals only: one probe, then stop
            1,  # a lone event
        ],
    )
    def test_host_breaking_after_acceptances_stops_after_one_probe(
        self, make_pending: PendingFactory, sleeps: list[float], count: int
    ) -> None:
        """A host that accepted earlier calls, then 400s everything: the probe is refused too."""
        host = Host()
        transport = ScriptedTransport(judge=host)
        sink = MemorySink()
        subject = delivery(transport, sink, sleeps, max_events=1000)
        subject.deliver(make_pending(5))
        accepted = {e["uuid"] for e in transport.requests[0]["body"]["batch"]}
        host.broken = True
        before = len(transport.requests)
        with pytest.raises(RefusalStreakError, match="now refuses an event it accepted before"):
            subject.deliver(make_pending(count, 100))
        assert sink.entries == []
        assert subject.stats.probes == 1
        probe = transport.requests[-1]["body"]["batch"]
        assert len(probe) == 1
        assert probe[0]["uuid"] in accepted, "the probe is an event PostHog accepted before"
        assert len(transport.requests) - before <= request_bound(count) + 1

    def test_a_few_bad_events_among_good_ones_are_dead_lettered(
        self, make_pending: PendingFactory, sleeps: list[float]
    ) -> None:
        """Bad events spread through good ones: each dead-lettered, no probe needed."""
        transport = ScriptedTransport(judge=refuse_names("e3", "e14", "e27"))
        sink = MemorySink()
        subject = delivery(transport, sink, sleeps, max_events=40)
        subject.deliver(make_pending(30))
        assert dead_sequences(sink) == ["1003", "1014", "1027"]
        assert all(d.reason == "rejected_by_posthog" for d in sink.entries)
        assert subject.stats.sent == 27
        assert subject.stats.probes == 0

    def test_lone_bad_event_is_dead_lettered_once_a_probe_is_accepted(
        self, make_pending: PendingFactory, sleeps: list[float]
    ) -> None:
        """A call holding only a refused event: PostHog still accepts a known event, so the
        refusal is PostHog's judgement and the event is dead-lettered."""
        transport = ScriptedTransport(judge=refuse_names("e7"))
        sink = MemorySink()
        subject = delivery(transport, sink, sleeps)
        subject.deliver(make_pending(3))
        accepted = {e["uuid"] for e in transport.requests[0]["body"]["batch"]}
        subject.deliver(make_pending(1, 7))
        assert dead_sequences(sink) == ["1007"]
        assert subject.stats.probes == 1
        assert transport.requests[-1]["body"]["batch"][0]["uuid"] in accepted

    @pytest.mark.parametrize(
        ("names", "expected"),
        [
            # a run one short of the streak, an acceptance, another such run: no probe
            (
                ["ok"]
                + ["bad"] * (MAX_REFUSALS_IN_A_ROW - 1)
                + ["ok"]
                + ["bad"] * (MAX_REFUSALS_IN_A_ROW - 1),
                (0, 2 * (MAX_REFUSALS_IN_A_ROW - 1)),
            ),
            # a full streak: one probe, accepted, so the run is dead-lettered
            (["ok"] + ["bad"] * MAX_REFUSALS_IN_A_ROW + ["ok"], (1, MAX_REFUSALS_IN_A_ROW)),
            # two full streaks: the count restarts after the accepted probe
            (
                ["ok"] + ["bad"] * (2 * MAX_REFUSALS_IN_A_ROW) + ["ok"],
                (2, 2 * MAX_REFUSALS_IN_A_ROW),
            ),
        ],
    )
    def test_the_count_restarts_on_every_acceptance(
        self,
        make_named: NamedFactory,
        sleeps: list[float],
        names: list[str],
        expected: tuple[int, int],
    ) -> None:
        """Only refusals with nothing accepted between count towards the streak."""
        transport = ScriptedTransport(judge=refuse_names("bad"))
        sink = MemorySink()
        subject = delivery(transport, sink, sleeps, max_events=1)
        subject.deliver(make_named(names))
        assert (subject.stats.probes, len(sink.entries)) == expected
        assert subject.stats.sent == names.count("ok")

    def test_first_part_delivered_then_host_breaks_dead_letters_nothing_of_the_call(
        self, make_pending: PendingFactory, sleeps: list[float]
    ) -> None:
        """The first batch is accepted, the second holds one bad event, then the host breaks:
        the stop comes before the end of the call, so even the bad event is not dead-lettered
        (nothing of the call is checkpointed; the replay delivers the first batch again)."""
        host = Host("e15")

        def judge(batch: list[dict[str, Any]]) -> int:
            if any(int(e["event"][1:]) >= 20 for e in batch):
                host.broken = True
            return host(batch)

        transport = ScriptedTransport(judge=judge)
        sink = MemorySink()
        subject = delivery(transport, sink, sleeps, max_events=10)
        with pytest.raises(RefusalStreakError):
            subject.deliver(make_pending(40))
        assert sink.entries == []
        assert subject.stats.sent == 19  # e0-e9, then e10-e19 but e15
        assert subject.stats.probes == 1

    def test_key_refused_after_a_refusal_dead_letters_nothing(
        self, make_pending: PendingFactory, sleeps: list[float]
    ) -> None:
        """A refused event, then 401 in the same call: the 401 stops it, nothing dead-lettered."""

        def judge(batch: list[dict[str, Any]]) -> int:
            if any(e["event"] == "e2" for e in batch):
                return 400
            return 401 if any(e["event"] == "e8" for e in batch) else 200

        sink = MemorySink()
        subject = delivery(ScriptedTransport(judge=judge), sink, sleeps, max_events=5)
        with pytest.raises(AuthenticationError):
            subject.deliver(make_pending(10))
        assert sink.entries == []


def test_batches_are_cut_by_count(pending: list[Pending], sleeps: list[float]) -> None:
    """max_events bounds each request."""
    transport = ScriptedTransport()
    delivery(transport, MemorySink(), sleeps, max_events=4).deliver(pending)
    assert [len(n) for n in names(transport)] == [4, 4, 2]


def test_dead_letter_retries_until_written(pending: list[Pending], sleeps: list[float]) -> None:
    """A failing dead-letter sink is retried with backoff, never skipped."""
    sink = MemorySink(failures=2)
    subject = delivery(ScriptedTransport(), sink, sleeps)
    entry = DeadLetter.of(
        pending[0].record, stream="events", shard_id="shardId-0", reason="not_json", detail="x"
    )
    subject.dead_letter([entry])
    assert sink.entries == [entry]
    assert sleeps == [0.5, 1.0]
    assert subject.stats.dead_lettered["not_json"] == 1


class Counted:
    """Events handed out one by one, noting how many were taken when each request was sent."""

    def __init__(self, items: list[Pending], transport: ScriptedTransport) -> None:
        self.items = items
        self.transport = transport
        self.taken = 0
        self.taken_at_request: list[int] = []

    def __iter__(self) -> Iterator[Pending]:
        for item in self.items:
            self.taken += 1
            yield item

    def note(self) -> int:
        """Note what was taken; answer 200."""
        self.taken_at_request.append(self.taken)
        return 200


def test_events_are_read_batch_by_batch(make_pending: PendingFactory, sleeps: list[float]) -> None:
    """Each batch is sent once read (with the event after it), before the rest is read:
    a caller mapping records on demand holds a batch or two of events, not all of them.
    (Requests run as submitted here; with the sender thread the next batch is read
    meanwhile, see below.)"""
    transport = ScriptedTransport()
    events = Counted(make_pending(10), transport)
    transport.judge = lambda _batch: events.note()
    sending = InlineExecutor()
    delivery(transport, MemorySink(), sleeps, max_events=4, sending=sending).deliver(events)
    assert events.taken_at_request == [5, 9, 10]
    assert [len(n) for n in names(transport)] == [4, 4, 2]


def test_the_next_batch_is_made_while_one_is_in_flight(
    make_pending: PendingFactory, sleeps: list[float]
) -> None:
    """With the sender thread, PostHog's first request waits until the next batch is read
    (a delivery that read nothing meanwhile would leave it waiting, and fail here)."""
    transport = ScriptedTransport()
    events = Counted(make_pending(10), transport)
    next_batch_read = threading.Event()
    seen: list[bool] = []

    def judge(_batch: list[dict[str, Any]]) -> int:
        if not seen:  # the first request: items 0-3 sent, 4 read to close the batch
            seen.append(next_batch_read.wait(timeout=10))
        return 200

    def taking() -> Iterator[Pending]:
        for number, item in enumerate(events, start=1):
            if number == 9:  # the event after the second batch: that batch is made
                next_batch_read.set()
            yield item

    transport.judge = judge
    delivery(transport, MemorySink(), sleeps, max_events=4).deliver(taking())
    assert seen == [True]
    assert [len(n) for n in names(transport)] == [4, 4, 2]


def test_a_refusal_midway_through_events_read_on_demand(
    make_named: NamedFactory, sleeps: list[float]
) -> None:
    """A refused batch in the middle of a stream: bisected, the rest sent, as with a list."""
    names_ = [f"e{i}" for i in range(9)]
    names_[4] = "bad"

    def judge(batch: list[dict[str, Any]]) -> int:
        return 400 if any(e["event"] == "bad" for e in batch) else 200

    from_list, from_stream = ScriptedTransport(judge=judge), ScriptedTransport(judge=judge)
    sinks = MemorySink(), MemorySink()
    delivery(from_list, sinks[0], sleeps, max_events=3).deliver(make_named(names_))
    delivery(from_stream, sinks[1], sleeps, max_events=3).deliver(iter(make_named(names_)))
    assert names(from_stream) == names(from_list)
    assert names_of_accepted(from_stream) == [
        ["e0", "e1", "e2"],
        ["e3"],
        ["e5"],
        ["e6", "e7", "e8"],
    ]
    assert [e.reason for e in sinks[1].entries] == ["rejected_by_posthog"]
    assert sinks[1].entries == sinks[0].entries
