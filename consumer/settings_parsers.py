"""The parsers :data:`consumer.config.SETTINGS` names, and the value types they build.

A parser is called as ``parse(key, value)`` with ``value`` stripped and never empty (an
absent or blank key takes the table's default instead). It returns the typed value or
raises :class:`~consumer.errors.ConfigError` naming ``key``, the value (never a secret, nor
a ``user:password@``) and what is allowed. Number parsers carry their bounds, which README's
table shows too. The value types they build belong to the stages that read them
(:class:`~consumer.mapping.PropertyMapping`, :class:`~consumer.deadletter.DeadLetterTarget`),
so that those stages never import the settings.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

from consumer import paths, urls
from consumer.deadletter import DeadLetterKind, DeadLetterTarget
from consumer.errors import ConfigError
from consumer.mapping import PropertyMapping

Parser = Callable[[str, str], object]

_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})
# AWS's rule for stream names (CreateStream: StreamName).
_STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
_STREAM_NAME_RULE = "a Kinesis stream name: 1 to 128 of a-z A-Z 0-9 _ . -"


def text(_key: str, value: str) -> str:
    """Any text, as written."""
    return value


def key_path(key: str, value: str) -> paths.KeyPath:
    """A nested key path such as ``properties.eventName``."""
    try:
        return paths.parse(value)
    except paths.PathSyntaxError as exc:
        raise ConfigError(key, value, str(exc)) from exc


def boolean(key: str, value: str) -> bool:
    """``true``/``yes``/``1``/``on`` or ``false``/``no``/``0``/``off``, in any case."""
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(key, lowered, "true or false")


@dataclass(frozen=True, slots=True)
class Number:
    """A number from ``low`` to ``high``."""

    low: float
    high: float

    @property
    def bounds(self) -> str:
        """The range as README and the errors show it."""
        return f"{self.low:g} to {self.high:g}"

    def __call__(self, key: str, value: str) -> float:
        """Parse ``value``."""
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not self.low <= number <= self.high:
            raise ConfigError(key, value, f"a number from {self.bounds}")
        return number


@dataclass(frozen=True, slots=True)
class WholeNumber:
    """A whole number from ``low`` to ``high``, in digits only."""

    low: int
    high: int

    @property
    def bounds(self) -> str:
        """The range as README and the errors show it."""
        return f"{self.low} to {self.high}"

    def __call__(self, key: str, value: str) -> int:
        """Parse ``value``."""
        if not value.isdecimal() or not self.low <= int(value) <= self.high:
            raise ConfigError(key, value, f"a whole number from {self.bounds}")
        return int(value)


@dataclass(frozen=True, slots=True)
class Choice:
    """One of an enumeration's values, spelled exactly."""

    kind: type[enum.StrEnum]

    def __call__(self, key: str, value: str) -> enum.StrEnum:
        """Parse ``value``."""
        try:
            return self.kind(value)
        except ValueError as exc:
            allowed = "one of " + ", ".join(member.value for member in self.kind)
            raise ConfigError(key, value, allowed) from exc


@dataclass(frozen=True, slots=True)
class Url:
    """An http(s) base URL, strictly checked (:mod:`consumer.urls`).

    ``path_ok``: a path prefix is allowed (a reverse proxy's), and a trailing ``/`` is dropped.
    """

    path_ok: bool = False

    def __call__(self, key: str, value: str) -> str:
        """Parse ``value``."""
        problem = urls.problem(value, path_ok=self.path_ok)
        if problem:
            raise ConfigError(key, urls.without_userinfo(value), problem)
        return value.rstrip("/") if self.path_ok else value


def stream_name(key: str, value: str) -> str:
    """A Kinesis stream name."""
    if not _STREAM_NAME.fullmatch(value):
        raise ConfigError(key, value, _STREAM_NAME_RULE)
    return value


def stream_arn(key: str, value: str) -> str:
    """A Kinesis stream ARN; returns the stream's name."""
    name = value.rpartition(":stream/")[2]
    if not value.startswith("arn:") or not _STREAM_NAME.fullmatch(name):
        allowed = f"arn:aws:kinesis:<region>:<account>:stream/<name>, {_STREAM_NAME_RULE}"
        raise ConfigError(key, value, allowed)
    return name


def project_api_key(key: str, value: str) -> str:
    """A PostHog project API key; a personal one (``phx_``) is shown by its kind only."""
    if value.startswith("phx_"):
        # Personal API keys are refused by capture with a 401; say so now, not at the first batch.
        raise ConfigError(key, "phx_<redacted>", "a project API key (phc_...), not a personal key")
    return value


def dead_letter(key: str, value: str) -> DeadLetterTarget:
    """``file:<path>`` or ``kinesis:<stream name>`` (not the source stream: a rule in config)."""
    kind_text, _, location = value.partition(":")
    location = location.strip()
    kinds = {kind.value: kind for kind in DeadLetterKind}
    if kind_text not in kinds or not location:
        raise ConfigError(key, value, "file:<path> (JSON lines) or kinesis:<stream name>")
    if kinds[kind_text] is DeadLetterKind.KINESIS and not _STREAM_NAME.fullmatch(location):
        raise ConfigError(key, value, f"kinesis:<stream name>, {_STREAM_NAME_RULE}")
    return DeadLetterTarget(kinds[kind_text], location)


def mappings(key: str, value: str) -> tuple[PropertyMapping, ...]:
    """``src.path:dest, other.path:dest2`` (whitespace around entries is trimmed)."""
    found: list[PropertyMapping] = []
    seen: set[str] = set()
    for entry in (part.strip() for part in paths.split_unescaped(value, ",")):
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
        found.append(PropertyMapping(source=source, destination=destination))
    return tuple(found)
