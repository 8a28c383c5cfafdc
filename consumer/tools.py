"""``preview`` and ``check``: answers for a person, without consuming anything.

* ``preview`` prints the PostHog event a record becomes (or its dead-letter reason),
  with no AWS and no PostHog involved. Given a dead letter (``--dead-letter FILE[:LINE]``,
  read by :meth:`DeadLetter.from_json <consumer.deadletter.DeadLetter.from_json>`), the
  event is the one ``redrive`` would send: its first delivery's uuid and timestamp.
* ``check`` validates the settings and probes each dependency with the configured
  endpoints and credentials (see :mod:`consumer.preflight`): Kinesis, DynamoDB, and
  whether PostHog knows the project key.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from consumer import config, health, preflight, wiring
from consumer.deadletter import DeadLetter
from consumer.decoding import decode
from consumer.errors import ConfigError, DependencyError, NotADeadLetterError, RecordError
from consumer.exits import ExitStatus
from consumer.kinesis_sink import TOO_LARGE_REASON
from consumer.mapping import Mapper
from consumer.record import KinesisRecord

log = logging.getLogger(__name__)

# preview needs no PostHog key; a placeholder satisfies validation.
_PREVIEW_KEY = "phc_preview"
# What a record given as text, a file or stdin is taken to be: it came from no shard.
_PREVIEW_SHARD = "shardId-preview"
_PREVIEW_PARTITION_KEY = "preview-partition-key"


def preview(  # noqa: PLR0913 - one option per way to give the record, then the seams
    properties: Path,
    *,
    data: str | None,
    path: str | None,
    dead_letter: str | None = None,
    out: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Print the event (exit 0) or the dead-letter reason (exit 65) for one record.

    ``dead_letter`` (``FILE[:LINE]``) is mapped as ``redrive`` maps it: as its own
    stream's and shard's record, with the rules of today's settings.
    """
    out = out or sys.stdout
    letter = None if dead_letter is None else _dead_letter(dead_letter)
    env = dict(os.environ if environ is None else environ)
    env.setdefault(config.API_KEY_ENV, _PREVIEW_KEY)
    settings = config.load(properties, env)
    rules = wiring.mapping_rules(settings)
    shard_id = _PREVIEW_SHARD
    if letter is not None:
        record, stream, shard_id = letter
        if stream != rules.stream_name:
            log.warning(
                "the dead letter came from stream %s, not streamName %s: shown as that "
                "stream's event (redrive needs --allow-other-streams for it)",
                stream,
                rules.stream_name,
            )
            rules = dataclasses.replace(rules, stream_name=stream)
    else:
        record = KinesisRecord(
            data=_record_bytes(data, path),
            partition_key=_PREVIEW_PARTITION_KEY,
            sequence_number="0",
            sub_sequence_number=0,
            arrival_millis=int(time.time() * 1000),
        )
    try:
        event = Mapper(rules, shard_id).map(record)
    except RecordError as exc:
        out.write(
            json.dumps({"deadLetter": {"reason": exc.reason, "detail": exc.detail}}, indent=2)
            + "\n"
        )
        return ExitStatus.RECORD_ERROR
    out.write(json.dumps(json.loads(event.payload), indent=2, ensure_ascii=False) + "\n")
    return ExitStatus.OK


def _record_bytes(data: str | None, path: str | None) -> bytes:
    """The record given as text (``--data``), from a file or from stdin (``--record``)."""
    if data is not None:
        return data.encode("utf-8")
    if path in (None, "-"):
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError("--record", path, f"a readable file ({exc.strerror})") from exc


def _dead_letter(spec: str) -> tuple[KinesisRecord, str, str]:
    """``--dead-letter FILE[:LINE]`` (line 1 by default): its record, stream and shard id."""
    head, _, tail = spec.rpartition(":")
    named = head and tail.isdigit() and not Path(spec).exists()  # a name may end in :<digits>
    path, number = (Path(head), int(tail)) if named else (Path(spec), 1)
    try:
        with path.open("rb") as handle:
            line = next(itertools.islice(handle, max(number - 1, 0), None), b"")
    except OSError as exc:
        raise ConfigError("--dead-letter", spec, f"a readable file ({exc.strerror})") from exc
    if number < 1 or not line:
        raise ConfigError(
            "--dead-letter", spec, f"FILE[:LINE], LINE a line of {path} (counted from 1)"
        )
    try:
        entry = DeadLetter.from_json(decode(line), dataless_reason=TOO_LARGE_REASON)
    except RecordError as exc:
        problem = f"a dead-letter entry (not a JSON object ({exc.reason}))"
        raise ConfigError("--dead-letter", spec, problem) from exc
    except NotADeadLetterError as exc:
        raise ConfigError("--dead-letter", spec, f"a dead-letter entry ({exc})") from exc
    record = entry.record()
    if record is None:
        raise ConfigError("--dead-letter", spec, f"an entry with data ({TOO_LARGE_REASON}: none)")
    return record, entry.stream, entry.shard_id


def health_check(
    properties: Path, *, out: TextIO | None = None, now: Callable[[], float] = time.time
) -> int:
    """Exit 0 if no shard of this host's worker is stuck (see :mod:`consumer.health`), else 1.

    The verdict is a status, not data: it goes to stderr (the exit status is the answer),
    where a container health check's output is kept.
    """
    out = out or sys.stderr
    settings = config.load(properties)
    states = health.read_states(health.state_dir(settings.application_name))
    found = health.problems(states, now(), settings.health_stall_seconds)
    for problem in found:
        print(f"stuck: {problem}", file=out)
    if found:
        return ExitStatus.UNHEALTHY
    behind = sum(1 for state in states if (state.behind_millis or 0) > health.BEHIND_MILLIS)
    print(f"healthy: {len(states)} shards, {behind} behind the tip and delivering", file=out)
    return ExitStatus.OK


def check(properties: Path, *, out: TextIO | None = None) -> int:
    """Validate, then probe Kinesis, DynamoDB and PostHog; exit 0 only if all answer."""
    out = out or sys.stdout
    settings = config.load(properties)
    out.write(
        f"configuration: ok (stream {settings.stream_name}, PostHog {settings.posthog_host})\n"
    )
    probes: list[tuple[str, Callable[[], str]]] = [
        ("kinesis", lambda: preflight.probe_kinesis(settings)),
        ("dynamodb", lambda: preflight.probe_dynamodb(settings)),
        ("dead-letter", lambda: preflight.probe_dead_letter(settings)),
        ("posthog", lambda: _probe_posthog(settings)),
    ]
    failed = 0
    for name, probe in probes:
        try:
            out.write(f"{name}: ok ({probe()})\n")
        except DependencyError as exc:
            failed += 1
            out.write(f"{name}: FAILED ({exc})\n")
    return ExitStatus.UNAVAILABLE if failed else ExitStatus.OK


def _probe_posthog(settings: config.Settings) -> str:
    """``check`` is for a person: an unverified key is a failure here, not a warning."""
    result = preflight.verify_key(settings.posthog_host, settings.api_key)
    if result.verdict is not preflight.KeyVerdict.KNOWN:
        raise DependencyError(f"project API key {result.verdict.value}: {result.detail}")
    return result.detail
