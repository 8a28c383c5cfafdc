"""A minimal capture server for the benchmark: answers ``/batch/`` as PostHog does, and counts.

The capture stand-in (``local/standin.py``) checks every event as PostHog's capture
does, in Python, on the same 2 cores as the shard process; at tens of thousands of
events a second its own cost is a large part of what a benchmark against it measures.
This server does only what any capture endpoint must: read the request, gunzip it, parse
the JSON, count the events, answer ``{"status":"Ok"}`` (capture's ``CaptureResponse``,
which our sender requires) on a keep-alive HTTP/1.1 connection. ``GET /_count`` tells
the events and requests seen; ``POST /_reset`` forgets them.

    python -m scripts.bench.server --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

import orjson

from local.emulators import REPO_ROOT, free_port, stop, wait_for_port

CAPTURE_OK = b'{"status":"Ok"}'
_HEADER_END = b"\r\n\r\n"
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 31  # zlib's wbits for a gzip wrapper
_BATCH_PATHS = frozenset({b"/batch", b"/batch/"})
_SINGLE_EVENT_PATHS = frozenset({b"/capture", b"/capture/", b"/e", b"/e/", b"/i/v0/e", b"/i/v0/e/"})


def _answer(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n".encode()
    return head + b"Content-Type: " + content_type + b"\r\n\r\n" + body


_OK = _answer("200 OK", CAPTURE_OK)


class _Counts:
    def __init__(self) -> None:
        self.events = 0
        self.requests = 0
        self.connections = 0


class _Connection(asyncio.Protocol):
    """One keep-alive connection: requests parsed by Content-Length, answered in order."""

    _transport: asyncio.Transport  # set when the connection is made

    def __init__(self, counts: _Counts, delay: float) -> None:
        self._counts = counts
        self._delay = delay
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError(transport)
        self._transport = transport
        self._counts.connections += 1

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(_HEADER_END)
            if end < 0:
                return
            head = bytes(self._buffer[:end])
            length = _content_length(head)
            start = end + len(_HEADER_END)
            if len(self._buffer) < start + length:
                return
            body = bytes(self._buffer[start : start + length])
            del self._buffer[: start + length]
            answer = self._handle(head, body)
            if self._delay:
                asyncio.get_running_loop().call_later(self._delay, self._transport.write, answer)
            else:
                self._transport.write(answer)

    def _handle(self, head: bytes, body: bytes) -> bytes:
        request_line = head.split(b"\r\n", 1)[0]
        method, _, rest = request_line.partition(b" ")
        path = rest.rsplit(b" ", 1)[0].split(b"?", 1)[0]
        if method == b"GET" and path.startswith(b"/_count"):
            counts = {
                "events": self._counts.events,
                "requests": self._counts.requests,
                "connections": self._counts.connections,
            }
            return _answer("200 OK", json.dumps(counts).encode())
        if path.startswith(b"/_reset"):
            self._counts.events = self._counts.requests = self._counts.connections = 0
            return _answer("200 OK", b"{}")
        single = path in _SINGLE_EVENT_PATHS
        if not single and path not in _BATCH_PATHS:
            # /flags and /decide: a worker's start-up key check warns and starts anyway.
            return _answer("404 Not Found", b"{}")
        self._counts.requests += 1
        if body[:2] == _GZIP_MAGIC:
            body = zlib.decompress(body, _GZIP_WBITS)
        document = orjson.loads(body)
        self._counts.events += 1 if single else len(document["batch"])
        return _OK


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def _serve(port: int, delay: float) -> None:
    counts = _Counts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(counts, delay), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


class MinimalServer:
    """This server in its own process, as :class:`local.harness.StandIn` runs the stand-in."""

    name = "minimal"

    def __init__(self, log_file: Path, api_key: str, delay_ms: int = 0) -> None:
        """Start ``python -m scripts.bench.server`` on a free loopback port."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        with log_file.open("ab") as sink:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "scripts.bench.server",
                    "--port",
                    str(self.port),
                    "--delay-ms",
                    str(delay_ms),
                ],
                cwd=REPO_ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port(self.port, self.process, "benchmark server")

    def counts(self) -> dict[str, int]:
        """Events, capture requests and TCP connections since the last reset (ours included)."""
        with urllib.request.urlopen(self.url + "/_count", timeout=10) as answer:  # noqa: S310 - loopback
            counts: dict[str, int] = json.load(answer)
            return counts

    def events(self) -> int:
        """Events received so far."""
        return self.counts()["events"]

    def reset(self) -> None:
        """Forget the counts."""
        request = urllib.request.Request(self.url + "/_reset", data=b"", method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback
            pass

    def close(self) -> None:
        """Stop the server process."""
        stop(self.process)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until killed."""
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=int, default=0, help="answer capture this much later")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.port, args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
