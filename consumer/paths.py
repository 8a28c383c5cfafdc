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

from dataclasses import dataclass
from typing import Any

_ESCAPE = "\\"
_SEPARATOR = "."
_ESCAPABLE = frozenset({_ESCAPE, _SEPARATOR, ":"})


class PathSyntaxError(ValueError):
    """The text is not a valid path; the message says where and why."""


MISSING: Any = object()
"""Sentinel returned by :meth:`KeyPath.lookup` for an absent value (``None`` is JSON null)."""


@dataclass(frozen=True, slots=True)
class KeyPath:
    """A parsed path; ``text`` is what the user wrote, for messages."""

    text: str
    segments: tuple[str, ...]

    def lookup(self, document: Any) -> Any:
        """Return the value at this path, or ``MISSING`` when any step does not exist."""
        current = document
        for segment in self.segments:
            if type(current) is dict or isinstance(current, dict):  # JSON objects: dict itself
                current = current.get(segment, MISSING)
                if current is MISSING:
                    return MISSING
            elif isinstance(current, list) and segment.isascii() and segment.isdigit():
                index = int(segment)
                if index >= len(current):
                    return MISSING
                current = current[index]
            else:
                return MISSING
        return current


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
