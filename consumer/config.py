"""Settings: one frozen object, built and validated once at start-up.

Our keys live in the KCL ``.properties`` file beside the daemon's own. Any key can be
overridden from the environment as ``KINESIS_POSTHOG_<key>`` (``KINESIS_POSTHOG_streamName``),
so one image serves every environment; ``POSTHOG_API_KEY`` and ``POSTHOG_HOST`` are
read under their usual names too. Every error names the key, the value and what is
allowed, and is raised before any record is read.
"""

from __future__ import annotations

import difflib
import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from consumer import paths
from consumer.errors import ConfigError
from consumer.propfile import read_properties

ENV_PREFIX = "KINESIS_POSTHOG_"
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
    api_key: str = field(repr=False)
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    batch_max_events: int = DEFAULT_BATCH_MAX_EVENTS
    batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES
    dead_letter: DeadLetterTarget = DeadLetterTarget(DeadLetterKind.FILE, "dead-letter.jsonl")
    checkpoint_interval_seconds: float = DEFAULT_CHECKPOINT_SECONDS
    checkpoint_interval_records: int = DEFAULT_CHECKPOINT_RECORDS
    leader_lock_stale_seconds: float | None = None


# Our keys, and the KCL keys we read; the launcher hands the rest to the daemon untouched.
OUR_KEYS = frozenset(
    {
        "eventKey",
        "additionalPropertyMappings",
        "distinctIdKey",
        "missingDistinctId",
        "fallbackDistinctId",
        "timestampKey",
        "includeAllProperties",
        "historicalMigration",
        "posthogHost",
        "posthogApiKey",
        "posthogTimeoutSeconds",
        "batchMaxEvents",
        "batchMaxBytes",
        "deadLetter",
        "checkpointIntervalSeconds",
        "checkpointIntervalRecords",
        "awsAccessKeyId",
        "awsSecretAccessKey",
        "leaderLockStaleSeconds",
    }
)
KCL_KEYS = frozenset(
    {
        "executableName", "applicationName", "streamName", "streamArn", "regionName",
        "AwsCredentialsProvider", "AwsCredentialsProviderDynamoDB",
        "AwsCredentialsProviderCloudWatch", "kinesisEndpoint", "dynamoDBEndpoint",
        "cloudWatchEndpoint", "processingLanguage", "initialPositionInStream",
        "initialPositionInStreamExtended", "retrievalMode", "maxRecords",
        "idleTimeBetweenReadsInMillis", "failoverTimeMillis", "shardSyncIntervalMillis",
        "cleanupLeasesUponShardCompletion", "maxLeasesForWorker", "maxLeasesToStealAtOneTime",
        "workerId", "tableName", "metricsLevel", "metricsEnabledDimensions",
        "shutdownGraceMillis", "parentShardPollIntervalMillis", "callProcessRecordsEvenForEmptyRecordList",
        "isGracefulLeaseHandoffEnabled", "gracefulLeaseHandoffTimeoutMillis",
        "taskBackoffTimeMillis", "validateSequenceNumberBeforeCheckpointing",
        "maxGetRecordsThreadPool", "retryGetRecordsInSeconds", "timeoutInSeconds",
        "billingMode", "leaseTableDeletionProtectionEnabled", "leaseTablePitrEnabled",
        "maxActiveThreads", "skipShardSyncAtStartupIfLeasesExist", "listShardsBackoffTimeInMillis",
        "maxListShardsRetryAttempts", "leaseManagementConfig", "coordinatorConfig",
        "workerUtilizationAwareAssignmentConfig", "gracefulLeaseHandoffConfig",
        "clientVersionConfig", "coordinatorStateTableName", "workerMetricsTableName",
    }
)  # fmt: skip
_SECRET_KEYS = frozenset({"posthogApiKey", "awsSecretAccessKey"})
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
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            merged[name[len(ENV_PREFIX) :]] = value
    if environ.get(HOST_ENV):
        merged["posthogHost"] = environ[HOST_ENV]
    if environ.get(API_KEY_ENV):
        merged["posthogApiKey"] = environ[API_KEY_ENV]
    return merged


def from_mapping(raw: Mapping[str, str]) -> Settings:
    """Validate already-merged key/value pairs into :class:`Settings`."""
    values = {key: value.strip() for key, value in raw.items()}
    _reject_typos(values)
    reader = _Reader(values)
    stream_name = _stream_name(values)
    settings = Settings(
        application_name=reader.required("applicationName", "a name for the KCL application"),
        stream_name=stream_name,
        region=values.get("regionName") or None,
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
        posthog_host=(reader.url("posthogHost") or DEFAULT_POSTHOG_HOST).rstrip("/"),
        api_key=_api_key(values),
        timeout_seconds=reader.number("posthogTimeoutSeconds", DEFAULT_TIMEOUT_SECONDS, 0.1, 600.0),
        batch_max_events=int(reader.number("batchMaxEvents", DEFAULT_BATCH_MAX_EVENTS, 1, 100_000)),
        batch_max_bytes=int(
            reader.number("batchMaxBytes", DEFAULT_BATCH_MAX_BYTES, 1024, POSTHOG_BODY_LIMIT_BYTES)
        ),
        dead_letter=_dead_letter(values.get("deadLetter", "")),
        checkpoint_interval_seconds=reader.number(
            "checkpointIntervalSeconds", DEFAULT_CHECKPOINT_SECONDS, 0.0, 3600.0
        ),
        checkpoint_interval_records=int(
            reader.number("checkpointIntervalRecords", DEFAULT_CHECKPOINT_RECORDS, 1, 10_000_000)
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

    def choice(self, key: str, kind: type[_E], default: _E) -> _E:
        text = self._values.get(key, "")
        if not text:
            return default
        try:
            return kind(text)
        except ValueError as exc:
            raise ConfigError(key, text, "one of " + ", ".join(m.value for m in kind)) from exc

    def url(self, key: str) -> str | None:
        text = self._values.get(key, "")
        if not text:
            return None
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(key, text, "an http:// or https:// URL with a host")
        return text


def _stream_name(values: Mapping[str, str]) -> str:
    name = values.get("streamName", "")
    arn = values.get("streamArn", "")
    if arn:
        arn_name = arn.rpartition(":stream/")[2]
        if not arn.startswith("arn:") or not arn_name:
            raise ConfigError("streamArn", arn, "arn:aws:kinesis:<region>:<account>:stream/<name>")
        return arn_name
    if not name:
        raise ConfigError("streamName", name, "required (or streamArn): the Kinesis stream to read")
    return name


def _api_key(values: Mapping[str, str]) -> str:
    key = values.get("posthogApiKey", "")
    if not key:
        raise ConfigError(
            API_KEY_ENV,
            "",
            "required: your PostHog project API key (phc_...), from the environment",
        )
    if key.startswith("phx_"):
        # Personal API keys are refused by capture with a 401; say so now, not at the first batch.
        raise ConfigError(API_KEY_ENV, "phx_...", "a project API key (phc_...), not a personal key")
    return key


def _dead_letter(text: str) -> DeadLetterTarget:
    if not text:
        return DeadLetterTarget(DeadLetterKind.FILE, "dead-letter.jsonl")
    kind_text, _, location = text.partition(":")
    allowed = "file:<path> (JSON lines) or kinesis:<stream name>"
    try:
        kind = DeadLetterKind(kind_text)
    except ValueError as exc:
        raise ConfigError("deadLetter", text, allowed) from exc
    if not location:
        raise ConfigError("deadLetter", text, allowed)
    return DeadLetterTarget(kind, location)


def _reject_typos(values: Mapping[str, str]) -> None:
    known = OUR_KEYS | KCL_KEYS
    lowered = {key.lower(): key for key in OUR_KEYS}
    for key, value in values.items():
        if key in known:
            continue
        guess = lowered.get(key.lower()) or next(
            iter(difflib.get_close_matches(key, sorted(OUR_KEYS), n=1, cutoff=0.8)), None
        )
        if guess is not None:
            shown = "<redacted>" if guess in _SECRET_KEYS else value
            raise ConfigError(key, shown, f"not a setting; did you mean {guess}?")
