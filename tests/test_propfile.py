"""The .properties reader agrees with Java's format on what people write."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.propfile import format_properties, parse_properties


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a = b", {"a": "b"}),  # spaces around '='
        ("a=b", {"a": "b"}),  # no spaces
        ("a: b", {"a": "b"}),  # ':' separator
        ("a b", {"a": "b"}),  # whitespace separator
        ("# c\n! c\na = 1", {"a": "1"}),  # both comment styles
        ("a = x, \\\n    y", {"a": "x, y"}),  # continuation line, leading space dropped
        ("a = c:\\\\d", {"a": "c:\\d"}),  # escaped backslash
        ("a = \\u00e9", {"a": "é"}),  # unicode escape
        ("a = 1\na = 2", {"a": "2"}),  # the last duplicate wins, as in Java
        ("key.with\\:colon = v", {"key.with:colon": "v"}),  # escaped separator in a key
        ("empty =", {"empty": ""}),  # empty value
    ],
)
def test_parse(text: str, expected: dict[str, str]) -> None:
    """Each line form reads as Java would read it."""
    assert expected == parse_properties(text)


@given(
    st.dictionaries(
        st.text(
            st.characters(exclude_categories=["Cs", "Zl", "Zp", "Cc"]), min_size=1, max_size=10
        ),
        st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
        max_size=5,
    )
)
def test_format_round_trips(values: dict[str, str]) -> None:
    """format_properties output parses back to the same keys and values."""
    assert values == parse_properties(format_properties(values))
