"""Settings: one frozen object, built and validated once at start-up.

Our keys live in the KCL ``.properties`` file beside the daemon's own; any other key must
be one the daemon reads (:mod:`consumer.kclkeys`), which ignores a misspelled one without a
word. Any key can be overridden from the environment as ``KINESIS_POSTHOG_<key>``
(``KINESIS_POSTHOG_streamName``), so one image serves every environment; ``POSTHOG_API_KEY``
and ``POSTHOG_HOST`` are read under their usual names too. Every error names the key, the
value and what is allowed, and is raised before any record is read.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from consumer import kclkeys, paths, urls
from consumer.errors import ConfigError
from consumer.propfile import read_properties

ENV_PREFIX = "KINESIS_POSTHOG_"
# Where the launcher tells shard processes the file is: an environment name, not a key.
PROPERTIES_ENV = f"{ENV_PREFIX}PROPERTIES"
API_KEY_ENV = "POSTHOG_API_KEY"
HOST_ENV = "POSTHOG_HOST"

DEFAULT_POSTHOG_HOST = "https://us.i.posthog.com"
# posthog-python's per-batch cap; PostHog's own limit is 20 MB per request body.
DEFAULT_BATCH_MAX_BYTES = 5 * 1024 * 1024
POSTHOG_BODY_LIMIT_BYTES = 20 * 1000 * 1000
DEFAULT_BATCH_MAX_EVENTS = 1000
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_CHECKPOINT_SECONDS = 10.0
DEFAULT_CHECKPOINT_RECORDS = 10_000


class MissingDistinctId(enum.StrEnum):
    """What to do with a record whose ``distinctIdKey`` is absent."""

    PARTITION_KEY = "partitionKey"
    FIXED = "fixed"
    DEAD_LETTER = "deadLetter"


class DeadLetterKind(enum.StrEnum):
    """Where records that cannot become events are kept."""

    FILE = "file"
    KINESIS = "kinesis"


@dataclass(frozen=True, slots=True)
class PropertyMapping:
    """One ``source.path:destination`` entry of ``additionalPropertyMappings``."""

    source: paths.KeyPath
    destination: str


@dataclass(frozen=True, slots=True)
class DeadLetterTarget:
    """``file:<path>`` (JSON lines) or ``kinesis:<stream name>``."""

    kind: DeadLetterKind
    location: str


DEFAULT_DEAD_LETTER = DeadLetterTarget(DeadLetterKind.FILE, "dead-letter.jsonl")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the processor needs, validated; see README "Configuration"."""

    application_name: str
    stream_name: str
    region: str | None = None
    kinesis_endpoint: str | None = None
    dynamodb_endpoint: str | None = None
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)

    event_key: paths.KeyPath
    property_mappings: tuple[PropertyMapping, ...] = ()
    distinct_id_key: paths.KeyPath | None = None
    missing_distinct_id: MissingDistinctId = MissingDistinctId.PARTITION_KEY
    fallback_distinct_id: str | None = None
    timestamp_key: paths.KeyPath | None = None
    include_all_properties: bool = False
    historical_migration: bool = False

    posthog_host: str = DEFAULT_POSTHOG_HOST
    posthog_allow_http: bool = False
    api_key: str = field(repr=False)
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    batch_max_events: int = DEFAULT_BATCH_MAX_EVENTS
    batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES
    dead_letter: DeadLetterTarget = DEFAULT_DEAD_LETTER
    checkpoint_interval_seconds: float = DEFAULT_CHECKPOINT_SECONDS
    checkpoint_interval_records: int = DEFAULT_CHECKPOINT_RECORDS
    leader_lock_stale_seconds: float | None = None


# Our keys. Of the daemon's (KCL_KEYS, handed to it untouched) we read streamName/streamArn,
# applicationName, regionName, kinesisEndpoint and dynamoDBEndpoint too.
OUR_KEYS = frozenset(
    {
        "eventKey", "additionalPropertyMappings", "distinctIdKey", "missingDistinctId",
        "fallbackDistinctId", "timestampKey", "includeAllProperties", "historicalMigration",
        "posthogHost", "posthogAllowHttp", "posthogApiKey", "posthogTimeoutSeconds",
        "batchMaxEvents", "batchMaxBytes", "deadLetter", "checkpointIntervalSeconds",
        "checkpointIntervalRecords", "awsAccessKeyId", "awsSecretAccessKey", "leaderLockStaleSeconds",
    }
)  # fmt: skip
KCL_KEYS = kclkeys.KCL_KEYS
# AWS's rule for stream names (CreateStream: StreamName).
_STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
_STREAM_NAME_RULE = "a Kinesis stream name: 1 to 128 of a-z A-Z 0-9 _ . -"
_PLAIN_HTTP = (
    "https:// (the project API key travels in every request body); http:// only to localhost, "
    "127.0.0.0/8 or ::1, or with posthogAllowHttp = true"
)
_E = TypeVar("_E", bound=enum.StrEnum)
_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


def load(properties_path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``properties_path``, apply environment overrides and validate everything."""
    try:
        raw = read_properties(properties_path)
    except OSError as exc:
        raise ConfigError(
            "--properties", str(properties_path), f"a readable file ({exc.strerror})"
        ) from exc
    return from_mapping(apply_overrides(raw, os.environ if environ is None else environ))


def apply_overrides(raw: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """Return ``raw`` with ``KINESIS_POSTHOG_<key>``, ``POSTHOG_API_KEY`` and ``POSTHOG_HOST`` applied."""
    merged = dict(raw)
    # Environment names are often upper case: KINESIS_POSTHOG_STREAMNAME sets streamName.
    by_lower = {key.lower(): key for key in OUR_KEYS | KCL_KEYS}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and name not in (ENV_PREFIX, PROPERTIES_ENV):
            key = name[len(ENV_PREFIX) :]
            merged[key if key in by_lower.values() else by_lower.get(key.lower(), key)] = value
    if environ.get(HOST_ENV):
        merged["posthogHost"] = environ[HOST_ENV]
    if environ.get(API_KEY_ENV):
        merged["posthogApiKey"] = environ[API_KEY_ENV]
    return merged


def from_mapping(raw: Mapping[str, str]) -> Settings:
    """Validate already-merged key/value pairs into :class:`Settings`."""
    values = {key: value.strip() for key, value in raw.items()}
    kclkeys.reject_unknown(values, OUR_KEYS)
    kclkeys.check_values(values)
    reader = _Reader(values)
    stream_name = _stream_name(values)
    allow_http = reader.boolean("posthogAllowHttp")
    settings = Settings(
        application_name=reader.required("applicationName", "a name for the KCL application"),
        stream_name=stream_name,
        region=values.get("regionName") or None,
        # SigV4 signs requests without sending the secret: http:// (LocalStack) is fine here.
        kinesis_endpoint=reader.url("kinesisEndpoint"),
        dynamodb_endpoint=reader.url("dynamoDBEndpoint"),
        aws_access_key_id=values.get("awsAccessKeyId") or None,
        aws_secret_access_key=values.get("awsSecretAccessKey") or None,
        event_key=reader.required_path("eventKey"),
        property_mappings=parse_mappings(values.get("additionalPropertyMappings", "")),
        distinct_id_key=reader.path("distinctIdKey"),
        missing_distinct_id=reader.choice(
            "missingDistinctId", MissingDistinctId, MissingDistinctId.PARTITION_KEY
        ),
        fallback_distinct_id=values.get("fallbackDistinctId") or None,
        timestamp_key=reader.path("timestampKey"),
        include_all_properties=reader.boolean("includeAllProperties"),
        historical_migration=reader.boolean("historicalMigration"),
        posthog_host=_posthog_host(reader, allow_http=allow_http),
        posthog_allow_http=allow_http,
        api_key=_api_key(values),
        timeout_seconds=reader.number("posthogTimeoutSeconds", DEFAULT_TIMEOUT_SECONDS, 0.1, 600.0),
        batch_max_events=reader.integer("batchMaxEvents", DEFAULT_BATCH_MAX_EVENTS, 1, 100_000),
        batch_max_bytes=reader.integer(
            "batchMaxBytes", DEFAULT_BATCH_MAX_BYTES, 1024, POSTHOG_BODY_LIMIT_BYTES
        ),
        dead_letter=_dead_letter(values.get("deadLetter", ""), stream_name),
        checkpoint_interval_seconds=reader.number(
            "checkpointIntervalSeconds", DEFAULT_CHECKPOINT_SECONDS, 0.0, 3600.0
        ),
        checkpoint_interval_records=reader.integer(
            "checkpointIntervalRecords", DEFAULT_CHECKPOINT_RECORDS, 1, 10_000_000
        ),
        leader_lock_stale_seconds=(
            reader.number("leaderLockStaleSeconds", 0.0, 31.0, 3600.0)
            if values.get("leaderLockStaleSeconds")
            else None
        ),
    )
    if (
        settings.missing_distinct_id is MissingDistinctId.FIXED
        and not settings.fallback_distinct_id
    ):
        raise ConfigError(
            "fallbackDistinctId", "", "a non-empty id, required when missingDistinctId = fixed"
        )
    if (settings.aws_access_key_id is None) != (settings.aws_secret_access_key is None):
        raise ConfigError(
            "awsSecretAccessKey" if settings.aws_access_key_id else "awsAccessKeyId",
            "",
            "set both awsAccessKeyId and awsSecretAccessKey, or neither (default AWS chain)",
        )
    return settings


def parse_mappings(text: str) -> tuple[PropertyMapping, ...]:
    """Parse ``src.path:dest, other.path:dest2`` (whitespace around entries is trimmed)."""
    key = "additionalPropertyMappings"
    mappings: list[PropertyMapping] = []
    seen: set[str] = set()
    for entry in (part.strip() for part in paths.split_unescaped(text, ",")):
        if not entry:
            continue
        halves = paths.split_unescaped(entry, ":")
        if len(halves) != 2:
            raise ConfigError(key, entry, "entries of the form source.path:destination (one ':')")
        source_text, destination = halves[0].strip(), halves[1].strip()
        if not source_text or not destination:
            raise ConfigError(
                key, entry, "a non-empty source path and destination on each side of ':'"
            )
        if "." in destination or "\\" in destination:
            raise ConfigError(
                key, entry, "a flat destination property name (destinations cannot be nested)"
            )
        if destination in seen:
            raise ConfigError(
                key, entry, f"each destination at most once ({destination!r} repeats)"
            )
        seen.add(destination)
        try:
            source = paths.parse(source_text)
        except paths.PathSyntaxError as exc:
            raise ConfigError(key, entry, str(exc)) from exc
        mappings.append(PropertyMapping(source=source, destination=destination))
    return tuple(mappings)


class _Reader:
    """Typed access to the raw values, raising :class:`ConfigError` with the allowed values."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def required(self, key: str, allowed: str) -> str:
        value = self._values.get(key, "")
        if not value:
            raise ConfigError(key, value, f"required: {allowed}")
        return value

    def required_path(self, key: str) -> paths.KeyPath:
        path = self.path(key)
        if path is None:
            raise ConfigError(key, "", "required: a nested key path such as properties.eventName")
        return path

    def path(self, key: str) -> paths.KeyPath | None:
        text = self._values.get(key, "")
        if not text:
            return None
        try:
            return paths.parse(text)
        except paths.PathSyntaxError as exc:
            raise ConfigError(key, text, str(exc)) from exc

    def boolean(self, key: str) -> bool:
        text = self._values.get(key, "").lower()
        if not text or text in _FALSE:
            return False
        if text in _TRUE:
            return True
        raise ConfigError(key, text, "true or false")

    def number(self, key: str, default: float, low: float, high: float) -> float:
        text = self._values.get(key, "")
        if not text:
            return default
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:
            raise ConfigError(key, text, f"a number from {low:g} to {high:g}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        text = self._values.get(key, "")
        if not text:
            return default
        if not text.isdecimal() or not low <= int(text) <= high:
            raise ConfigError(key, text, f"a whole number from {low} to {high}")
        return int(text)

    def choice(self, key: str, kind: type[_E], default: _E) -> _E:
        text = self._values.get(key, "")
        if not text:
            return default
        try:
            return kind(text)
        except ValueError as exc:
            raise ConfigError(key, text, "one of " + ", ".join(m.value for m in kind)) from exc

    def url(self, key: str, *, path_ok: bool = False) -> str | None:
        text = self._values.get(key, "")
        if not text:
            return None
        problem = urls.problem(text, path_ok=path_ok)
        if problem:
            raise ConfigError(key, urls.without_userinfo(text), problem)
        return text


def _posthog_host(reader: _Reader, *, allow_http: bool) -> str:
    text = reader.url("posthogHost", path_ok=True) or DEFAULT_POSTHOG_HOST
    parts = urlsplit(text)
    if parts.scheme == "http" and not urls.is_loopback(parts.hostname or "") and not allow_http:
        raise ConfigError("posthogHost", text, _PLAIN_HTTP)
    return text.rstrip("/")


def _stream_name(values: Mapping[str, str]) -> str:
    name = values.get("streamName", "")
    arn = values.get("streamArn", "")
    if name and not _STREAM_NAME.fullmatch(name):
        raise ConfigError("streamName", name, _STREAM_NAME_RULE)
    if arn:
        arn_name = arn.rpartition(":stream/")[2]
        if not arn.startswith("arn:") or not _STREAM_NAME.fullmatch(arn_name):
            allowed = f"arn:aws:kinesis:<region>:<account>:stream/<name>, {_STREAM_NAME_RULE}"
            raise ConfigError("streamArn", arn, allowed)
        return arn_name
    if not name:
        raise ConfigError("streamName", name, "required (or streamArn): the Kinesis stream to read")
    return name


def _api_key(values: Mapping[str, str]) -> str:
    key = values.get("posthogApiKey", "")
    if not key:
        allowed = "required: your PostHog project API key (phc_...), from the environment"
        raise ConfigError(API_KEY_ENV, "", allowed)
    if key.startswith("phx_"):
        # Personal API keys are refused by capture with a 401; say so now, not at the first batch.
        raise ConfigError(
            API_KEY_ENV, "phx_<redacted>", "a project API key (phc_...), not a personal key"
        )
    return key


def _dead_letter(text: str, source_stream: str) -> DeadLetterTarget:
    if not text:
        return DEFAULT_DEAD_LETTER
    kind_text, _, location = text.partition(":")
    location = location.strip()
    kinds = {kind.value: kind for kind in DeadLetterKind}
    if kind_text not in kinds or not location:
        raise ConfigError("deadLetter", text, "file:<path> (JSON lines) or kinesis:<stream name>")
    if kinds[kind_text] is DeadLetterKind.KINESIS:
        if not _STREAM_NAME.fullmatch(location):
            raise ConfigError("deadLetter", text, f"kinesis:<stream name>, {_STREAM_NAME_RULE}")
        if location == source_stream:
            raise ConfigError(
                "deadLetter",
                text,
                f"a stream other than the source stream {source_stream} "
                "(the worker would read its own dead letters again as input)",
            )
    return DeadLetterTarget(kinds[kind_text], location)
