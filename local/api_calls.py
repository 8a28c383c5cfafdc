"""Which AWS API actions the emulators were asked for, on what, and by which SDK.

The task role's IAM policy (``deploy/iam-task-role-policy.json``) is checked against what
the KCL daemon and our processes really call (``tests/test_iam_policy.py``), so the
emulators keep a record when started with ``record_calls=True``:

* **kinesis-mock** logs every request at ``LOG_LEVEL=DEBUG``: lines carrying the request's
  ``contextId``, its ``action`` (from ``X-Amz-Target``), its ``contentType`` and, once the
  request is parsed, its ``streamName`` (not for GetRecords or ListShards, which name a
  shard iterator or may name nothing). No request body or record data is logged.
* **moto_server** appends every request (headers, body in base64) as one JSON line to
  ``MOTO_RECORDER_FILEPATH`` when ``MOTO_ENABLE_RECORDING`` is set (moto's own recorder).

Who called: the AWS SDK for Java (the daemon) names itself in DynamoDB's ``User-Agent``;
kinesis-mock logs no user agent, but the Java SDK speaks CBOR to Kinesis by default while
boto3 (our processes, and the tests' producers) speaks JSON.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

# kinesis-mock's level that logs one line per request stage, each with the action.
KINESIS_RECORDING_LOG_LEVEL = "DEBUG"
MOTO_RECORDING_ENV = "MOTO_ENABLE_RECORDING"
MOTO_RECORDING_FILE_ENV = "MOTO_RECORDER_FILEPATH"

# X-Amz-Target prefixes (JSON protocols) -> the service's IAM prefix.
TARGET_SERVICES = {
    "DynamoDB_20120810": "dynamodb",
    "Kinesis_20131202": "kinesis",
    "GraniteServiceVersion20100801": "cloudwatch",
}
# Newer SDKs send CloudWatch calls as Smithy RPC v2 CBOR: the action is in the path.
RPC_V2_PATH = re.compile(r"/service/(?P<service>\w+)/operation/(?P<action>\w+)")
KINESIS_CBOR = "application/x-amz-cbor"
# The kinds of item a DynamoDB transaction holds; each names its own table.
TRANSACT_ITEM_KINDS = ("Put", "Update", "Delete", "ConditionCheck", "Get")

_CONTEXT_ID = re.compile(r"contextId=([0-9a-fA-F-]+)")
_FIELDS = {
    name: re.compile(rf"\b{name}=([^,\s]+)")
    for name in ("action", "contentType", "streamName", "streamArn")
}


class Client(enum.StrEnum):
    """Which SDK made a call."""

    JAVA = "aws-sdk-java"  # the KCL daemon
    PYTHON = "boto3"  # our processes and the tests' own calls
    UNKNOWN = "unknown"


@dataclass(frozen=True, order=True)
class ApiCall:
    """One kind of call: ``service:action`` on ``resource`` by ``client``.

    ``resource`` is a stream name, a table name, or ``table/index/name`` for a query or
    scan of an index; None when the request names none (ListTables) or the record does
    not show it (kinesis-mock's GetRecords). A call on several tables (batches,
    transactions) is one ApiCall per table, and per item kind (``part``: ``Put``,
    ``Update``, ``Delete``, ``ConditionCheck``, ``Get``) for a transaction.
    """

    service: str
    action: str
    resource: str | None = None
    part: str | None = None
    client: Client = Client.UNKNOWN

    @property
    def name(self) -> str:
        """``service:action``, as IAM spells actions (``kinesis:GetRecords``)."""
        return f"{self.service}:{self.action}"


@dataclass(frozen=True)
class Recorded:
    """The distinct calls recorded, and how many recorded lines could not be read."""

    calls: frozenset[ApiCall]
    # moto's recorder writes a line per request from the server's threads; a line still
    # being written when we read (or, rarely, two interleaved) is skipped and counted.
    skipped_lines: int


@dataclass(frozen=True)
class Recording:
    """Where a running pair of emulators records the calls it serves."""

    kinesis_log: Path
    dynamodb_recording: Path

    def read(self) -> Recorded:
        """Every distinct call recorded so far (the files are read now, while still written)."""
        skipped: list[str] = []
        calls = set(kinesis_calls(self.kinesis_log))
        calls.update(dynamodb_calls(self.dynamodb_recording, skipped))
        return Recorded(frozenset(calls), len(skipped))


def kinesis_env() -> dict[str, str]:
    """kinesis-mock's environment for recording: one log line per request stage."""
    return {"LOG_LEVEL": KINESIS_RECORDING_LOG_LEVEL}


def moto_env(recording: Path) -> dict[str, str]:
    """moto_server's environment for recording every request into ``recording``."""
    return {MOTO_RECORDING_ENV: "true", MOTO_RECORDING_FILE_ENV: str(recording)}


def kinesis_calls(log: Path) -> Iterator[ApiCall]:
    """The calls kinesis-mock logged, one per request (deduplicated by the caller)."""
    requests: dict[str, dict[str, str]] = {}
    for line in _lines(log):
        if "action=" not in line:
            continue
        context = _CONTEXT_ID.search(line)
        if context is None:
            continue
        seen = requests.setdefault(context.group(1), {})
        for name, pattern in _FIELDS.items():
            found = pattern.search(line)
            if found:
                seen.setdefault(name, found.group(1))
    for seen in requests.values():
        if "action" in seen:
            protocol = seen.get("contentType", "")
            client = Client.JAVA if protocol.startswith(KINESIS_CBOR) else Client.PYTHON
            stream = seen.get("streamName") or _after(seen.get("streamArn"), ":stream/")
            yield ApiCall("kinesis", seen["action"], stream, client=client)


def dynamodb_calls(recording: Path, unreadable: list[str] | None = None) -> Iterator[ApiCall]:
    """The calls moto recorded, one per request and table (deduplicated by the caller).

    Lines that are not JSON (one still being written) are skipped and, if ``unreadable``
    is given, appended to it.
    """
    for line in _lines(recording):
        try:
            entry = json.loads(line)
        except ValueError:
            if unreadable is not None:
                unreadable.append(line[:200])
            continue
        yield from _moto_entry(entry)


def _lines(path: Path) -> Iterator[str]:
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="replace") as lines:
        yield from lines


def _moto_entry(entry: dict[str, Any]) -> Iterator[ApiCall]:
    headers = {str(name).lower(): str(value) for name, value in entry.get("headers", {}).items()}
    url = urlsplit(str(entry.get("url", "")))
    if url.path.startswith("/moto-api/"):
        return  # moto's own control API, not AWS
    service, action = _service_action(headers, url.path, url.query)
    if action is None:
        return
    agent = headers.get("user-agent", "")
    client = (
        Client.JAVA
        if agent.startswith("aws-sdk-java")
        else Client.PYTHON
        if agent.lower().startswith(("boto3", "botocore"))
        else Client.UNKNOWN
    )
    body = _body(entry)
    targets = list(_targets(action, body)) if service == "dynamodb" else []
    if not targets:
        yield ApiCall(service, action, None, None, client)
    for resource, part in targets:
        yield ApiCall(service, action, resource, part, client)


def _service_action(headers: dict[str, str], path: str, query: str) -> tuple[str, str | None]:
    target = headers.get("x-amz-target")
    if target and "." in target:
        prefix, action = target.split(".", 1)
        return TARGET_SERVICES.get(prefix, prefix.lower()), action
    rpc = RPC_V2_PATH.search(path)
    if rpc:
        return TARGET_SERVICES.get(rpc["service"], rpc["service"].lower()), rpc["action"]
    actions = parse_qs(query).get("Action")
    return "unknown", actions[0] if actions else None


def _body(entry: dict[str, Any]) -> dict[str, Any]:
    raw = entry.get("body") or ""
    try:
        text = base64.b64decode(raw) if entry.get("body_encoded") else str(raw).encode()
        document = json.loads(text) if text else {}
    except (binascii.Error, ValueError):
        return {}  # CBOR or another protocol: the action is still known, the resource not
    return document if isinstance(document, dict) else {}


def _targets(action: str, body: dict[str, Any]) -> Iterable[tuple[str, str | None]]:
    """``(resource, part)`` pairs a DynamoDB request names."""
    if action.startswith("Transact"):
        for item in body.get("TransactItems", []):
            for kind in TRANSACT_ITEM_KINDS:
                if isinstance(item, dict) and isinstance(item.get(kind), dict):
                    yield _table_name(str(item[kind].get("TableName"))), kind
        return
    if action.startswith("Batch"):
        for table in body.get("RequestItems", {}):
            yield _table_name(str(table)), None
        return
    table = body.get("TableName")
    if isinstance(table, str):
        index = body.get("IndexName")
        name = _table_name(table)
        yield (f"{name}/index/{index}" if isinstance(index, str) else name), None


def _table_name(table: str) -> str:
    """A table's name, also when the request names it by ARN (DynamoDB accepts both)."""
    named = _after(table, ":table/") if table.startswith("arn:") else None
    return named or table


def _after(text: str | None, marker: str) -> str | None:
    if text is None or marker not in text:
        return None
    return text.split(marker, 1)[1]
