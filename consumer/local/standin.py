"""A PostHog capture stand-in: a real HTTP server enforcing PostHog's documented rules.

Serves ``POST /batch/`` (gzip or plain; ``api_key`` or ``token``) and ``POST /capture/``
(one event), answering as PostHog does (``../shared/reference/posthog-capture.md``):
401 for a wrong key, 400 for malformed JSON, an empty batch, a missing event or
distinct_id or an invalid uuid, 413 for a body over 20 MB (2 MB on ``/capture/``) or an
event over 1 MB, and 200 ``{"status": 1}`` otherwise. Accepted events are kept in memory.

Test and demo hooks (not PostHog's API):

* ``GET /_events?since=N`` -> accepted events from index N; ``GET /_stats`` -> counters;
  ``GET /_requests`` -> one ``{"time", "status", "events"}`` per capture request;
* with ``--record-file``, accepted events are also appended there and reloaded on start,
  so the stand-in can be stopped (connection refused) and started again without
  forgetting what it accepted;
* ``POST /_control`` with ``{"status": 503, "remaining": 5, "retry_after": "2",
  "hang_seconds": 0, "reject_events": ["bad"]}`` -> answer the next ``remaining``
  requests (all, if null) with ``status``, delay answers, or refuse with 400 any batch
  holding an event with one of those names; ``POST /_reset`` -> forget everything.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
import zlib
from collections import Counter
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

# PostHog's limits (rust/capture): /batch/ body as sent, single-event endpoints, one event.
BATCH_BODY_LIMIT = 20 * 1000 * 1000
CAPTURE_BODY_LIMIT = 2 * 1000 * 1000
EVENT_LIMIT = 1000 * 1000
DECOMPRESSED_LIMIT = 100 * 1000 * 1000


class _State:
    def __init__(self, api_key: str, record_file: Path | None) -> None:
        self.api_key = api_key
        self.lock = threading.Lock()
        self.record_file = record_file
        self.events: list[dict[str, Any]] = []
        if record_file is not None and record_file.exists():
            self.events = [
                json.loads(line) for line in record_file.read_text().splitlines() if line
            ]
        self.statuses: Counter[int] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.control: dict[str, Any] = {}

    def accept(self, events: list[dict[str, Any]]) -> None:
        with self.lock:
            self.events.extend(events)
            if self.record_file is not None:
                with self.record_file.open("a", encoding="utf-8") as sink:
                    sink.writelines(json.dumps(event) + "\n" for event in events)

    def next_override(self) -> tuple[int | None, str | None, float]:
        with self.lock:
            control = self.control
            hang = float(control.get("hang_seconds") or 0)
            status = control.get("status")
            if status is None:
                return None, None, hang
            remaining = control.get("remaining")
            if remaining is not None:
                if remaining <= 0:
                    return None, None, hang
                control["remaining"] = remaining - 1
            return int(status), control.get("retry_after"), hang


class _RefusalError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        self.status = status
        super().__init__(message)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, every keep-alive answer
    # waits for the client's delayed ACK (~40 ms), which would cap a client at ~25 req/s.
    disable_nagle_algorithm = True
    accepted = 0  # events accepted by the request being answered (for /_requests)
    shards: tuple[str, ...] = ()  # $kinesis_shard_id values in the request (for /_requests)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        log.debug(format, *args)

    def do_GET(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        if url.path == "/_events":
            since = int(parse_qs(url.query).get("since", ["0"])[0])
            with state.lock:
                self._reply(
                    HTTPStatus.OK, {"events": state.events[since:], "total": len(state.events)}
                )
        elif url.path == "/_requests":
            with state.lock:
                self._reply(HTTPStatus.OK, {"requests": list(state.requests)})
        elif url.path == "/_stats":
            with state.lock:
                statuses = {str(k): v for k, v in state.statuses.items()}
                self._reply(HTTPStatus.OK, {"events": len(state.events), "statuses": statuses})
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self) -> None:
        state = self.server.state
        path = urlsplit(self.path).path
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path == "/_control":
            with state.lock:
                state.control = json.loads(body or b"{}")
            self._reply(HTTPStatus.OK, {"ok": True})
            return
        if path == "/_reset":
            with state.lock:
                state.events.clear()
                state.statuses.clear()
                state.requests.clear()
                state.control = {}
            self._reply(HTTPStatus.OK, {"ok": True})
            return
        if path not in ("/batch/", "/batch", "/capture/", "/capture", "/e/", "/e"):
            self._count_and_reply(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        self.accepted = 0
        single = not path.startswith("/batch")
        try:
            document: dict[str, Any] | _RefusalError = _decode(body, single=single)
        except _RefusalError as refusal:
            document = refusal
        self.shards = _shards_of(document)
        status, retry_after, hang = state.next_override()
        if hang:
            time.sleep(hang)
        if status is not None:
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            self._count_and_reply(HTTPStatus(status), {"error": "injected"}, headers)
            return
        try:
            if isinstance(document, _RefusalError):
                raise document
            events = self._accept(document, single=single)
        except _RefusalError as refusal:
            self._count_and_reply(
                refusal.status, {"type": "validation_error", "detail": str(refusal)}
            )
            return
        state.accept(events)
        self.accepted = len(events)
        self._count_and_reply(HTTPStatus.OK, {"status": 1})

    def _accept(self, document: dict[str, Any], *, single: bool) -> list[dict[str, Any]]:
        key = document.get("api_key") or document.get("token")
        events = [document] if single else document.get("batch")
        if single:
            key = key or (document.get("properties") or {}).get("token")
        if not key or key != self.server.state.api_key:
            raise _RefusalError(HTTPStatus.UNAUTHORIZED, "project API key is missing or invalid")
        if not isinstance(events, list) or not events:
            raise _RefusalError(HTTPStatus.BAD_REQUEST, "batch is empty or not a list")
        rejected = set(self.server.state.control.get("reject_events") or ())
        for event in events:
            _validate(event, rejected)
        return events

    def _count_and_reply(
        self, status: HTTPStatus, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        with self.server.state.lock:
            self.server.state.statuses[status.value] += 1
            self.server.state.requests.append(
                {
                    "time": time.time(),
                    "status": status.value,
                    "events": self.accepted,
                    "shards": self.shards,
                }
            )
        self._reply(status, payload, headers)

    def _reply(
        self, status: HTTPStatus, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _decode(body: bytes, *, single: bool) -> dict[str, Any]:
    """The request body as a JSON object (gzip or plain), or the refusal PostHog would give."""
    if len(body) > (CAPTURE_BODY_LIMIT if single else BATCH_BODY_LIMIT):
        raise _RefusalError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "payload too large")
    if body[:2] == b"\x1f\x8b":
        try:
            body = zlib.decompressobj(wbits=31).decompress(body, DECOMPRESSED_LIMIT)
        except zlib.error as exc:
            raise _RefusalError(HTTPStatus.BAD_REQUEST, "invalid gzip body") from exc
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise _RefusalError(
            HTTPStatus.BAD_REQUEST, "failed to decode the request body as JSON"
        ) from exc
    if not isinstance(document, dict):
        raise _RefusalError(HTTPStatus.BAD_REQUEST, "request body must be a JSON object")
    return document


def _shards_of(document: dict[str, Any] | Exception) -> tuple[str, ...]:
    """Which shards' events a request carries (for the request log only)."""
    batch = document.get("batch") if isinstance(document, dict) else None
    shards = set()
    for event in batch if isinstance(batch, list) else ():
        properties = event.get("properties") if isinstance(event, dict) else None
        if isinstance(properties, dict):
            shards.add(str(properties.get("$kinesis_shard_id")))
    return tuple(sorted(shards))


def _validate(event: Any, rejected: set[str]) -> None:
    if not isinstance(event, dict):
        raise _RefusalError(HTTPStatus.BAD_REQUEST, "event is not an object")
    name = event.get("event")
    if not isinstance(name, str) or not name:
        raise _RefusalError(HTTPStatus.BAD_REQUEST, "event is missing the event name")
    distinct = event.get("distinct_id") or (event.get("properties") or {}).get("distinct_id")
    if distinct in (None, ""):
        raise _RefusalError(HTTPStatus.BAD_REQUEST, "event is missing distinct_id")
    if "uuid" in event:
        try:
            uuid.UUID(str(event["uuid"]))
        except ValueError as exc:
            raise _RefusalError(HTTPStatus.BAD_REQUEST, "invalid uuid") from exc
    if len(json.dumps(event)) > EVENT_LIMIT:
        raise _RefusalError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "event too big")
    if name in rejected:
        raise _RefusalError(HTTPStatus.BAD_REQUEST, f"event {name!r} rejected (stand-in rule)")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002 - base signature
        """A client that gave up (timeout) before the answer is expected here; say so briefly."""
        log.debug("client %s went away before its answer", client_address)

    def __init__(self, port: int, api_key: str, record_file: Path | None) -> None:
        self.state = _State(api_key, record_file)
        super().__init__(("127.0.0.1", port), _Handler)


def make_server(port: int, api_key: str, record_file: Path | None = None) -> ThreadingHTTPServer:
    """Build (bind) the server without serving; port 0 picks a free port."""
    return _Server(port, api_key, record_file)


def serve(*, port: int, api_key: str, record_file: Path | None = None) -> int:
    """Serve until interrupted (``python -m consumer standin``)."""
    server = make_server(port, api_key, record_file)
    log.info(
        "PostHog capture stand-in on http://127.0.0.1:%d (project key %s...)",
        server.server_port,
        api_key[:4],
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
