"""The floor: decoding the daemon's messages and their records, and nothing else.

Any processor must at least read each ``processRecords`` line as JSON, base64-decode each
record's data and parse it as JSON; that costs this much, in this process, on the same
lines the shard processes are fed. Measured with the standard library's ``json`` and with
``orjson``; and amazon-kclpy's own reading of a line (its object hook builds a ``Record``
per record, with a local-time ``datetime``), which is what a processor built on it pays
before it sees a record.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Sequence

import orjson
from amazon_kclpy import dispatch


def _stdlib(line: str) -> None:
    for record in json.loads(line)["records"]:
        json.loads(base64.b64decode(record["data"]))


def _orjson(line: str) -> None:
    for record in orjson.loads(line)["records"]:
        orjson.loads(base64.b64decode(record["data"]))


def _kclpy_lines(line: str) -> None:
    json.loads(line, object_hook=dispatch.message_decode)


def _kclpy_and_records(line: str) -> None:
    for record in json.loads(line, object_hook=dispatch.message_decode).records:
        json.loads(base64.b64decode(record.data))


DECODERS: dict[str, Callable[[str], None]] = {
    "json": _stdlib,
    "orjson": _orjson,
    "kclpy-lines": _kclpy_lines,
    "kclpy+records": _kclpy_and_records,
}


def seconds(decoder: str, lines: Sequence[str]) -> float:
    """Seconds ``decoder`` takes over ``lines``."""
    decode = DECODERS[decoder]
    start = time.perf_counter()
    for line in lines:
        decode(line)
    return time.perf_counter() - start
