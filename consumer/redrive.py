"""``redrive``: dead letters mapped again with today's settings, delivered as a first delivery.

A dead letter holds its whole record (stream, shard, sequence and sub-sequence numbers,
partition key, arrival time, bytes), so the record is rebuilt exactly and mapped by a
:class:`~consumer.mapping.Mapper` for the dead letter's own shard: uuid and timestamp are
byte for byte a first delivery's, and PostHog collapses a second redrive with the first.
Delivery is the worker's (one Sender, the retry policy, batches, 413 split, 400 bisection),
after the same key check. What still fails is written as the worker writes it, to a new
destination; the source is only read. A dead letter of a stream other than ``streamName``
stops the command before its round is sent, unless other streams are allowed (then it is
its own stream's event). An entry without data (``too_large_to_dead_letter``) is written
on as it was; one that cannot be read (a line torn by a crash) is skipped and named.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from consumer import aws, config, preflight, settings_parsers, wiring
from consumer.batching import runs
from consumer.deadletter import DeadLetter, DeadLetterKind, DeadLetterTarget
from consumer.decoding import decode
from consumer.delivery import Delivery
from consumer.errors import (
    ConfigError,
    DependencyError,
    NotADeadLetterError,
    PermanentDeliveryError,
    RecordError,
)
from consumer.exits import ExitStatus
from consumer.kinesis_sink import TOO_LARGE_REASON
from consumer.mapping import Mapper, MappingRules
from consumer.record import Pending
from consumer.sender import Transport

log = logging.getLogger(__name__)

# Dead letters mapped and delivered per round, held in memory meanwhile (a record is up to
# 1 MiB, Kinesis's limit), so both bounds cap memory; a round holds many full batches.
ROUND_MAX_ENTRIES = 10_000
ROUND_MAX_BYTES = 64 * 1024 * 1024
# GetRecords returns at most 10,000 records and a shard serves 5 calls per second (AWS
# service limits): one call per 0.2 s keeps a redrive within them.
GET_RECORDS_MAX = 10_000
GET_RECORDS_PAUSE_SECONDS = 0.2
# The default destination: <source name>.redrive-20250102T030405Z.jsonl beside the source.
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
NEW_FILE_SUFFIX = ".jsonl"

# What a source yields: each entry's bytes, and where it was (for log lines).
Entries = Iterable[tuple[bytes, str]]


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter read back, and where it was (for log lines)."""

    entry: DeadLetter
    where: str


def _read_entry(raw: bytes) -> DeadLetter:
    """One entry as the sinks write it (:meth:`DeadLetter.to_json`, gzipped or not)."""
    try:
        document = decode(raw)
    except RecordError as exc:
        raise NotADeadLetterError(f"not a JSON object ({exc.reason})") from exc
    return DeadLetter.from_json(document, dataless_reason=TOO_LARGE_REASON)


# --- Where dead letters come from, and where what still fails goes ------------------------


def destination(
    source: DeadLetterTarget, to: str | None, stream_name: str, now: datetime
) -> DeadLetterTarget:
    """``--to`` (``deadLetter``'s syntax), else a new file beside the source; never the source.

    The new file is ``<name>.redrive-<UTC time><suffix>`` beside a file source, in the
    current folder for a stream; a name already taken gets ``-2``, ``-3``, ...
    """
    if to is not None:
        target = settings_parsers.dead_letter("--to", to)
    else:
        path = Path(source.location)
        folder, stem, suffix = path.parent, path.stem, path.suffix or NEW_FILE_SUFFIX
        if source.kind is DeadLetterKind.KINESIS:
            folder, stem, suffix = Path(), source.location, NEW_FILE_SUFFIX
        base = f"{stem}.redrive-{now.astimezone(UTC).strftime(STAMP_FORMAT)}"
        candidate, number = folder / f"{base}{suffix}", 1
        while candidate.exists():
            number += 1
            candidate = folder / f"{base}-{number}{suffix}"
        target = DeadLetterTarget(DeadLetterKind.FILE, str(candidate))
    shown = target.location if to is None else to
    if source.kind is target.kind and (
        source.location == target.location
        or Path(source.location).resolve() == Path(target.location).resolve()
    ):
        raise ConfigError("--to", shown, "a destination other than the source (--from)")
    if target.kind is DeadLetterKind.KINESIS and target.location == stream_name:
        raise ConfigError(
            "--to",
            shown,
            f"a stream other than the source stream {stream_name} (the worker would read "
            "these dead letters again as input)",
        )
    return target


def open_source(
    source: DeadLetterTarget,
    settings: config.Settings,
    *,
    until: datetime,
    sleep: Callable[[float], None],
) -> Entries:
    """The source's entries: a file opened now, a stream described now (its errors now)."""
    if source.kind is DeadLetterKind.FILE:
        path = Path(source.location)
        try:
            path.open("rb").close()  # read when the redrive starts, so its errors come now
        except OSError as exc:
            raise ConfigError("--from", str(path), f"a readable file ({exc.strerror})") from exc
        return _lines(path)
    log.info("%s", preflight.probe_dead_letter(replace(settings, dead_letter=source)))
    client = aws.client(wiring.aws_access(settings), "kinesis")
    return stream_entries(client, source.location, until=until, sleep=sleep)


def _lines(path: Path) -> Iterator[tuple[bytes, str]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield line, f"{path}:{number}"


def stream_entries(
    client: Any, stream: str, *, until: datetime, sleep: Callable[[float], None]
) -> Iterator[tuple[bytes, str]]:
    """Every shard of ``stream`` from TRIM_HORIZON to its current end, without checkpoints.

    A shard is read to its end (closed), to its tip (no records and ``MillisBehindLatest``
    0), or to a record that arrived at ``until`` or later (the next redrive's). AWS errors
    become a :class:`DependencyError` naming the stream.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        pages = client.get_paginator("list_shards").paginate(StreamName=stream)
        for shard in [shard["ShardId"] for page in pages for shard in page["Shards"]]:
            yield from _shard_entries(client, stream, shard, until=until, sleep=sleep)
    except (BotoCoreError, ClientError) as exc:
        raise DependencyError(f"dead-letter stream {stream}: {exc}") from exc


def _shard_entries(
    client: Any, stream: str, shard: str, *, until: datetime, sleep: Callable[[float], None]
) -> Iterator[tuple[bytes, str]]:
    iterator = client.get_shard_iterator(
        StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    while iterator:
        answer = client.get_records(ShardIterator=iterator, Limit=GET_RECORDS_MAX)
        for record in answer["Records"]:
            if record["ApproximateArrivalTimestamp"] >= until:
                return  # written after the redrive started
            yield record["Data"], f"kinesis:{stream}/{shard}/{record['SequenceNumber']}"
        if not answer["Records"] and answer.get("MillisBehindLatest", 0) == 0:
            return  # the shard's tip
        iterator = answer.get("NextShardIterator")  # None past a closed shard's end
        if iterator:
            sleep(GET_RECORDS_PAUSE_SECONDS)


# --- Redriving ------------------------------------------------------------------------------


class Redriver:
    """Maps and delivers rounds of dead letters, with a Mapper and a Delivery per (stream, shard).

    Per round and shard it does what a shard process does with one call's records: deliver
    what maps, then dead-letter what still fails (Delivery adds what PostHog refuses).
    """

    def __init__(
        self,
        rules: MappingRules,
        delivery: Callable[[str, str], Delivery],
        *,
        allow_other_streams: bool,
    ) -> None:
        """``delivery(stream, shard_id)`` builds a shard's (:func:`wiring.delivery_factory`)."""
        self._rules = rules
        self._delivery = delivery
        self._allow_other_streams = allow_other_streams
        self._shards: dict[tuple[str, str], tuple[Mapper, Delivery]] = {}
        self.read = 0
        self.skipped = 0

    def run(self, entries: Entries) -> None:
        """Redrive every entry; what delivery raises (PermanentDeliveryError) propagates."""
        letters_in = self._letters(entries)
        size: Callable[[Letter], int] = lambda letter: len(letter.entry.data_base64)  # noqa: E731
        for letters in runs(
            letters_in, max_count=ROUND_MAX_ENTRIES, max_bytes=ROUND_MAX_BYTES, size=size
        ):
            by_shard: dict[tuple[str, str], list[Letter]] = collections.defaultdict(list)
            for letter in letters:
                by_shard[letter.entry.stream, letter.entry.shard_id].append(letter)
            for (stream, shard_id), group in by_shard.items():
                self._redrive(stream, shard_id, group)

    def summary(self) -> dict[str, Any]:
        """Counts so far: read, delivered, still failing by reason, skipped."""
        failing: collections.Counter[str] = collections.Counter()
        for _, delivery in self._shards.values():
            failing.update(delivery.stats.dead_lettered)
        return {
            "read": self.read,
            "delivered": sum(delivery.stats.sent for _, delivery in self._shards.values()),
            "stillFailing": dict(sorted(failing.items())),
            "skipped": self.skipped,
        }

    def _letters(self, entries: Entries) -> Iterator[Letter]:
        for raw, where in entries:
            self.read += 1
            try:
                entry = _read_entry(raw)
            except NotADeadLetterError as exc:
                self.skipped += 1
                log.warning("%s: skipped, not a dead letter redrive can read: %s", where, exc)
                continue
            stream = entry.stream
            if stream != self._rules.stream_name and not self._allow_other_streams:
                raise ConfigError(
                    "streamName",
                    self._rules.stream_name,
                    f"the stream of the dead letters; {where} came from {stream!r} (pass "
                    "--allow-other-streams to redrive it as that stream's event, with its "
                    f"uuid); {self.summary()['delivered']} delivered before it",
                )
            yield Letter(entry, where)

    def _redrive(self, stream: str, shard_id: str, letters: list[Letter]) -> None:
        if (stream, shard_id) not in self._shards:
            rules = replace(self._rules, stream_name=stream)
            self._shards[stream, shard_id] = (
                Mapper(rules, shard_id),
                self._delivery(stream, shard_id),
            )
        mapper, delivery = self._shards[stream, shard_id]
        pending: list[Pending] = []
        still: list[DeadLetter] = []
        for letter in letters:
            record = letter.entry.record()
            if record is None:
                log.warning(
                    "%s: %s, no data to redrive (re-read %s/%s at %s within the stream's "
                    "retention); written on as it is",
                    letter.where,
                    TOO_LARGE_REASON,
                    stream,
                    shard_id,
                    letter.entry.sequence_number,
                )
                still.append(letter.entry)
                continue
            try:
                pending.append(Pending(record, mapper.map(record)))
            except RecordError as exc:
                still.append(
                    DeadLetter.of(
                        record,
                        stream=stream,
                        shard_id=shard_id,
                        reason=exc.reason,
                        detail=exc.detail,
                    )
                )
        delivery.deliver(pending)
        delivery.dead_letter(still)


def redrive(  # noqa: PLR0913 - the command's options, then the seams tests inject
    properties: Path,
    *,
    source: str,
    to: str | None = None,
    allow_other_streams: bool = False,
    out: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    transport: Transport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Redrive ``source``'s dead letters; print a JSON summary line; return the exit status.

    Raises :class:`ConfigError` (exit 78) for a wrong option or setting, a key PostHog does
    not know, or a dead letter of another stream (before its round is sent).
    """
    out = out or sys.stdout
    settings = config.load(properties, environ)
    kinds = tuple(f"{kind.value}:" for kind in DeadLetterKind)
    origin = settings_parsers.dead_letter(
        "--from", source if source.startswith(kinds) else f"file:{source}"
    )
    started = now()
    target = destination(origin, to, settings.stream_name, started)
    shown = f"{target.kind.value}:{target.location}"
    try:
        entries = open_source(origin, settings, until=started, sleep=sleep)
        preflight.require_known_key(settings, log.warning, transport=transport)
        # The worker's start-up check: a stream is described, a file created (empty).
        log.info("%s", preflight.probe_dead_letter(replace(settings, dead_letter=target)))
    except DependencyError as exc:
        log.critical("cannot redrive: %s", exc)
        return ExitStatus.UNAVAILABLE
    sink = wiring.dead_letter_sink(replace(settings, dead_letter=target))
    redriver = Redriver(
        wiring.mapping_rules(settings),
        wiring.delivery_factory(settings, sink, transport=transport, sleep=sleep),
        allow_other_streams=allow_other_streams,
    )
    log.info("redriving %s to PostHog at %s", source, settings.posthog_host)
    try:
        redriver.run(entries)
    except KeyboardInterrupt:
        log.warning("redrive interrupted (again is harmless): %s", _progress(redriver, shown))
        return ExitStatus.OK  # stopped on request
    except (PermanentDeliveryError, DependencyError) as exc:
        # The worker's statuses: 78 for what PostHog's answers say is misconfigured.
        unavailable = isinstance(exc, DependencyError)
        log.critical(
            "%s; redrive stopped: %s; running it again once fixed is harmless",
            exc,
            _progress(redriver, shown),
        )
        return ExitStatus.UNAVAILABLE if unavailable else ExitStatus.CONFIG
    log.info("redrive done: %s", _progress(redriver, shown))
    out.write(json.dumps({**redriver.summary(), "to": shown}) + "\n")
    return ExitStatus.OK


def _progress(redriver: Redriver, shown: str) -> str:
    summary = redriver.summary()
    return (
        f"{summary['read']} read, {summary['delivered']} delivered, "
        f"{sum(summary['stillFailing'].values())} still failing written to {shown}, "
        f"{summary['skipped']} skipped"
    )
