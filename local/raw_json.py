"""Slicing the JSON text of each event out of a capture body, exactly as it was sent.

The PostHog stand-in keeps each accepted event's text as sent (``GET /_raw``, the
record file; see :mod:`local.standin`) so the tests can check the bytes a client wrote,
not only what :func:`json.loads` makes of them.
"""

from __future__ import annotations

import json

# What JSON counts as whitespace between tokens (RFC 8259).
JSON_WHITESPACE = " \t\n\r"


def raw_batch(text: str) -> list[str]:
    """The text of each element of the top-level ``batch`` array, exactly as sent.

    ``text`` is known to be a JSON object; each member is stepped over with
    :meth:`json.JSONDecoder.raw_decode`, nothing is re-serialised. A repeated
    ``batch`` key counts last, as it does for :func:`json.loads`.
    """
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0) + 1  # past "{"
    found: list[str] = []
    position = _skip_space(text, position)
    if text[position] == "}":
        return found
    while True:
        key, position = decoder.raw_decode(text, position)
        position = _skip_space(text, _skip_space(text, position) + 1)  # past ":"
        if key == "batch" and text[position] == "[":
            found, position = _raw_array(text, position, decoder)
        else:
            _, position = decoder.raw_decode(text, position)
        position = _skip_space(text, position)
        if text[position] == "}":
            return found
        position = _skip_space(text, position + 1)  # past ","


def _raw_array(text: str, position: int, decoder: json.JSONDecoder) -> tuple[list[str], int]:
    """The text of each element of the array starting at ``position``; and the end."""
    items: list[str] = []
    position = _skip_space(text, position + 1)  # past "["
    if text[position] == "]":
        return items, position + 1
    while True:
        _, end = decoder.raw_decode(text, position)
        items.append(text[position:end])
        position = _skip_space(text, end)
        if text[position] == "]":
            return items, position + 1
        position = _skip_space(text, position + 1)  # past ","


def _skip_space(text: str, position: int) -> int:
    while text[position] in JSON_WHITESPACE:
        position += 1
    return position
