"""``preview`` and ``check``: answers for a person, without consuming anything.

* ``preview`` prints the PostHog event a record becomes (or its dead-letter reason),
  with no AWS and no PostHog involved.
* ``check`` validates the settings and probes each dependency with the configured
  endpoints and credentials (see :mod:`consumer.preflight`): Kinesis, DynamoDB, and
  whether PostHog knows the project key.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from consumer import config, preflight, wiring
from consumer.errors import ConfigError, DependencyError, RecordError
from consumer.exits import ExitStatus
from consumer.mapping import Mapper
from consumer.record import KinesisRecord

# preview needs no PostHog key; a placeholder satisfies validation.
_PREVIEW_KEY = "phc_preview"


def preview(
    properties: Path,
    *,
    data: str | None,
    path: str | None,
    out: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Print the event (exit 0) or the dead-letter reason (exit 65) for one record."""
    out = out or sys.stdout
    env = dict(os.environ if environ is None else environ)
    env.setdefault(config.API_KEY_ENV, _PREVIEW_KEY)
    settings = config.load(properties, env)
    if data is not None:
        raw = data.encode("utf-8")
    elif path in (None, "-"):
        raw = sys.stdin.buffer.read()
    else:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError("--record", path, f"a readable file ({exc.strerror})") from exc
    record = KinesisRecord(
        data=raw,
        partition_key="preview-partition-key",
        sequence_number="0",
        sub_sequence_number=0,
        arrival_millis=int(time.time() * 1000),
    )
    try:
        event = Mapper(wiring.mapping_rules(settings), "shardId-preview").map(record)
    except RecordError as exc:
        out.write(
            json.dumps({"deadLetter": {"reason": exc.reason, "detail": exc.detail}}, indent=2)
            + "\n"
        )
        return ExitStatus.RECORD_ERROR
    out.write(json.dumps(json.loads(event.payload), indent=2, ensure_ascii=False) + "\n")
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
