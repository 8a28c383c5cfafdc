"""Record bytes -> JSON object: json's reading, by orjson where that is provably the same.

read and decode against the json module alone, on arbitrary texts and at every edge
where the two readers differ; what read calls plain; read_plainly and plain_values,
which the mapper uses when it sends only some values of a record.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer import capture_rules, decoding, paths
from consumer.errors import RecordError
from tests.hostile import PROPERTY_SETTINGS, any_char, json_module_only, raw_numbers, to_json
from tests.support import deep


def typed(value: Any) -> list[str]:
    """``value`` as tokens showing every type and key order (1 == 1.0 == True in Python).

    Iterative, so that it can walk what nests as deep as the decoders read.
    """
    tokens: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            tokens.append(f"dict:{len(item)}")
            for key, child in reversed(item.items()):
                stack.extend((child, ("key", key)))
        elif isinstance(item, list):
            tokens.append(f"list:{len(item)}")
            stack.extend(reversed(item))
        else:
            tokens.append(f"{type(item).__name__}:{item!r}")
    return tokens


def decoded(data: bytes) -> list[str]:
    try:
        return typed(decoding.decode(data))
    except RecordError as exc:
        return [exc.reason, exc.detail]


json_texts = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**66).map(lambda n: n * (-1) ** (n % 2))
    | st.floats()
    | st.text(any_char, max_size=6),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(any_char, max_size=4), children, max_size=4)
    ),
    max_leaves=16,
).map(lambda value: to_json(value, ascii_only=True))


@PROPERTY_SETTINGS
@given(
    text=json_texts
    | raw_numbers
    | st.text(st.sampled_from('{}[],:"\\ -.0123456789eEtrufalsn'), max_size=40)
    | st.integers(min_value=250, max_value=1100).map(deep)
)
def test_decode_reads_what_the_json_module_reads(text: str) -> None:
    """Numbers at every edge, nesting, surrogates, broken JSON: the same values, or the same refusal."""
    data = text.encode("utf-8", "surrogatepass")
    fast = decoded(data)
    with json_module_only():
        assert fast == decoded(data)


@pytest.mark.parametrize(
    "text",
    [
        '{"n": 18446744073709551616}',  # 2**64: orjson would read a float
        '{"n": -9223372036854775809}',  # below i64
        '{"n": 9223372036854775807, "m": 18446744073709551615}',  # i64 and u64 limits
        '{"s": "1234567890123456789"}',  # 19 digits in a string: read by json, same result
        '{"d": ' + deep(300) + "}",  # past FAST_MAX_BRACKETS: read by json
        '{"f": 1e-05, "g": 2.5e-300, "h": 1e16}',
        '{"s": "\\ud800"}',  # lone surrogate escape: orjson refuses it
    ],
)
def test_decode_edges(text: str) -> None:
    """Where orjson and json would differ, decode gives json's values."""
    assert decoded(text.encode()) == typed(json.loads(text))


@pytest.mark.parametrize("levels", [900, 950, 990, 1010, 1023])
def test_nesting_the_json_module_cannot_read_is_refused_as_before(levels: int) -> None:
    """Near Python's recursion limit json gives up where orjson would not: json decides."""
    data = ('{"d": ' + deep(levels) + "}").encode()
    fast = decoded(data)
    with json_module_only():
        assert fast == decoded(data)


# Numbers spelled every way JSON allows, around where check_sendable has work to do.
number_spellings = st.builds(
    lambda sign, whole, fraction, exponent: f"{sign}{whole}{fraction}{exponent}",
    st.sampled_from(["", "-"]),
    st.sampled_from(["0", "1", "9", "12345678901234567", "123456789012345678"]),
    st.sampled_from(["", ".0", ".00001", ".0001", ".5", ".000099", ".00000"]),
    st.sampled_from(["", "e5", "e-5", "E-5", "e+3", "E-400", "e-4", "e308", "e-0", "E0"]),
)


@PROPERTY_SETTINGS
@given(
    inner=json_texts
    | number_spellings
    | st.lists(number_spellings, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
    | st.integers(min_value=115, max_value=135).map(deep),
    include_all=st.booleans(),
)
def test_plain_records_need_no_number_or_depth_check(inner: str, include_all: bool) -> None:
    """When read() calls a record plain, check_sendable would find nothing, however it is mapped."""
    try:
        document, plain = decoding.read(('{"v": ' + inner + "}").encode())
    except RecordError:
        return
    if not plain:
        return
    # All of the record, or one value of it mapped under "properties".
    properties = dict(document) if include_all else {"mapped": document["v"]}
    assert capture_rules.check_sendable(properties) == capture_rules.NOTHING_TO_ADJUST


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ('{"a": 1, "b": [2.5, "x"], "c": {"d": true}}', True),  # the common record
        ('{"f": 0.00001}', False),  # a small float, positional
        ('{"f": 1e-5}', False),  # a small float, exponent
        ('{"f": 1E-5}', False),  # upper case exponent
        ('{"s": "see 1e-5"}', False),  # the spelling in a string: checked, to be safe
        ('{"f": 1e5}', True),  # a positive exponent cannot make a small float
        ('{"n": 123456789012345678}', True),  # 18 digits: within 64 bits
        ('{"n": 1234567890123456789}', False),  # 19 digits: read by json, checked
        ('{"d": ' + deep(capture_rules.PLAIN_MAX_CONTAINERS - 1) + "}", True),  # at the bound
        ('{"d": ' + deep(capture_rules.PLAIN_MAX_CONTAINERS) + "}", False),  # one past it
    ],
)
def test_plain_records(text: str, plain: bool) -> None:
    """plain: the record's text alone shows there is no number or nesting to check."""
    assert decoding.read(text.encode())[1] is plain


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ('{"a": 1}', True),  # the common record
        ("[1, 2]", False),  # no object: read decides (not_object)
        ('{"a": NaN}', False),  # orjson refuses: read decides (not_json)
        ('{"s": "\\ud800"}', False),  # a lone surrogate escape: orjson refuses
        ('{"p": "' + "[" * 300 + '"}', True),  # under 512 bytes: cannot nest 256 deep
        ('{"p": "' + "[" * 300 + "x" * 300 + '"}', False),  # over 512, 256+ brackets: counted
        ('{"d": ' + deep(200) + "}", True),  # over 512 bytes, under 256 brackets
    ],
)
def test_read_plainly(text: str, read: bool) -> None:
    """orjson's reading where it can differ from json's only in wide integers; else None."""
    document = decoding.read_plainly(text.encode())
    assert (document is not None) is read
    if document is not None:
        assert typed(document) == typed(json.loads(text))


def test_read_plainly_leaves_gzip_to_read() -> None:
    """A gzip record is inflated (and its limit kept) by read alone."""
    assert decoding.read_plainly(gzip.compress(b'{"a": 1}', mtime=0)) is None


@pytest.mark.parametrize(
    ("values", "plain"),
    [
        (("text", 1, True, None, paths.MISSING, 1.5, -2e18), True),  # what needs no check
        ((2**64 - 1,), True),  # orjson's largest integer
        ((9.3e18,), False),  # a float that may be orjson's reading of a wide integer
        ((-9.223372036854775808e18,), False),  # -2**63 - 1 as orjson reads it
        ((9.9e-5,), False),  # a small float: written differently by json and orjson
        ((0.0,), False),  # zero: check_sendable decides
        (([1],), False),  # an array: its values are not looked at here
        (({"k": 1},), False),  # an object, likewise
    ],
)
def test_plain_values(values: tuple[Any, ...], plain: bool) -> None:
    """Scalars that are json's reading as they are and need no check; anything else not."""
    assert decoding.plain_values(values) is plain


@pytest.mark.parametrize(
    ("text", "run"),
    [
        ('{"n": 123456789012345678}', False),  # 18 digits
        ('{"n": 1234567890123456789}', True),  # 19 digits
        ('{"s": "id 1234567890123456789"}', True),  # in a string: found, to be safe
        ('{"a": [123456789, 1234567890]}', False),  # digits apart
    ],
)
def test_has_long_digit_run(text: str, run: bool) -> None:
    assert decoding.has_long_digit_run(text.encode()) is run


@PROPERTY_SETTINGS
@given(
    values=st.lists(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=3),
        max_size=6,
    )
)
def test_plain_values_need_no_check(values: list[Any]) -> None:
    """What plain_values accepts, check_sendable finds nothing in, however it is mapped."""
    if decoding.plain_values(values):
        properties = {str(index): value for index, value in enumerate(values)}
        assert capture_rules.check_sendable(properties) == capture_rules.NOTHING_TO_ADJUST


# --- How deep a record nests, counted before json reads it -----------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"{}", 1),  # one object
        (b"1", 0),  # no container
        (b'{"a": [1, {"b": [2]}]}', 4),  # mixed
        (b'{"s": "[[[{{{"}', 1),  # brackets in a string do not count
        (b'{"s": "\\"[[["}', 1),  # nor after an escaped quote inside it
        (b'{"s": "\\\\"}[[', 2),  # an escaped backslash ends before the quote: the string ends
        (b'{"s": "[[[', 1),  # an unterminated string: nothing after it counts
        (b"[[[[", 4),  # unclosed: counted as opened
        (b"]]]]", 0),  # closing only
    ],
)
def test_nesting_counts_containers_outside_strings(text: bytes, depth: int) -> None:
    assert decoding.nesting(text) == depth


json_documents = st.recursive(
    st.none() | st.integers() | st.text(st.sampled_from('[]{}"\\ ab'), max_size=6),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(st.sampled_from('[]{}"\\ ab'), max_size=4), children, max_size=3)
    ),
    max_leaves=30,
)


def depth_of(value: Any) -> int:
    """How deep ``value``'s lists and dicts nest (the reference for decoding.nesting)."""
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


@PROPERTY_SETTINGS
@given(document=json_documents, ascii_only=st.booleans())
def test_nesting_is_the_documents_depth(document: Any, ascii_only: bool) -> None:
    """On any JSON text (strings full of brackets, quotes and backslashes), the true depth."""
    text = json.dumps(document, ensure_ascii=ascii_only).encode()
    assert decoding.nesting(text) == depth_of(document)


@pytest.mark.parametrize(
    ("levels", "reason"),
    [
        (decoding.MAX_RECORD_DEPTH - 1, None),  # with the record's own object: the limit
        (decoding.MAX_RECORD_DEPTH, "too_deep"),  # one past it
        (975, "too_deep"),  # where json gave up, depending on the caller and the build
    ],
)
def test_a_record_may_nest_max_record_depth_levels(levels: int, reason: str | None) -> None:
    """Decided by counting, before json reads the text: the same for every caller and build."""
    data = ('{"d": ' + deep(levels) + "}").encode()
    if reason is None:
        assert typed(decoding.read(data)[0]) == typed(json.loads(data))
        return
    with pytest.raises(RecordError) as caught:
        decoding.read(data)
    assert caught.value.reason == reason
    assert caught.value.detail == (
        f"nests {levels + 1} levels deep; a record may nest {decoding.MAX_RECORD_DEPTH} "
        f"(PostHog's capture reads {capture_rules.MAX_EVENT_DEPTH} per event)"
    )


@pytest.mark.parametrize(
    ("start", "reason"),
    [
        (b'{"a":' + b"[" * 600 + b'"', "too_deep"),  # 601 levels before the string
        (b'{"a":"' + b"[" * 600, "not_json"),  # the brackets in the string: json refuses it
    ],
)
def test_an_unterminated_string_of_escaped_quotes_is_counted_in_one_pass(
    start: bytes, reason: str
) -> None:
    """A 2 KB gzip record of 2 MiB: a string of \\" that never ends, past 600 brackets.

    Counted by a pattern that backtracks, it took hours (the process frozen, the GIL
    held); in one pass, milliseconds. Run in a process of its own, so that a regression
    fails at the timeout instead of hanging the suite.
    """
    program = (
        "import gzip, sys; from consumer.decoding import read; "
        "from consumer.errors import RecordError\n"
        "data = gzip.compress(sys.stdin.buffer.read() + b'\\\\\"' * 1_000_000, mtime=0)\n"
        "assert len(data) < 4096, len(data)\n"
        "try:\n    read(data)\nexcept RecordError as exc:\n    print(exc.reason)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=Path(__file__).resolve().parents[1],
        input=start,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == reason
