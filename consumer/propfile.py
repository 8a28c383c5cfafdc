r"""Read and write Java ``.properties`` files, the format the KCL daemon reads.

Our settings live in the same file as KCL's (the daemon ignores keys it does not
know), so both sides must agree on the syntax: ``key = value``, ``key: value`` or
``key value``; ``#`` and ``!`` comment lines; a trailing backslash continues a line.
Only the subset of escapes a person writes by hand is decoded (``\\t \\n \\\\ \\=
\\: \\#``); ``\\uXXXX`` is decoded too, as Java does.
"""

from __future__ import annotations

import re
from pathlib import Path

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_REVERSE_ESCAPES = {value: key for key, value in _ESCAPES.items()}
_LINE_END = re.compile(r"\r\n|\r|\n")


def parse_properties(text: str) -> dict[str, str]:
    """Parse properties text into an ordered dict; a later duplicate key wins, as in Java."""
    result: dict[str, str] = {}
    for logical in _logical_lines(text):
        end = _key_end(logical)
        if end is None:
            key, value = logical, ""
        else:
            key = logical[:end]
            rest = logical[end:].lstrip(" \t\f")
            if rest[:1] in ("=", ":"):
                rest = rest[1:].lstrip(" \t\f")
            value = rest
        result[_unescape(key)] = _unescape(value)
    return result


def read_properties(path: Path) -> dict[str, str]:
    """Read a properties file (UTF-8, as KCL 3 reads it)."""
    return parse_properties(path.read_text(encoding="utf-8"))


def format_properties(values: dict[str, str]) -> str:
    """Write ``values`` so that :func:`parse_properties` (and Java) read them back unchanged."""
    lines = [
        f"{_escape(key, is_key=True)} = {_escape(value, is_key=False)}"
        for key, value in values.items()
    ]
    return "\n".join(lines) + "\n"


def _key_end(line: str) -> int | None:
    """Index of the first unescaped separator (``=``, ``:`` or whitespace), if any."""
    index = 0
    while index < len(line):
        char = line[index]
        if char == "\\":
            index += 2
            continue
        if char in "=: \t\f":
            return index
        index += 1
    return None


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    # Java ends lines only at \n, \r and \r\n (str.splitlines also splits on \x1c-\x1e, ...).
    for raw in _LINE_END.split(text):
        line = raw.lstrip(" \t\f")
        if not pending and (not line or line[0] in "#!"):
            continue
        if _ends_with_continuation(line):
            pending += line[:-1]
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def _ends_with_continuation(line: str) -> bool:
    trailing = len(line) - len(line.rstrip("\\"))
    return trailing % 2 == 1


def _unescape(text: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char != "\\" or index + 1 == len(text):
            out.append(char)
            index += 1
            continue
        nxt = text[index + 1]
        if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[index + 2 : index + 6]):
            out.append(chr(int(text[index + 2 : index + 6], 16)))
            index += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        index += 2
    return "".join(out)


def _escape(text: str, *, is_key: bool) -> str:
    out: list[str] = []
    for position, char in enumerate(text):
        if char == "\\":
            out.append("\\\\")
        elif char in "\t\n\r\f":
            out.append("\\" + _REVERSE_ESCAPES[char])
        elif (is_key and char in " =:#!") or (not is_key and position == 0 and char == " "):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)
