"""Path syntax and lookup: tables for the rules, Hypothesis for round trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer import paths

DOC: dict[str, Any] = {
    "properties": {"eventName": "signup", "user.email": "a@b.c", "0": "zero-key"},
    "items": [{"sku": "A1"}, {"sku": "B2"}],
    "weird:key": 1,
    "back\\slash": 2,
    "nothing": None,
}


class TestParse:
    @pytest.mark.parametrize(
        ("text", "segments"),
        [
            ("event", ("event",)),  # a top-level key
            ("properties.eventName", ("properties", "eventName")),  # nested, the seed's form
            ("items.0.sku", ("items", "0", "sku")),  # array index
            ("properties.user\\.email", ("properties", "user.email")),  # escaped dot in a key
            ("weird\\:key", ("weird:key",)),  # escaped colon (mappings split on ':')
            ("back\\\\slash", ("back\\slash",)),  # escaped backslash
            ("  spaced ", ("  spaced ",)),  # spaces inside a key are the key's own
        ],
    )
    def test_valid(self, text: str, segments: tuple[str, ...]) -> None:
        """Valid paths parse into their segments."""
        assert segments == paths.parse(text).segments

    @pytest.mark.parametrize(
        "text",
        [
            "",  # nothing at all
            "a..b",  # empty middle segment
            ".a",  # leading dot
            "a.",  # trailing dot
            "a\\",  # dangling escape
            "a\\x",  # unknown escape
        ],
    )
    def test_invalid(self, text: str) -> None:
        """Invalid paths raise PathSyntaxError, never anything else."""
        with pytest.raises(paths.PathSyntaxError):
            paths.parse(text)


class TestLookup:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("properties.eventName", "signup"),  # nested object
            ("items.1.sku", "B2"),  # array index
            ("properties.0", "zero-key"),  # digits as an object key
            ("properties.user\\.email", "a@b.c"),  # key containing a dot
            ("weird\\:key", 1),  # key containing a colon
            ("nothing", None),  # JSON null is a value, not MISSING
        ],
    )
    def test_found(self, text: str, expected: Any) -> None:
        """Present values are returned with their JSON type."""
        assert expected == paths.parse(text).lookup(DOC)

    @pytest.mark.parametrize(
        "text",
        [
            "absent",  # missing top-level key
            "properties.absent",  # missing nested key
            "items.7.sku",  # index out of range
            "items.x",  # non-numeric index into an array
            "properties.eventName.deeper",  # descending into a string
            "items.-1",  # negative indexes are not supported
        ],
    )
    def test_missing(self, text: str) -> None:
        """Absent values are MISSING, never an exception."""
        assert paths.parse(text).lookup(DOC) is paths.MISSING


segment = st.text(min_size=1, max_size=12)


@given(st.lists(segment, min_size=1, max_size=6))
def test_format_then_parse_round_trips(segments: list[str]) -> None:
    """Any list of non-empty keys survives format_path -> parse unchanged."""
    assert tuple(segments) == paths.parse(paths.format_path(segments)).segments


@given(st.text(max_size=40))
def test_parse_raises_only_path_syntax_error(text: str) -> None:
    """Arbitrary text either parses or raises PathSyntaxError."""
    try:
        parsed = paths.parse(text)
    except paths.PathSyntaxError:
        return
    assert paths.parse(paths.format_path(parsed.segments)) == paths.KeyPath(
        paths.format_path(parsed.segments), parsed.segments
    )


@given(
    st.lists(segment, min_size=1, max_size=4),
    st.recursive(
        st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)
    ),
)
def test_lookup_finds_what_was_placed(segments: list[str], value: Any) -> None:
    """A value nested under keys is found again by the path of those keys."""
    document: Any = value
    for key in reversed(segments):
        document = {key: document}
    assert value == paths.parse(paths.format_path(segments)).lookup(document)


class _Subclass(dict[str, Any]):
    """A dict subclass: no decoder makes one, but walk reads it as an object."""


# Keys from a small alphabet, so that paths and documents often meet part of the way.
_key = st.sampled_from(["a", "b", "0", "1"])
_documents = st.recursive(
    st.none() | st.integers() | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(_key, inner, max_size=3)
        | st.dictionaries(_key, inner, max_size=3).map(_Subclass)
    ),
    max_leaves=12,
)


@given(st.lists(_key, min_size=1, max_size=5), _documents)
def test_every_lookup_is_the_walk(segments: list[str], document: Any) -> None:
    """The unrolled lookups (one to three keys) return what the general walk returns.

    Values found, missing, arrays met by a key, array indexes, dict subclasses, and
    documents that are no object at all.
    """
    path = paths.parse(paths.format_path(segments))
    assert path.lookup(document) == paths.walk(segments, document)


@pytest.mark.parametrize(
    ("text", "document", "expected"),
    [
        ("a", {"a": 1}, 1),  # one key, found
        ("a", {"b": 1}, paths.MISSING),  # one key, missing
        ("a", [1], paths.MISSING),  # one key on an array
        ("a.b", {"a": {"b": None}}, None),  # two keys, JSON null found
        ("a.b", {"a": "text"}, paths.MISSING),  # two keys, a string on the way
        ("a.b", {"a": _Subclass(b=2)}, 2),  # two keys, a dict subclass on the way
        ("a.b.c", {"a": {"b": {"c": [3]}}}, [3]),  # three keys
        ("a.b.c", {"a": {"b": 5}}, paths.MISSING),  # three keys, a number on the way
        ("a.b.c", {"a": {"b": _Subclass(c=1)}}, 1),  # three keys, a dict subclass last
        ("a.b.c", {"a": _Subclass(b={"c": 2})}, 2),  # three keys, a dict subclass second
        ("a.b.c.d", {"a": {"b": {"c": {"d": 4}}}}, 4),  # four keys: the general walk
        ("a.0.c", {"a": [{"c": 7}]}, 7),  # an index: the general walk
    ],
)
def test_lookup_table(text: str, document: Any, expected: Any) -> None:
    """Each unrolled length and the general walk, found and not found."""
    assert paths.parse(text).lookup(document) == expected
