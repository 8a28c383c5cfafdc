"""Hostile JSON for the property tests of mapping and decoding: text, numbers, writers.

Shared by tests/test_mapping.py and tests/test_decoding.py, which both feed records as
a hostile producer writes them, and compare orjson's way with the json module's.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

import hypothesis
import orjson
from hypothesis import HealthCheck
from hypothesis import strategies as st

from consumer.capture_rules import DOUBLE_OVERFLOW_INT

PROPERTY_SETTINGS = hypothesis.settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Raw:
    """JSON text written verbatim by :func:`to_json`: literals json.dumps will not write."""

    text: str


# Every code point, lone surrogates included (st.characters() leaves out category Cs).
any_char = st.characters(exclude_categories=()) | st.characters(categories=["Cs"])
hostile_text = st.text(any_char, max_size=8) | st.sampled_from(
    [
        *["", " ", "\ud800", "\udfff", "\udc00\ud800", "\ud83d\ude00", "\x00", "\u2028", '"'],
        *["\\", " \t\n", "\u3000\u00a0", "\x1c", "$performance_event"],
    ]
)

raw_numbers = st.sampled_from(
    [
        "1e400",  # beyond a double: decodes to inf
        "-1e400",  # and to -inf
        "1e-400",  # underflows to 0.0, which is fine
        "-0",  # negative zero
        "NaN",  # not JSON
        "Infinity",  # not JSON
        "-Infinity",  # not JSON
        str(DOUBLE_OVERFLOW_INT),  # the first integer beyond a double
        "9" * 4301,  # past Python's integer digit limit
    ]
) | st.builds(
    lambda sign, digits: sign + "9" * digits,  # hundreds to thousands of digits
    st.sampled_from(["", "-"]),
    st.integers(min_value=300, max_value=5000),
)


def to_json(value: Any, *, ascii_only: bool) -> str:
    """JSON text of ``value`` as a hostile producer writes it.

    ``ascii_only`` writes lone surrogates as \\udXXX escapes (valid JSON, the hostile
    form); otherwise they stay raw, and the text is later encoded with surrogatepass.
    Floats keep NaN/Infinity literals; Raw text goes in as it is.
    """
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        items = (
            f"{to_json(k, ascii_only=ascii_only)}:{to_json(v, ascii_only=ascii_only)}"
            for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v, ascii_only=ascii_only) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=ascii_only)
    return json.dumps(value)  # None, booleans, ints (all under 4300 digits), floats


# orjson reads and writes where it is provably the json module; these compare the two.


class _NoOrjson:
    """Stands in for orjson: refuses everything, so every record takes the json module's way."""

    JSONDecodeError = orjson.JSONDecodeError
    JSONEncodeError = orjson.JSONEncodeError

    @staticmethod
    def loads(_data: bytes) -> Any:
        raise orjson.JSONDecodeError("refused", "", 0)

    @staticmethod
    def dumps(_value: Any) -> bytes:
        raise orjson.JSONEncodeError("refused")


@contextlib.contextmanager
def json_module_only() -> Iterator[None]:
    """Map as before orjson: the json module reads and writes everything.

    orjson's own functions are replaced, not the package's name for the module: code
    compiled by mypyc (consumer/hot_path.py) holds on to the module it imported, but
    looks up its functions at each call.
    """
    with mock.patch.multiple(orjson, loads=_NoOrjson.loads, dumps=_NoOrjson.dumps):
        yield
