"""``preview`` and ``check``: answers for a person, without consuming anything.

* ``preview`` prints the PostHog event a record becomes (or its dead-letter reason),
  with no AWS and no PostHog involved.
* ``check`` validates the settings and probes each dependency with the configured
  endpoints and credentials: Kinesis (DescribeStreamSummary), DynamoDB (ListTables),
  PostHog (an empty batch: 400 means reachable with the key not refused, 401 refused).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from consumer import config
from consumer.errors import RecordError
from consumer.mapping import KinesisRecord, Mapper

# preview needs no PostHog key; a placeholder satisfies validation.
_PREVIEW_KEY = "phc_preview"
EXIT_RECORD_ERROR = 65  # EX_DATAERR
EXIT_UNREACHABLE = 69  # EX_UNAVAILABLE


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
        raw = Path(path).read_bytes()
    record = KinesisRecord(
        data=raw,
        partition_key="preview-partition-key",
        sequence_number="0",
        sub_sequence_number=0,
        arrival_millis=int(time.time() * 1000),
    )
    try:
        event = Mapper(settings, "shardId-preview").map(record)
    except RecordError as exc:
        out.write(
            json.dumps({"deadLetter": {"reason": exc.reason, "detail": exc.detail}}, indent=2)
            + "\n"
        )
        return EXIT_RECORD_ERROR
    out.write(json.dumps(json.loads(event.payload), indent=2, ensure_ascii=False) + "\n")
    return 0


def check(properties: Path, *, out: TextIO | None = None) -> int:
    """Validate, then probe Kinesis, DynamoDB and PostHog; exit 0 only if all answer."""
    out = out or sys.stdout
    settings = config.load(properties)
    out.write(
        f"configuration: ok (stream {settings.stream_name}, PostHog {settings.posthog_host})\n"
    )
    probes: list[tuple[str, Callable[[], str]]] = [
        ("kinesis", lambda: _probe_kinesis(settings)),
        ("dynamodb", lambda: _probe_dynamodb(settings)),
        ("posthog", lambda: _probe_posthog(settings)),
    ]
    failed = 0
    for name, probe in probes:
        try:
            out.write(f"{name}: ok ({probe()})\n")
        except _ProbeError as exc:
            failed += 1
            out.write(f"{name}: FAILED ({exc})\n")
    return EXIT_UNREACHABLE if failed else 0


class _ProbeError(Exception):
    pass


def _probe_kinesis(settings: config.Settings) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    from consumer.aws import client

    try:
        summary = client(settings, "kinesis").describe_stream_summary(
            StreamName=settings.stream_name
        )
    except (BotoCoreError, ClientError) as exc:
        raise _ProbeError(str(exc)) from exc
    described = summary["StreamDescriptionSummary"]
    status, shards = described["StreamStatus"], described["OpenShardCount"]
    return f"stream {settings.stream_name} is {status}, {shards} open shards"


def _probe_dynamodb(settings: config.Settings) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    from consumer.aws import client

    try:
        tables = client(settings, "dynamodb").list_tables(Limit=100)["TableNames"]
    except (BotoCoreError, ClientError) as exc:
        raise _ProbeError(str(exc)) from exc
    exists = settings.application_name in tables
    state = "exists" if exists else "will be created by KCL on first start"
    return f"lease table {settings.application_name} {state}"


def _probe_posthog(settings: config.Settings) -> str:
    import requests

    url = settings.posthog_host + "/batch/"
    try:
        answer = requests.post(
            url, json={"api_key": settings.api_key, "batch": []}, timeout=settings.timeout_seconds
        )
    except requests.RequestException as exc:
        raise _ProbeError(f"cannot reach {url}: {type(exc).__name__}") from exc
    if answer.status_code in (401, 403):
        raise _ProbeError(f"{url} refused the project API key ({answer.status_code})")
    if answer.status_code >= 500:
        raise _ProbeError(f"{url} answered {answer.status_code}")
    return f"{url} answered {answer.status_code} to an empty batch; key not refused"
