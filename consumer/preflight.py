"""Start-up checks: can this worker reach what it needs, and does PostHog know its key?

Run by ``run`` before the daemon starts, and by ``check`` for a person:

* **Kinesis** (DescribeStreamSummary) and **DynamoDB** (DescribeTable on the lease
  table, which KCL's own permissions cover; "not found" is fine: KCL creates it): the daemon itself
  retries an unreachable endpoint for about 100 s, then exits with status 0 as if it
  had finished; a worker that can never read must instead fail at once, non-zero, with
  one line naming the endpoint.
* **The PostHog project key.** Capture's ``/batch/`` checks only the key's shape, so a
  well-formed but wrong ``phc_`` key is answered 200 and its events are dropped later,
  silently. The flags service looks the key up: ``POST /flags/?v=2`` answers 401 for a
  key no project has (``/decide/?v=3`` on older self-hosted PostHog, which has no
  ``/flags``). ``only_evaluate_survey_feature_flags=true`` keeps the call from being
  billed as a flag request. PostHog unreachable here is only a warning for ``run``:
  an outage must not stop a deploy, and delivery waits out outages anyway.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumer import aws, wiring
from consumer.config import Settings
from consumer.deadletter import DEAD_LETTER_FILE_MODE, DeadLetterKind
from consumer.errors import ConfigError, DeliveryError, DependencyError
from consumer.sender import RequestsTransport, Response, Transport

FLAGS_PATH = "/flags/?v=2&only_evaluate_survey_feature_flags=true"
DECIDE_PATH = "/decide/?v=3"
# Any distinct id will do: the call only has to reach the key lookup.
PROBE_DISTINCT_ID = "kinesis-posthog-key-check"
# A start-up check should not hold a deploy for the full delivery timeout.
KEY_CHECK_TIMEOUT_SECONDS = 10.0
# Statuses that mean "this server has no such endpoint": try the older one.
_NO_ENDPOINT = frozenset({404, 405})
_REFUSED = frozenset({401, 403})
_REDIRECTS = range(300, 400)
# What the flags service answers when it looked the key up and found no project
# (rust/feature-flags/src/api/errors.rs; /decide: posthog/api/decide.py). A 401/403
# without one of these (a proxy, a WAF page) says nothing about the key.
UNKNOWN_KEY_CODES = frozenset({"authentication_failed", "invalid_api_key"})
UNKNOWN_KEY_TEXTS = ("API key is invalid", "Project API key invalid")


class KeyVerdict(enum.Enum):
    """What PostHog said about the project key."""

    KNOWN = "known"
    UNKNOWN = "unknown"
    UNVERIFIED = "unverified"  # PostHog could not be asked (down, timeout, 5xx)


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """The verdict, a one-line explanation for logs, and any quota PostHog says is exceeded."""

    verdict: KeyVerdict
    detail: str
    quota_limited: tuple[str, ...] = ()


def verify_key(
    host: str,
    api_key: str,
    *,
    timeout: float = KEY_CHECK_TIMEOUT_SECONDS,
    transport: Transport | None = None,
) -> KeyCheck:
    """Ask PostHog whether ``api_key`` belongs to a project.

    Raises :class:`ConfigError` when the answer shows ``posthogHost`` itself is wrong
    (a redirect, or a 200 that is not PostHog's); those would fail every batch later.
    """
    post = transport or RequestsTransport()
    body = json.dumps({"api_key": api_key, "distinct_id": PROBE_DISTINCT_ID}).encode()
    headers = {"Content-Type": "application/json"}
    for path in (FLAGS_PATH, DECIDE_PATH):
        url = host + path
        try:
            answer = post(url, body, headers, timeout)
        except DeliveryError as exc:
            return KeyCheck(KeyVerdict.UNVERIFIED, f"{url}: {exc}")
        if answer.status not in _NO_ENDPOINT:
            return _judge(host, url, answer)
    return KeyCheck(KeyVerdict.UNVERIFIED, f"{host} has neither /flags nor /decide (404/405)")


def _judge(host: str, url: str, answer: Response) -> KeyCheck:
    if answer.status in _REFUSED:
        code = _code(answer)
        if code in UNKNOWN_KEY_CODES or any(text in answer.text for text in UNKNOWN_KEY_TEXTS):
            return KeyCheck(KeyVerdict.UNKNOWN, f"{url} answered {answer.status}: {code}")
        return KeyCheck(
            KeyVerdict.UNVERIFIED,
            f"{url} answered {answer.status} without PostHog's unknown-key code (a proxy?)",
        )
    if answer.status in _REDIRECTS:
        location = answer.headers.get("Location", "?")
        raise ConfigError(
            "posthogHost",
            host,
            f"PostHog's own base URL: it redirects to {location}; set posthogHost to where it points",
        )
    if answer.status == 200:
        document = _json(answer.text)
        if not isinstance(document, dict):
            raise ConfigError(
                "posthogHost",
                host,
                "a PostHog host: it answered 200 with something that is not PostHog's JSON "
                "(a web page or a proxy?)",
            )
        limited = document.get("quotaLimited") or document.get("quota_limited") or []
        quotas = tuple(str(name) for name in limited) if isinstance(limited, list) else ()
        return KeyCheck(KeyVerdict.KNOWN, f"{url} knows the key", quotas)
    return KeyCheck(KeyVerdict.UNVERIFIED, f"{url} answered {answer.status}")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _code(answer: Response) -> str:
    document = _json(answer.text)
    if isinstance(document, dict) and isinstance(document.get("code"), str):
        return str(document["code"])
    return "refused"


def require_known_key(
    settings: Settings, warn: Callable[[str], None], transport: Transport | None = None
) -> None:
    """Stop start-up (ConfigError) if PostHog does not know the key; warn if it cannot say."""
    result = verify_key(
        settings.posthog_host,
        settings.api_key,
        timeout=min(settings.timeout_seconds, KEY_CHECK_TIMEOUT_SECONDS),
        transport=transport,
    )
    if result.verdict is KeyVerdict.UNKNOWN:
        raise ConfigError(
            "POSTHOG_API_KEY",
            "<redacted>",
            f"the project API key of a project at {settings.posthog_host} ({result.detail}); "
            "copy it from Project settings -> Project API key",
        )
    if result.verdict is KeyVerdict.UNVERIFIED:
        warn(f"could not verify the PostHog project key ({result.detail}); starting anyway")
    if result.quota_limited:
        warn(
            f"PostHog reports this project over its quota for {', '.join(result.quota_limited)}; "
            "PostHog drops what is over its quota, and /batch/ still answers 200"
        )


def probe_kinesis(settings: Settings) -> str:
    """Describe the stream; raise :class:`DependencyError` naming the endpoint if we cannot."""
    described = _call(
        settings,
        "kinesis",
        lambda kinesis: kinesis.describe_stream_summary(StreamName=settings.stream_name),
    )["StreamDescriptionSummary"]
    status, shards = described["StreamStatus"], described["OpenShardCount"]
    return f"stream {settings.stream_name} is {status}, {shards} open shards"


def lease_table_exists(settings: Settings, table: str | None = None) -> bool:
    """Whether KCL's lease table exists; raise :class:`DependencyError` if DynamoDB does not answer.

    ``table``: the daemon's ``tableName`` when the file sets one (KCL's default, and
    ours, is ``applicationName``).
    """

    def describe(dynamodb: Any) -> bool:
        try:
            dynamodb.describe_table(TableName=table or settings.application_name)
        except dynamodb.exceptions.ResourceNotFoundException:
            return False  # a new application: KCL creates the table on its first start
        return True

    exists: bool = _call(settings, "dynamodb", describe)
    return exists


def probe_dynamodb(settings: Settings, table: str | None = None) -> str:
    """Look for the lease table (it may not exist yet); raise :class:`DependencyError` if we cannot."""
    exists = lease_table_exists(settings, table)
    return lease_table_state(table or settings.application_name, exists=exists)


def lease_table_state(table: str, *, exists: bool) -> str:
    """The start-up line about the lease table."""
    state = "exists" if exists else "will be created by KCL on first start"
    return f"lease table {table} {state}"


def probe_dead_letter(settings: Settings) -> str:
    """Check the dead-letter destination can take writes; raise :class:`DependencyError` if not.

    A worker whose sink is missing would start, then wait on its first bad record forever.
    """
    target = settings.dead_letter
    if target.kind is DeadLetterKind.KINESIS:
        described = _call(
            settings,
            "kinesis",
            lambda kinesis: kinesis.describe_stream_summary(StreamName=target.location),
        )["StreamDescriptionSummary"]
        return f"dead-letter stream {target.location} is {described['StreamStatus']}"
    path = Path(target.location)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, DEAD_LETTER_FILE_MODE))
    except OSError as exc:
        raise DependencyError(f"deadLetter file {path}: {exc.strerror}") from exc
    return f"dead-letter file {path} is writable"


def _call(settings: Settings, service: aws.Service, call: Callable[[Any], Any]) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    access = wiring.aws_access(settings)
    name = {"kinesis": "Kinesis", "dynamodb": "DynamoDB"}[service]
    endpoint = access.endpoint(service)
    try:
        client = aws.client(access, service)  # inside: a missing region raises here
        endpoint = client.meta.endpoint_url
        return call(client)
    except (BotoCoreError, ClientError) as exc:
        raise DependencyError(f"{name} at {endpoint or 'the AWS default endpoint'}: {exc}") from exc
