"""Settings: one frozen object, built and validated once at start-up.

Our keys live in the KCL ``.properties`` file beside the daemon's own; any other key must
be one the daemon reads (:mod:`consumer.kclkeys`), which ignores a misspelled one without a
word. Any key can be overridden from the environment as ``KINESIS_POSTHOG_<key>``
(``KINESIS_POSTHOG_streamName``), so one image serves every environment; ``POSTHOG_API_KEY``
and ``POSTHOG_HOST`` are read under their usual names too. Every error names the key, the
value and what is allowed, and is raised before any record is read.

Each key is written once, as a row of :data:`SETTINGS`: the :class:`Settings` field it
fills, its parser (with the bounds), its default, whether it is a secret and what README
says of it. The known keys (:data:`OUR_KEYS`), the defaults, the checks and README's table
(:func:`readme_table`, compared with README by a test) are derived from it. The rules that
involve two keys follow the table as small functions (:data:`_RULES`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from consumer import kclkeys, logs, paths, urls
from consumer import settings_parsers as p
from consumer.deadletter import DeadLetterKind, DeadLetterTarget
from consumer.errors import ConfigError
from consumer.mapping import MissingDistinctId, PropertyMapping
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
# `health` calls a shard stuck after this long without progress: well past delivery's
# 30 s backoff cap, short enough for an orchestrator to notice within minutes.
DEFAULT_HEALTH_STALL_SECONDS = 300.0


DEFAULT_DEAD_LETTER = DeadLetterTarget(DeadLetterKind.FILE, "dead-letter.jsonl")


@dataclass(frozen=True, kw_only=True, repr=False)
class Settings:
    """Everything the processor needs, validated; the defaults are :data:`SETTINGS`'s."""

    application_name: str
    stream_name: str
    region: str | None
    kinesis_endpoint: str | None
    dynamodb_endpoint: str | None
    aws_access_key_id: str | None
    aws_secret_access_key: str | None

    event_key: paths.KeyPath
    property_mappings: tuple[PropertyMapping, ...]
    distinct_id_key: paths.KeyPath | None
    missing_distinct_id: MissingDistinctId
    fallback_distinct_id: str | None
    timestamp_key: paths.KeyPath | None
    include_all_properties: bool
    historical_migration: bool

    posthog_host: str
    posthog_allow_http: bool
    api_key: str
    timeout_seconds: float
    batch_max_events: int
    batch_max_bytes: int
    dead_letter: DeadLetterTarget
    checkpoint_interval_seconds: float
    checkpoint_interval_records: int
    health_stall_seconds: float

    def __repr__(self) -> str:
        """Every field but the secret ones, so a logged Settings leaks no key."""
        hidden = {setting.field for setting in SETTINGS if setting.secret}
        shown = (
            f"{item.name}={getattr(self, item.name)!r}"
            for item in dataclasses.fields(self)
            if item.name not in hidden
        )
        return f"Settings({', '.join(shown)})"


@dataclass(frozen=True, slots=True)
class Setting:
    """One key: how it is read, its default, and its row in README's table."""

    key: str
    field: str | None  # the Settings field it fills; None: a rule below the table reads it
    parse: p.Parser  # (key, stripped non-empty value) -> value; see consumer.settings_parsers
    default: object = None  # when the key is absent or blank, unless it is required
    _: KW_ONLY
    required: str | None = None  # what to say is required when the key is absent or blank
    secret: bool = False  # kept out of repr and of the daemon's file (passed in its environment)
    daemon_reads: bool = False  # in KCL_KEYS too (not one of OUR_KEYS): the daemon reads it
    env: str | None = None  # an environment variable that sets it too
    reported_as: str | None = None  # the name errors give, when not the key
    doc: str = ""  # README's meaning, "{bounds}" the parser's range; "": on the row above
    default_doc: str | None = None  # README's default, when not the default value itself

    @property
    def bounds(self) -> str | None:
        """The parser's range, e.g. ``1 to 100000``; None if it has none."""
        return self.parse.bounds if isinstance(self.parse, p.Number | p.WholeNumber) else None

    def read(self, values: Mapping[str, str]) -> Any:
        """This key's value in ``values`` (stripped), parsed; the default if absent or blank."""
        name = self.reported_as or self.key
        text = values.get(self.key, "")
        if text:
            return self.parse(name, text)
        if self.required is not None:
            raise ConfigError(name, "", f"required: {self.required}")
        return self.default


# In README's order, which is also the order errors are found in (the rules come after).
# fmt: off
SETTINGS: tuple[Setting, ...] = (
    Setting("streamName", None, p.stream_name, daemon_reads=True, default_doc="required",
            doc="the stream to read, by name or ARN (KCL's keys; the seed's \"Kinesis Stream Name\")"),
    Setting("streamArn", None, p.stream_arn, daemon_reads=True),
    Setting("regionName", "region", p.text, daemon_reads=True, default_doc="SDK default",
            doc="AWS region (the seed's \"AWS Region\")"),
    Setting("kinesisEndpoint", "kinesis_endpoint", p.Url(), daemon_reads=True, default_doc="the region's",
            doc="Kinesis and DynamoDB endpoints, e.g. LocalStack's; `http://` is fine (SigV4 never "
                "sends the secret)"),
    Setting("dynamoDBEndpoint", "dynamodb_endpoint", p.Url(), daemon_reads=True),
    Setting("applicationName", "application_name", p.text, daemon_reads=True,
            required="a name for the KCL application", doc="KCL application; also the DynamoDB lease table"),
    Setting("awsAccessKeyId", "aws_access_key_id", p.text, secret=True,
            doc="the seed's static IAM keys; both or neither. Unset: the default AWS chain (env, profile, "
                "ECS task role, instance profile). Passed to the daemon through its environment, never "
                "logged or written out"),
    Setting("awsSecretAccessKey", "aws_secret_access_key", p.text, secret=True),
    Setting("eventKey", "event_key", p.key_path, required="a nested key path such as properties.eventName",
            doc="path to the event name (the seed's \"Event Key\")"),
    Setting("additionalPropertyMappings", "property_mappings", p.mappings, (), default_doc="empty",
            doc="`src.path:dest, ...` (the seed's \"Additional Property Mappings\")"),
    Setting("distinctIdKey", "distinct_id_key", p.key_path,
            doc="path to the distinct id; unset: a mapping to `distinct_id`, as in the seed"),
    Setting("missingDistinctId", "missing_distinct_id", p.Choice(MissingDistinctId),
            MissingDistinctId.PARTITION_KEY,
            doc="when there is no distinct id: `partitionKey`, `fixed` (uses `fallbackDistinctId`), "
                "or `deadLetter`"),
    Setting("fallbackDistinctId", "fallback_distinct_id", p.text,
            doc="the id for `missingDistinctId = fixed`"),
    Setting("timestampKey", "timestamp_key", p.key_path,
            doc="path to the event time: ISO 8601, epoch seconds or milliseconds. Absent or unreadable: "
                "the record's approximate arrival time"),
    Setting("includeAllProperties", "include_all_properties", p.boolean, default=False,
            doc="forward the whole record object as properties, mappings applied on top"),
    Setting("historicalMigration", "historical_migration", p.boolean, default=False,
            doc="send batches with PostHog's `historical_migration` flag (backfills)"),
    Setting("posthogHost", "posthog_host", p.Url(path_ok=True), DEFAULT_POSTHOG_HOST, env=HOST_ENV,
            doc="PostHog (or self-hosted) base URL, a path prefix allowed for a reverse proxy "
                "(`POSTHOG_HOST` overrides)"),
    Setting("posthogAllowHttp", "posthog_allow_http", p.boolean, default=False,
            doc="allow `http://` to a PostHog that is not on loopback; the project API key travels in "
                "every request body"),
    Setting("posthogApiKey", "api_key", p.project_api_key, secret=True, env=API_KEY_ENV,
            reported_as=API_KEY_ENV, default_doc="from `POSTHOG_API_KEY`",
            required="your PostHog project API key (phc_...), from the environment",
            doc="the project API key (`phc_...`); better kept in the environment than in the file. "
                "Required one way or the other; personal keys (`phx_`) are refused at start-up"),
    Setting("posthogTimeoutSeconds", "timeout_seconds", p.Number(0.1, 600.0), DEFAULT_TIMEOUT_SECONDS,
            doc="per-request timeout ({bounds} s)"),
    Setting("batchMaxEvents", "batch_max_events", p.WholeNumber(1, 100_000), DEFAULT_BATCH_MAX_EVENTS,
            doc="events per request at most ({bounds})"),
    Setting("batchMaxBytes", "batch_max_bytes", p.WholeNumber(1024, POSTHOG_BODY_LIMIT_BYTES),
            DEFAULT_BATCH_MAX_BYTES,
            doc="request body bytes at most, uncompressed ({bounds}; PostHog's cap is 20 MB)"),
    Setting("deadLetter", "dead_letter", p.dead_letter, DEFAULT_DEAD_LETTER,
            doc="`file:<path>` (JSON lines) or `kinesis:<stream>`"),
    Setting("checkpointIntervalSeconds", "checkpoint_interval_seconds", p.Number(0.0, 3600.0),
            DEFAULT_CHECKPOINT_SECONDS, doc="checkpoint at least this often while records flow ({bounds} s)"),
    Setting("checkpointIntervalRecords", "checkpoint_interval_records", p.WholeNumber(1, 10_000_000),
            DEFAULT_CHECKPOINT_RECORDS, doc="... or after this many records ({bounds})"),
    Setting("healthStallSeconds", "health_stall_seconds", p.Number(30.0, 86_400.0),
            DEFAULT_HEALTH_STALL_SECONDS,
            doc="`health` fails when a shard has made no progress this long ({bounds} s)"),
)
# fmt: on

# Our keys; the daemon's (KCL_KEYS) are handed to it untouched, though we read some too.
OUR_KEYS = frozenset(setting.key for setting in SETTINGS if not setting.daemon_reads)
KCL_KEYS = kclkeys.KCL_KEYS
# Left out of the daemon's copy of the file: they travel in its environment.
SECRET_KEYS = frozenset(setting.key for setting in SETTINGS if setting.secret)
_PLAIN_HTTP = (
    "https:// (the project API key travels in every request body); http:// only to localhost, "
    "127.0.0.0/8 or ::1, or with posthogAllowHttp = true"
)


class Loaded(NamedTuple):
    """The settings, and every key/value the daemon is to read (overrides applied, stripped)."""

    settings: Settings
    daemon_properties: Mapping[str, str]


def load(properties_path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``properties_path``, apply environment overrides and validate everything."""
    return load_with_properties(properties_path, environ).settings


def load_with_properties(properties_path: Path, environ: Mapping[str, str] | None = None) -> Loaded:
    """:func:`load`, keeping the merged key/value pairs too, so that nothing reads the file again."""
    try:
        raw = read_properties(properties_path)
    except OSError as exc:
        raise ConfigError(
            "--properties", str(properties_path), f"a readable file ({exc.strerror})"
        ) from exc
    merged = apply_overrides(raw, os.environ if environ is None else environ)
    # Stripped as they are validated: Java keeps trailing blanks in a value, and the daemon
    # would otherwise read "events " where we checked "events".
    values = {key: value.strip() for key, value in merged.items()}
    return Loaded(from_mapping(values), MappingProxyType(values))


def apply_overrides(raw: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """Return ``raw`` with ``KINESIS_POSTHOG_<key>``, ``POSTHOG_API_KEY`` and ``POSTHOG_HOST`` applied."""
    merged = dict(raw)
    # Environment names are often upper case: KINESIS_POSTHOG_STREAMNAME sets streamName.
    by_lower = {key.lower(): key for key in OUR_KEYS | KCL_KEYS}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and name not in (ENV_PREFIX, PROPERTIES_ENV):
            key = name[len(ENV_PREFIX) :]
            key = key if key in by_lower.values() else by_lower.get(key.lower(), key)
            if key not in OUR_KEYS and kclkeys.daemon_property(key) is None:
                # Name the variable the operator set: the key is in no file to search for.
                guess = kclkeys.suggest(key, OUR_KEYS)
                raise kclkeys.unknown_key(name, guess and ENV_PREFIX + guess)
            merged[key] = value
    for setting in SETTINGS:
        if setting.env and environ.get(setting.env):
            merged[setting.key] = environ[setting.env]
    return merged


def from_mapping(raw: Mapping[str, str]) -> Settings:
    """Validate already-merged key/value pairs into :class:`Settings`."""
    values = {key: value.strip() for key, value in raw.items()}
    kclkeys.reject_unknown(values, OUR_KEYS)
    kclkeys.check_values(values)
    read = {setting.key: setting.read(values) for setting in SETTINGS}
    fields = {setting.field: read[setting.key] for setting in SETTINGS if setting.field}
    settings = Settings(stream_name=_source_stream(read), **fields)
    for rule in _RULES:
        rule(settings, values)
    # Whatever command loaded them, no log line of this process may show the secrets,
    # also those read from the file (consumer.logs redacts every line).
    logs.add_secrets(*(getattr(settings, s.field) for s in SETTINGS if s.secret and s.field))
    return settings


def readme_table() -> str:
    """README "Configuration"'s key table; keys documented together share a row."""
    rows: list[tuple[list[str], str, str]] = []
    for setting in SETTINGS:
        if setting.doc:
            meaning = setting.doc.replace("{bounds}", setting.bounds or "")
            rows.append(([setting.key], _default_text(setting), meaning))
        else:
            rows[-1][0].append(setting.key)
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [
        f"| {', '.join(f'`{key}`' for key in keys)} | {default} | {meaning} |"
        for keys, default, meaning in rows
    ]
    return "\n".join(lines) + "\n"


def _default_text(setting: Setting) -> str:
    """README's default: ``default_doc``, "required", "unset", or the value as written in a file."""
    if setting.default_doc:
        return setting.default_doc
    if setting.required is not None:
        return "required"
    value = setting.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, float):
        value = f"{value:g}"
    elif isinstance(value, DeadLetterTarget):
        value = f"{value.kind.value}:{value.location}"
    return f"`{value}`"


# The rules that involve two keys, after the table: each raises ConfigError or returns.


def _source_stream(read: Mapping[str, Any]) -> str:
    """The stream named by streamArn, else by streamName; one of them is required."""
    name: str | None = read["streamArn"] or read["streamName"]
    if not name:
        raise ConfigError("streamName", "", "required (or streamArn): the Kinesis stream to read")
    return name


def _plain_http_on_purpose(settings: Settings, values: Mapping[str, str]) -> None:
    """http:// to PostHog (the API key in every body) only on loopback or with posthogAllowHttp."""
    parts = urlsplit(settings.posthog_host)
    plain = parts.scheme == "http" and not urls.is_loopback(parts.hostname or "")
    if plain and not settings.posthog_allow_http:
        raise ConfigError("posthogHost", values["posthogHost"], _PLAIN_HTTP)


def _dead_letters_elsewhere(settings: Settings, values: Mapping[str, str]) -> None:
    """A dead-letter stream is not the source stream."""
    target = settings.dead_letter
    if target.kind is DeadLetterKind.KINESIS and target.location == settings.stream_name:
        raise ConfigError(
            "deadLetter",
            values["deadLetter"],
            f"a stream other than the source stream {settings.stream_name} "
            "(the worker would read its own dead letters again as input)",
        )


def _fallback_when_fixed(settings: Settings, _values: Mapping[str, str]) -> None:
    """The fixed id of missingDistinctId = fixed is fallbackDistinctId: it must be set."""
    if (
        settings.missing_distinct_id is MissingDistinctId.FIXED
        and not settings.fallback_distinct_id
    ):
        raise ConfigError(
            "fallbackDistinctId", "", "a non-empty id, required when missingDistinctId = fixed"
        )


def _both_aws_keys_or_neither(settings: Settings, _values: Mapping[str, str]) -> None:
    """A static AWS key pair is whole, or left to the default chain."""
    if (settings.aws_access_key_id is None) != (settings.aws_secret_access_key is None):
        raise ConfigError(
            "awsSecretAccessKey" if settings.aws_access_key_id else "awsAccessKeyId",
            "",
            "set both awsAccessKeyId and awsSecretAccessKey, or neither (default AWS chain)",
        )


_RULES: tuple[Callable[[Settings, Mapping[str, str]], None], ...] = (
    _plain_http_on_purpose,
    _dead_letters_elsewhere,
    _fallback_when_fixed,
    _both_aws_keys_or_neither,
)
