"""Record bytes -> the JSON object they hold: what the json module reads, mostly by orjson.

Two readings, for the mapper:

* :func:`read`, for any record: the json module's reading, by orjson where the text
  proves it the same, with whether the text proves there is nothing for
  capture_rules.check_sendable to find (``plain``).
* :func:`read_plainly`, for a mapper that sends only some values of the record (no
  ``includeAllProperties``): orjson's reading, where it can differ from json's only in
  integers beyond 64 bits. The mapper then looks at the values it takes
  (:func:`plain_values`) instead of at the whole text: cheaper, for the same events.

A record that cannot be read raises :class:`~consumer.errors.RecordError` with its reason
(``bad_gzip``, ``not_utf8``, ``not_json``, ``not_object``, ``too_deep``,
``number_out_of_range``).
"""

from __future__ import annotations

import array
import itertools
import json
import re
import sys
import zlib
from collections.abc import Iterable
from typing import Any

import orjson

from consumer import capture_rules, paths
from consumer.errors import RecordError

# A gzip record may not inflate past this; guards against decompression bombs. A Kinesis
# record is at most 1 MiB and an event at most capture_rules.MAX_EVENT_BYTES, so a record
# that inflates past twice the larger is no event we could send. At some 27 bytes of
# Python objects per byte of JSON (see mapping.Mapper.map), 2 MiB of "[],[],..." costs
# about 55 MB to decode.
MAX_DECOMPRESSED_BYTES = 2 * 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
# Records with at least this many '[' and '{' (in strings too) are read by the json module
# alone: such a record may nest as deep, and json's reading of deep nesting depends on the
# recursion limit (1000 frames in all), where orjson's does not. Far above what capture
# reads (capture_rules.MAX_EVENT_DEPTH, 125) and far below where json gives up.
FAST_MAX_BRACKETS = 256
# A run of this many digits is where an integer beyond 64 bits could be (2**63 has 19
# digits), which orjson would read as a float; such records are read by json alone.
_LONG_INTEGER_DIGITS = 19
_LONG_DIGIT_RUN = b"0" * _LONG_INTEGER_DIGITS
# All looked for in one copy: every digit becomes "0", every "{" a "[", every "E" an "e".
_MARKS = bytes.maketrans(b"0123456789{E", b"0000000000[e")
# How a float with 0 < |x| < 1e-4 is spelled in JSON: with a negative exponent (looked
# for in the marked copy, see read) or positionally (in the text itself).
_SMALL_EXPONENT = b"0e-"
_SMALL_POSITIONAL = b"0.0000"
# Module globals rather than capture_rules' attributes: each is read for every record.
_PLAIN_MAX_CONTAINERS = capture_rules.PLAIN_MAX_CONTAINERS
_SMALL_FLOAT_LIMIT = capture_rules.SMALL_FLOAT_LIMIT
# How deep a record may nest, counted before the json module reads it. json's C decoder
# gives up near Python's recursion limit (1000 frames), less the caller's stack, and that
# differs between callers (a shard process, `preview`, the tests) and between the
# interpreted and the compiled build (consumer/hot_path.py: compiled functions are no
# Python frames): a fixed limit makes the outcome the record's alone. Far above what
# capture reads (capture_rules.MAX_EVENT_DEPTH, 125) and far below where json gives up
# from any caller here.
MAX_RECORD_DEPTH = 512
# A JSON string, escapes included; an unterminated one runs to the end of the text (json
# reads nothing after it). Possessive, and matching wherever it starts: one pass over the
# text, whatever it holds (a plain regular expression retried an unterminated string
# full of \" at each of its quotes: hours for one 2 MiB record).
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
# Everything but the brackets, deleted; then each opening one +1, each closing one -1.
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
# A text shorter than this cannot nest FAST_MAX_BRACKETS deep: each level opens and closes.
_SURELY_SHALLOW_BYTES = 2 * FAST_MAX_BRACKETS
# orjson reads every integer beyond 64 bits as a float at least this large (-2**63 - 1
# rounds to -2**63); a smaller float is no such integer.
_WIDE_INTEGER_FLOATS = 2.0**63


def decode(data: bytes) -> dict[str, Any]:
    """Decode record bytes (optionally gzip-compressed) into a JSON object."""
    return read(data)[0]


# A record's JSON object, and whether its text alone proves that capture_rules.check_sendable
# of any properties made from it returns NOTHING_TO_ADJUST (see read): the mapper then
# skips that walk over every value. A plain tuple: a NamedTuple costs 0.6 µs to build.
Read = tuple[dict[str, Any], bool]


def read(data: bytes) -> Read:
    """Decode record bytes (optionally gzip-compressed) into a JSON object.

    What the json module reads, by orjson (about 3x faster) where that is provably the
    same, else by the json module itself, whose refusals give each reason and detail.

    orjson and json read JSON to the same values (types, key order, last duplicate key
    wins, floats correctly rounded) but for: an integer beyond 64 bits (a float in
    orjson); nesting json cannot read (RecursionError near 1000 levels, less the caller's
    stack; orjson reads 1024); and what orjson refuses (lone surrogate escapes, NaN,
    numbers beyond a double, a byte order mark, invalid JSON or UTF-8), which json may
    read or refuse in words of its own. So orjson reads only text without a run of 19
    digits (2**63 has 19) and with fewer than :data:`FAST_MAX_BRACKETS` brackets, and
    only if it reads it at all; having read it, the text is valid UTF-8 (orjson checks
    as strictly as Python's codec). (tests/test_decoding.py compares the two on
    arbitrary records.) Before the json module reads a text, one nested more than
    :data:`MAX_RECORD_DEPTH` levels is refused (``too_deep``), so that how deep it may
    nest is the record's alone, not the caller's stack's.

    Such a document is ``plain`` when its text also proves what check_sendable would
    find: no integer beyond 64 bits (no 19-digit run), nothing infinite or NaN (orjson
    refuses them), no float with 0 < |x| < 1e-4 (such a literal is spelled with a
    negative exponent, "<digit>e-", or positionally, "0.0000"), and no nesting beyond
    capture's (few enough brackets).
    """
    if data.startswith(GZIP_MAGIC):
        data = _gunzip(data)
    # find() < 0 rather than "not in" throughout: the same search, some 70 ns cheaper.
    marked = data.translate(_MARKS)
    brackets = marked.count(b"[")
    if brackets < FAST_MAX_BRACKETS and marked.find(_LONG_DIGIT_RUN) < 0:
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        else:
            if type(document) is not dict:
                raise _not_object(document)
            plain = (
                brackets <= _PLAIN_MAX_CONTAINERS
                and marked.find(_SMALL_EXPONENT) < 0
                and data.find(_SMALL_POSITIONAL) < 0
            )
            return document, plain
    try:
        text = data.decode("utf-8")  # strict, as orjson reads: the same not_utf8 either way
    except UnicodeDecodeError as exc:
        raise RecordError("not_utf8", f"byte {exc.start} is not valid UTF-8") from exc
    if brackets > MAX_RECORD_DEPTH and (depth := nesting(data)) > MAX_RECORD_DEPTH:
        raise RecordError(
            "too_deep",
            f"nests {depth} levels deep; a record may nest {MAX_RECORD_DEPTH} "
            f"(PostHog's capture reads {capture_rules.MAX_EVENT_DEPTH} per event)",
        )
    document = _json_loads(text)
    if not isinstance(document, dict):
        raise _not_object(document)
    return document, False


def nesting(data: bytes) -> int:
    """How deep the arrays and objects of ``data`` nest (brackets inside strings not counted).

    Of any text: nothing after an unterminated string counts. One pass of C-speed steps
    (a regular expression, ``translate``, ``accumulate``): about 40 ms for 1 MiB of
    brackets, 20 ms for 1 MiB of escaped quotes.
    """
    steps = array.array("b", _STRING.sub(b"", data).translate(_STEPS, _NOT_BRACKETS))
    return max(0, max(itertools.accumulate(steps), default=0))


def _not_object(document: Any) -> RecordError:
    return RecordError("not_object", f"top-level JSON is {type(document).__name__}, not an object")


def _json_loads(text: str) -> Any:
    """The json module's reading of ``text``; its refusals become RecordErrors with reasons."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise RecordError("not_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except _NotJsonConstantError as exc:
        raise RecordError("not_json", str(exc)) from exc
    except RecursionError as exc:
        # The C decoder counts nesting against Python's recursion limit (about 1000,
        # less what is on the stack): far deeper than capture_rules.MAX_EVENT_DEPTH, so
        # such a record gets the same reason as one that decodes but nests too deep to send.
        raise RecordError(
            "too_deep", f"nesting exceeds what Python's JSON decoder reads ({exc})"
        ) from exc
    except ValueError as exc:
        # The decoder's only other ValueError: an integer literal longer than Python reads
        # (sys.get_int_max_str_digits(), 4300 by default, against CVE-2020-10735). Such a
        # number is far beyond a double, and the record cannot be read at all.
        raise RecordError(
            "number_out_of_range",
            f"an integer has more than {sys.get_int_max_str_digits()} digits, beyond a double",
        ) from exc


def read_plainly(data: bytes) -> dict[str, Any] | None:
    """The orjson reading of ``data``, if it is the json module's but for wide integers; or None.

    The values a mapper takes from it are json's reading of them if :func:`plain_values`
    accepts them, or if the text has no run of 19 digits (:func:`has_long_digit_run`):
    orjson reads what json reads but for integers beyond 64 bits (floats of 2**63 or
    more in orjson), nesting json cannot read (a text under :data:`_SURELY_SHALLOW_BYTES`
    cannot nest :data:`FAST_MAX_BRACKETS` deep; a longer one is counted, as :func:`read`
    counts) and what orjson refuses. None for a gzip record, nesting counted too deep,
    and what orjson refuses or reads as no object: :func:`read` then reads it, and
    names the reason if it cannot. (tests/test_mapping.py compares the events with
    json's at every edge.)
    """
    if data.startswith(GZIP_MAGIC):
        return None
    if (
        len(data) >= _SURELY_SHALLOW_BYTES
        and data.count(b"[") + data.count(b"{") >= FAST_MAX_BRACKETS
    ):
        return None
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return document if type(document) is dict else None


def plain_values(values: Iterable[Any]) -> bool:
    """Whether these values of a :func:`read_plainly` document are json's reading, as they are.

    And need no check by capture_rules.check_sendable: text, booleans, null, absent
    values (``paths.MISSING``), integers (orjson's are within 64 bits) and floats with
    1e-4 <= |x| < 2**63. Anything else (an array or object, a smaller float, a float
    that may be a wide integer) makes it False: the mapper then checks more.
    """
    for value in values:
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None or value is paths.MISSING:
            continue
        if kind is float and _SMALL_FLOAT_LIMIT <= abs(value) < _WIDE_INTEGER_FLOATS:
            continue
        return False
    return True


def has_long_digit_run(data: bytes) -> bool:
    """Whether the text has a run of 19 digits, where an integer beyond 64 bits could be."""
    return data.translate(_MARKS).find(_LONG_DIGIT_RUN) >= 0


def _gunzip(data: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_DECOMPRESSED_BYTES + 1)
    except zlib.error as exc:
        raise RecordError("bad_gzip", f"gzip payload is corrupt: {exc}") from exc
    if len(out) > MAX_DECOMPRESSED_BYTES:
        raise RecordError("bad_gzip", f"gzip payload inflates past {MAX_DECOMPRESSED_BYTES} bytes")
    if not inflater.eof:
        raise RecordError("bad_gzip", "gzip payload is truncated")
    return out


class _NotJsonConstantError(ValueError):
    """NaN, Infinity or -Infinity: Python reads them, JSON (and PostHog) does not."""


def _reject_constant(name: str) -> Any:
    raise _NotJsonConstantError(f"{name} is not valid JSON")
