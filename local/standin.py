"""A PostHog stand-in: a real HTTP server answering as PostHog's capture and flags services do.

What it imitates was read from PostHog/posthog (``rust/capture``, ``rust/feature-flags``,
``posthog/api``; see ``../shared/reference/posthog-capture.md``):

* ``POST /batch/`` (gzip or plain; the key in ``api_key`` or ``token``) and ``POST
  /capture/`` or ``/e/`` (one event; the key may also be ``properties.token``). Capture
  checks only the key's *shape* (``validate_token`` in ``rust/capture/src/token.rs``:
  trimmed, not empty, at most 64 bytes, ASCII, not a ``phx_`` personal key, no NUL):
  a missing or ill-shaped key is 401 with capture's plain-text reason (``API key is not
  valid: personal_api_key``). Any well-formed key is accepted: events for the stand-in's
  project key are kept; events for any other key are answered 200 too and then
  dropped, as PostHog's ingestion drops them, and counted as ``dropped.invalid_token``.
  Then 400 (plain text) for a body that is not JSON (or nests deeper than serde_json's
  128 levels, or holds a number beyond a double), an empty batch, an invalid uuid; then
  events named ``$performance_event`` are dropped (counted as
  ``dropped.performance_event``) and a request left with none is 400; then, event by
  event as ``process_single_event`` does, 400 for an empty event name, a distinct_id
  that is missing, null or blank once trimmed (Rust's ``str::trim``; stringified first if
  not a string), a ``$cookieless_mode`` property that is not a boolean; then 413 for an
  event whose Kafka message is over 1,000,000 bytes *as capture builds it*
  (:func:`captured_message_bytes`: the event re-serialised as serde_json writes it,
  escaped again as the ``data`` string of a CapturedEvent, plus key, headers and
  librdkafka's overhead); also 413 for a body over 20 MiB (2 MiB on the single-event
  paths); else 200 ``{"status":"Ok"}``, byte for byte what the Rust capture sends. A GET
  (no body) is 400.
* ``POST /flags/?v=2`` (or ``/flags``; body ``{"api_key" | "token", "distinct_id"}``,
  plain or gzip): 200 with an empty flags answer (``{"errorsWhileComputingFlags":false,
  "flags":{},"requestId":...}``; the legacy ``featureFlags`` shape without ``v``) for
  the project key; 401 ``{"type":"authentication_error","code":"authentication_failed",
  ...}`` for any other key (``not_authenticated`` for none); 400 without distinct_id
  (missing or null; an empty one is accepted, and a number is read as text, as
  ``FlagRequest`` in rust/feature-flags/src/flags/flag_request.rs does).
* ``POST /decide/?v=3`` (older self-hosted PostHog): 200 with a minimal decide answer
  for the project key, 401 ``{"type":"authentication_error","code":"invalid_api_key",
  ...}`` for any other.

Test and demo hooks (not PostHog's API):

* ``GET /_events?since=N`` -> accepted events from index N; ``GET /_raw?since=N`` -> the
  JSON text of each of those events exactly as it was sent (same indexes); ``GET
  /_stats`` -> counters; ``GET /_requests`` -> one ``{"time", "path", "status",
  "events", "dropped", "shards"}`` per request to a PostHog endpoint;
* with ``--record-file``, accepted events (their text as sent) are also appended there
  and reloaded on start, so the stand-in can be stopped (connection refused) and
  started again without forgetting what it accepted;
* ``POST /_control`` with ``{"status": 503, "remaining": 5, "retry_after": "2",
  "hang_seconds": 0, "reject_events": ["bad"], "reject_all": false, "redirect_to":
  null, "redirect_status": 301, "html_200": false}`` replaces the settings: answer the
  next ``remaining`` capture requests (all, if null) with ``status``, delay capture
  answers, refuse with 400 any batch holding an event with one of those names, refuse
  every capture request with a proxy's 400 page (a wrong path behind a proxy); and for
  every PostHog endpoint, redirect to ``redirect_to`` or answer 200 with a web page (a
  wrong host); ``POST /_reset`` -> forget everything.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

# PostHog's limits (rust/capture/src/router.rs): /batch/ body as sent, single-event
# endpoints, decompressed body.
BATCH_BODY_LIMIT = 20 * 1024 * 1024
CAPTURE_BODY_LIMIT = 2 * 1024 * 1024
DECOMPRESSED_LIMIT = 100 * 1000 * 1000
# One event's Kafka message: librdkafka's message.max.bytes, set from
# kafka_producer_message_max_bytes (default 1000000, rust/capture/src/config.rs), which
# counts value + key + headers + RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD (librdkafka's
# rd_kafka_msg_max_wire_size: 5 + 1 + 10 + 5 + 5 + 5 + 5 bytes of varints).
EVENT_LIMIT = 1000 * 1000
KAFKA_MESSAGE_OVERHEAD = 36
# serde_json (default features) gives up at 128 levels of nesting, the body included.
SERDE_JSON_RECURSION_LIMIT = 128
# serde_json reads integers within i64/u64 exactly, others as doubles.
_I64_MIN, _U64_LIMIT = -(2**63), 2**64
# RawEvent::extract_distinct_id_checked (rust/common/types/src/event.rs): NUL becomes
# U+FFFD, an id empty once trimmed (Rust's str::trim: Unicode White_Space) is missing,
# and the id is cut to 200 characters.
RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
DISTINCT_ID_MAX_CHARS = 200
# RawRequest::events (rust/capture/src/v0_request.rs) drops these; none left is a 400.
FILTERED_EVENT_NAMES = frozenset({"$performance_event"})
# validate_token (rust/capture/src/token.rs): the longest key it lets through, in bytes,
# and the prefix of personal API keys, which capture refuses.
TOKEN_MAX_BYTES = 64
PERSONAL_KEY_PREFIX = "phx_"

BATCH_PATHS = frozenset({"/batch", "/batch/"})
SINGLE_PATHS = frozenset({"/capture", "/capture/", "/e", "/e/", "/i/v0/e", "/i/v0/e/"})
FLAGS_PATHS = frozenset({"/flags", "/flags/"})
DECIDE_PATHS = frozenset({"/decide", "/decide/"})

# CaptureResponse { status: CaptureResponseCode::Ok } as axum's Json writes it.
CAPTURE_OK = b'{"status":"Ok"}'
# Capture's plain-text errors (CaptureError's messages in rust/capture/src/api.rs).
MISSING_KEY = "event submitted without an api_key"
EMPTY_BATCH = "request holds no event"
NO_EVENT_NAME = "event submitted with an empty event name"
NO_DISTINCT_ID = "event submitted without a distinct_id"
BAD_COOKIELESS_MODE = "event submitted with invalid cookieless mode"
ALL_FILTERED = "payload empty after filtering invalid event types"
# EventTooBig as the Kafka sink raises it when librdkafka refuses the message on send.
EVENT_TOO_BIG = "maximum event size exceeded: Event rejected by kafka during send"
INJECTED_TEXTS = {429: "rate limited", 503: "transient error, please retry"}
# The flags service's 401 bodies (rust/feature-flags/src/api/errors.rs).
FLAGS_BAD_KEY = {
    "type": "authentication_error",
    "code": "authentication_failed",
    "detail": "The provided API key is invalid or has expired. "
    "Please check your API key and try again.",
    "attr": None,
}
FLAGS_NO_KEY = {
    "type": "authentication_error",
    "code": "not_authenticated",
    "detail": "No API token provided. Please include a valid API token in your request.",
    "attr": None,
}
FLAGS_NO_DISTINCT_ID = (
    "The distinct_id field is missing from the request. Please include a valid identifier."
)
# Django's /decide/ answer to an unknown key (posthog/api/test/test_decide.py).
DECIDE_BAD_KEY = {
    "type": "authentication_error",
    "code": "invalid_api_key",
    "detail": "Project API key invalid. You can find your project API key in PostHog project settings.",
    "attr": None,
}
# What the wrong-host hooks answer with.
WEB_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Welcome</title></head>"
    b"<body><h1>It works!</h1></body></html>\n"
)
PROXY_400 = (
    b"<html>\r\n<head><title>400 Bad Request</title></head>\r\n<body>\r\n"
    b"<center><h1>400 Bad Request</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_PLAIN = "text/plain; charset=utf-8"
_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
_JSON_WHITESPACE = " \t\n\r"


def token_problem(token: str) -> str | None:
    """Why capture's ``validate_token`` refuses ``token`` (its reason code), or None."""
    token = token.strip()
    if not token:
        return "empty"
    if len(token.encode()) > TOKEN_MAX_BYTES:
        return "too_long"
    if not token.isascii():
        return "not_ascii"
    if token.startswith(PERSONAL_KEY_PREFIX):
        return "personal_api_key"
    if "\0" in token:
        return "null_byte"
    return None


@dataclass(frozen=True, slots=True)
class _Answer:
    status: HTTPStatus
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(cls, status: HTTPStatus, message: str) -> _Answer:
        return cls(status, message.encode(), _PLAIN)

    @classmethod
    def json(cls, status: HTTPStatus, payload: Any, *, compact: bool = True) -> _Answer:
        separators = (",", ":") if compact else None
        return cls(status, json.dumps(payload, separators=separators).encode(), _JSON)


class _RefusalError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class _Request:
    """A decoded capture request: the JSON document and its text as sent."""

    document: dict[str, Any]
    text: str


class _State:
    def __init__(self, api_key: str, record_file: Path | None) -> None:
        self.api_key = api_key
        self.lock = threading.Lock()
        self.record_file = record_file
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        if record_file is not None and record_file.exists():
            for line in record_file.read_text(encoding="utf-8").splitlines():
                if line:
                    event, raw = _read_record(line)
                    self.events.append(event)
                    self.raw.append(raw)
        self.statuses: Counter[int] = Counter()
        self.dropped: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.control: dict[str, Any] = {}

    def accept(self, events: list[dict[str, Any]], raw: list[str]) -> None:
        with self.lock:
            self.events.extend(events)
            self.raw.extend(raw)
            if self.record_file is not None:
                with self.record_file.open("a", encoding="utf-8") as sink:
                    sink.writelines(json.dumps({"raw": text}) + "\n" for text in raw)

    def drop(self, reason: str, count: int) -> None:
        with self.lock:
            self.dropped[reason] += count

    def setting(self, name: str) -> Any:
        with self.lock:
            return self.control.get(name)

    def next_override(self) -> tuple[int | None, str | None]:
        with self.lock:
            control = self.control
            status = control.get("status")
            if status is None:
                return None, None
            remaining = control.get("remaining")
            if remaining is not None:
                if remaining <= 0:
                    return None, None
                control["remaining"] = remaining - 1
            return int(status), control.get("retry_after")

    def reset(self) -> None:
        with self.lock:
            self.events.clear()
            self.raw.clear()
            self.statuses.clear()
            self.dropped.clear()
            self.requests.clear()
            self.control = {}


def _read_record(line: str) -> tuple[dict[str, Any], str]:
    """One record-file line -> (event, its text as sent)."""
    entry = json.loads(line)
    # Current format: {"raw": <the event's JSON text as sent>}. An accepted event always
    # has an "event" key, so a line of the earlier format (the parsed event) never
    # looks like this; for those the text is rebuilt, which is the best that can be done.
    if isinstance(entry, dict) and set(entry) == {"raw"} and isinstance(entry["raw"], str):
        return json.loads(entry["raw"]), entry["raw"]
    return entry, json.dumps(entry)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, every keep-alive answer
    # waits for the client's delayed ACK (~40 ms), which would cap a client at ~25 req/s.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        log.debug(format, *args)

    def do_GET(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        since = _since(url.query)
        if url.path == "/_events":
            with state.lock:
                payload: dict[str, Any] = {
                    "events": state.events[since:],
                    "total": len(state.events),
                }
        elif url.path == "/_raw":
            with state.lock:
                payload = {"raw": state.raw[since:], "total": len(state.raw)}
        elif url.path == "/_requests":
            with state.lock:
                payload = {"requests": list(state.requests)}
        elif url.path == "/_stats":
            with state.lock:
                payload = {
                    "events": len(state.events),
                    "statuses": {str(k): v for k, v in state.statuses.items()},
                    "dropped": dict(state.dropped),
                }
        elif url.path in BATCH_PATHS | SINGLE_PATHS:
            # What a POST becomes when a client follows a 301/302: a GET without the body.
            message = "failed to parse request: EOF while parsing a value at line 1 column 0"
            self._answer(url.path, _Answer.text(HTTPStatus.BAD_REQUEST, message))
            return
        else:
            self._send(_Answer.json(HTTPStatus.NOT_FOUND, {"error": "not found"}))
            return
        self._send(_Answer.json(HTTPStatus.OK, payload))

    def do_POST(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if url.path == "/_control":
            with state.lock:
                state.control = json.loads(body or b"{}")
            self._send(_Answer.json(HTTPStatus.OK, {"ok": True}))
            return
        if url.path == "/_reset":
            state.reset()
            self._send(_Answer.json(HTTPStatus.OK, {"ok": True}))
            return
        known = BATCH_PATHS | SINGLE_PATHS | FLAGS_PATHS | DECIDE_PATHS
        if url.path not in known:
            self._answer(url.path, _Answer.json(HTTPStatus.NOT_FOUND, {"error": "not found"}))
            return
        wrong_host = self._wrong_host()
        if wrong_host is not None:
            self._answer(url.path, wrong_host)
        elif url.path in FLAGS_PATHS:
            self._answer(url.path, self._flags(body, parse_qs(url.query)))
        elif url.path in DECIDE_PATHS:
            self._answer(url.path, self._decide(body))
        else:
            self._capture(url.path, body, single=url.path in SINGLE_PATHS)

    # -- capture ---------------------------------------------------------------------

    def _capture(self, path: str, body: bytes, *, single: bool) -> None:
        state = self.server.state
        try:
            request: _Request | _RefusalError = _decode_capture(body, single=single)
        except _RefusalError as refusal:
            request = refusal
        shards = _shards_of(request)
        hang = float(state.setting("hang_seconds") or 0)
        if hang:
            time.sleep(hang)
        if state.setting("reject_all"):
            self._answer(path, _Answer(HTTPStatus.BAD_REQUEST, PROXY_400, _HTML), shards=shards)
            return
        status, retry_after = state.next_override()
        if status is not None:
            headers = (("Retry-After", str(retry_after)),) if retry_after is not None else ()
            text = INJECTED_TEXTS.get(status, "injected").encode()
            self._answer(path, _Answer(HTTPStatus(status), text, _PLAIN, headers), shards=shards)
            return
        try:
            if isinstance(request, _RefusalError):
                raise request
            events, raw, key, filtered = self._validate(request, single=single)
        except _RefusalError as refusal:
            self._answer(path, _Answer.text(refusal.status, str(refusal)), shards=shards)
            return
        if filtered:
            state.drop("performance_event", filtered)
        if key == state.api_key:
            state.accept(events, raw)
            accepted, dropped = len(events), 0
        else:
            # PostHog's capture answers 200; ingestion finds no project and drops them.
            state.drop("invalid_token", len(events))
            accepted, dropped = 0, len(events)
        answer = _Answer(HTTPStatus.OK, CAPTURE_OK, _JSON)
        self._answer(path, answer, shards=shards, accepted=accepted, dropped=dropped)

    def _validate(
        self, request: _Request, *, single: bool
    ) -> tuple[list[dict[str, Any]], list[str], str, int]:
        """Capture's checks, in its order: key shape, then events.

        -> (events kept, their text as sent, the key, how many events capture filtered out).
        """
        document = request.document
        key = document.get("api_key", document.get("token"))
        if single and key is None:
            properties = document.get("properties")
            key = properties.get("token") if isinstance(properties, dict) else None
        if key is None:
            raise _RefusalError(HTTPStatus.UNAUTHORIZED, MISSING_KEY)
        if not isinstance(key, str):
            raise _RefusalError(
                HTTPStatus.BAD_REQUEST, "failed to parse request: the api_key is not a string"
            )
        problem = token_problem(key)
        if problem is not None:
            raise _RefusalError(HTTPStatus.UNAUTHORIZED, f"API key is not valid: {problem}")
        if single:
            events: Any = [document]
            raw = [request.text.strip(_JSON_WHITESPACE)]
        else:
            events = document.get("batch")
            if not isinstance(events, list):
                raise _RefusalError(
                    HTTPStatus.BAD_REQUEST, "failed to parse request: batch is not a list"
                )
            raw = _raw_batch(request.text)
        if not events:
            raise _RefusalError(HTTPStatus.BAD_REQUEST, EMPTY_BATCH)
        sent_at = document.get("sent_at")
        envelope = CaptureEnvelope(
            token=key.strip(),
            ip=self.client_address[0],
            sent_at=sent_at if isinstance(sent_at, str) else None,
            historical_migration=document.get("historical_migration") is True,
        )
        rejected = set(self.server.state.setting("reject_events") or ())
        kept, kept_raw = _process_events(document, events, raw, envelope, rejected)
        return kept, kept_raw, envelope.token, len(events) - len(kept)

    # -- flags and decide ------------------------------------------------------------

    def _flags(self, body: bytes, query: dict[str, list[str]]) -> _Answer:
        try:
            document = _decode_json_object(body)
        except _RefusalError as refusal:
            return _Answer.text(
                HTTPStatus.BAD_REQUEST,
                f"Failed to decode request: {refusal}. Please check your request format and try again.",
            )
        distinct_id = document.get("distinct_id", document.get("$distinct_id"))
        if distinct_id is None:
            return _Answer.text(HTTPStatus.BAD_REQUEST, FLAGS_NO_DISTINCT_ID)
        if isinstance(distinct_id, bool) or not isinstance(distinct_id, str | int | float):
            # FlagRequest's distinct_id reads a string or a number; anything else fails it.
            return _Answer.text(
                HTTPStatus.BAD_REQUEST,
                "Failed to decode request: invalid JSON. "
                "Please check your request format and try again.",
            )
        key = document.get("token", document.get("api_key"))
        if not key:
            return _Answer.json(HTTPStatus.UNAUTHORIZED, FLAGS_NO_KEY)
        if key != self.server.state.api_key:
            return _Answer.json(HTTPStatus.UNAUTHORIZED, FLAGS_BAD_KEY)
        request_id = str(uuid.uuid4())
        version = query.get("v", query.get("version", [""]))[0]
        if version.isdigit() and int(version) >= 2:  # FlagsResponse
            payload: dict[str, Any] = {
                "errorsWhileComputingFlags": False,
                "flags": {},
                "requestId": request_id,
            }
        else:  # LegacyFlagsResponse
            payload = {
                "errorsWhileComputingFlags": False,
                "featureFlags": {},
                "featureFlagPayloads": {},
                "requestId": request_id,
            }
        return _Answer.json(HTTPStatus.OK, payload)

    def _decide(self, body: bytes) -> _Answer:
        try:
            document = _decode_json_object(body)
        except _RefusalError:
            document = {}
        key = document.get("api_key", document.get("token"))
        if not key or key != self.server.state.api_key:
            return _Answer.json(HTTPStatus.UNAUTHORIZED, DECIDE_BAD_KEY, compact=False)
        payload = {
            "config": {"enable_collect_everything": True},
            "toolbarParams": {},
            "isAuthenticated": False,
            "supportedCompression": ["gzip", "gzip-js"],
            "featureFlags": {},
            "featureFlagPayloads": {},
            "errorsWhileComputingFlags": False,
            "sessionRecording": False,
        }
        return _Answer.json(HTTPStatus.OK, payload, compact=False)

    # -- answers ---------------------------------------------------------------------

    def _wrong_host(self) -> _Answer | None:
        """The answer of a host that is not PostHog, if the test asked for one."""
        state = self.server.state
        target = state.setting("redirect_to")
        if target:
            status = int(state.setting("redirect_status") or HTTPStatus.MOVED_PERMANENTLY)
            if status not in _REDIRECT_STATUSES:
                status = HTTPStatus.MOVED_PERMANENTLY
            return _Answer(HTTPStatus(status), b"", _PLAIN, (("Location", str(target)),))
        if state.setting("html_200"):
            return _Answer(HTTPStatus.OK, WEB_PAGE, _HTML)
        return None

    def _answer(
        self,
        path: str,
        answer: _Answer,
        *,
        shards: tuple[str, ...] = (),
        accepted: int = 0,
        dropped: int = 0,
    ) -> None:
        """Send an answer of a PostHog endpoint, counting it for /_stats and /_requests."""
        state = self.server.state
        with state.lock:
            state.statuses[answer.status.value] += 1
            state.requests.append(
                {
                    "time": time.time(),
                    "path": path,
                    "status": answer.status.value,
                    "events": accepted,
                    "dropped": dropped,
                    "shards": shards,
                }
            )
        self._send(answer)

    def _send(self, answer: _Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.body)


def _since(query: str) -> int:
    values = parse_qs(query).get("since", ["0"])
    return int(values[0]) if values[0].isdigit() else 0


def _decompress(body: bytes) -> bytes:
    if body[:2] != b"\x1f\x8b":
        return body
    try:
        return zlib.decompressobj(wbits=31).decompress(body, DECOMPRESSED_LIMIT)
    except zlib.error as exc:
        raise _RefusalError(HTTPStatus.BAD_REQUEST, "invalid gzip data") from exc


def _decode_json_object(body: bytes) -> dict[str, Any]:
    """A gzip or plain JSON object body (for /flags and /decide)."""
    try:
        document = json.loads(_decompress(body).decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise _RefusalError(HTTPStatus.BAD_REQUEST, "the body is not JSON") from exc
    if not isinstance(document, dict):
        raise _RefusalError(HTTPStatus.BAD_REQUEST, "the body is not a JSON object")
    return document


def _decode_capture(body: bytes, *, single: bool) -> _Request:
    """The request body (gzip or plain) as a JSON object and its text, or capture's refusal."""
    if len(body) > (CAPTURE_BODY_LIMIT if single else BATCH_BODY_LIMIT):
        raise _RefusalError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "Failed to buffer the request body: length limit exceeded",
        )
    data = _decompress(body)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _RefusalError(
            HTTPStatus.BAD_REQUEST, "failed to decode request: invalid body encoding"
        ) from exc
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _RefusalError(HTTPStatus.BAD_REQUEST, f"failed to parse request: {exc}") from exc
    if not isinstance(document, dict):
        raise _RefusalError(
            HTTPStatus.BAD_REQUEST, "failed to parse request: the body is not a JSON object"
        )
    return _Request(document, text)


def _raw_batch(text: str) -> list[str]:
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
    while text[position] in _JSON_WHITESPACE:
        position += 1
    return position


def _shards_of(request: _Request | Exception) -> tuple[str, ...]:
    """Which shards' events a request carries (for the request log only)."""
    batch = request.document.get("batch") if isinstance(request, _Request) else None
    shards = set()
    for event in batch if isinstance(batch, list) else ():
        properties = event.get("properties") if isinstance(event, dict) else None
        if isinstance(properties, dict):
            shards.add(str(properties.get("$kinesis_shard_id")))
    return tuple(sorted(shards))


def _process_events(
    document: dict[str, Any],
    events: list[Any],
    raw: list[str],
    envelope: CaptureEnvelope,
    rejected: set[str],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Capture's per-event rules, in its order; -> the events it keeps and their text.

    Parsing (RawRequest, rust/capture/src/v0_request.rs) refuses the whole request
    first; then events named in FILTERED_EVENT_NAMES are dropped; then each event goes
    through process_single_event; only then does the sink produce, refusing an event
    whose message is too large.
    """
    if _nesting_depth(document) >= SERDE_JSON_RECURSION_LIMIT:
        raise _RefusalError(
            HTTPStatus.BAD_REQUEST, "failed to parse request: recursion limit exceeded"
        )
    for event in events:
        _check_parsable(event)
    kept = [
        (event, text)
        for event, text in zip(events, raw, strict=True)
        if event.get("event") not in FILTERED_EVENT_NAMES
    ]
    if not kept:
        raise _RefusalError(HTTPStatus.BAD_REQUEST, ALL_FILTERED)
    for event, _ in kept:
        _validate_event(event, rejected)
    for event, _ in kept:
        if captured_message_bytes(event, envelope) > EVENT_LIMIT:
            raise _RefusalError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, EVENT_TOO_BIG)
    return [event for event, _ in kept], [text for _, text in kept]


def _check_parsable(event: Any) -> None:
    """What deserialising a RawEvent (rust/common/types/src/event.rs) refuses, as a 400."""
    if not isinstance(event, dict):
        raise _RefusalError(
            HTTPStatus.BAD_REQUEST, "failed to parse request: an event is not an object"
        )
    if "distinct_id" in event and "$distinct_id" in event:
        raise _RefusalError(
            HTTPStatus.BAD_REQUEST, "failed to parse request: duplicate field `distinct_id`"
        )
    if "properties" in event and not isinstance(event["properties"], dict):
        raise _RefusalError(
            HTTPStatus.BAD_REQUEST, "failed to parse request: properties is not an object"
        )
    identifier = event.get("uuid")
    # empty_string_uuid_is_none: null and "" are no uuid; anything else must parse.
    if identifier not in (None, ""):
        try:
            uuid.UUID(identifier if isinstance(identifier, str) else "not a string")
        except ValueError as exc:
            raise _RefusalError(
                HTTPStatus.BAD_REQUEST, "failed to parse request: invalid uuid"
            ) from exc


def _validate_event(event: dict[str, Any], rejected: set[str]) -> None:
    """process_single_event's refusals (rust/capture/src/events/analytics.rs), in its order."""
    name = event.get("event")
    if not isinstance(name, str) or not name:
        raise _RefusalError(HTTPStatus.BAD_REQUEST, NO_EVENT_NAME)
    if captured_distinct_id(event) is None:
        raise _RefusalError(HTTPStatus.BAD_REQUEST, NO_DISTINCT_ID)
    properties = event.get("properties")
    cookieless = (
        properties.get("$cookieless_mode", False) if isinstance(properties, dict) else False
    )
    if not isinstance(cookieless, bool):  # null included: present and not a boolean
        raise _RefusalError(HTTPStatus.BAD_REQUEST, BAD_COOKIELESS_MODE)
    if name in rejected:
        raise _RefusalError(HTTPStatus.BAD_REQUEST, f"event {name!r} rejected (stand-in rule)")


def captured_distinct_id(event: dict[str, Any]) -> str | None:
    """The distinct id capture extracts from ``event``, or None (MissingDistinctId)."""
    value = event.get("distinct_id", event.get("$distinct_id"))
    if value is None:
        properties = event.get("properties")
        value = properties.get("distinct_id") if isinstance(properties, dict) else None
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    text = text.replace("\0", "\ufffd")
    if not text.strip(RUST_WHITESPACE):
        return None
    return text[:DISTINCT_ID_MAX_CHARS]


@dataclass(frozen=True, slots=True)
class CaptureEnvelope:
    """What capture adds to every event of a request: the request's token, IP and flags."""

    token: str
    ip: str = "127.0.0.1"
    sent_at: str | None = None
    historical_migration: bool = False


def captured_message_bytes(event: dict[str, Any], envelope: CaptureEnvelope) -> int:
    """The bytes librdkafka counts for the Kafka message capture makes of ``event``.

    process_single_event (rust/capture/src/events/analytics.rs) serialises the RawEvent
    with serde_json into ``data``, and the sink (rust/capture/src/sinks/kafka.rs)
    serialises the CapturedEvent (rust/common/types/src/event.rs) holding it as the
    message value, keyed ``token:distinct_id``, with ``to_headers()``. librdkafka refuses
    value + key + headers + :data:`KAFKA_MESSAGE_OVERHEAD` over :data:`EVENT_LIMIT`.
    ``event`` must have passed :func:`_validate_event`. The value is built and escaped
    for real (json.dumps escapes strings exactly as serde_json does); only the numbers
    are counted at the length ryu gives them (:func:`ryu`).
    """
    raw_event = _raw_event(event)
    growth = _number_growth(raw_event)
    try:
        data = json.dumps(raw_event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise _RefusalError(
            HTTPStatus.BAD_REQUEST, "failed to parse request: number out of range"
        ) from exc
    distinct_id = captured_distinct_id(event) or ""
    properties = event.get("properties")
    cookieless = isinstance(properties, dict) and properties.get("$cookieless_mode") is True
    # chrono's to_rfc3339_opts(SecondsFormat::AutoSi, true) of a clock with nanoseconds.
    now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "000Z")
    timestamp = event.get("timestamp") if isinstance(event.get("timestamp"), str) else now
    identifier = event.get("uuid")
    identifier = str(uuid.UUID(identifier)) if identifier else str(uuid.uuid4())
    captured: dict[str, Any] = {
        "uuid": identifier,
        "distinct_id": distinct_id,
        "ip": envelope.ip,
        "data": data,
        "now": now,
        **({"sent_at": envelope.sent_at} if envelope.sent_at else {}),
        "token": envelope.token,
        "event": event["event"],
        "timestamp": timestamp,
        **({"is_cookieless_mode": True} if cookieless else {}),
        **({"historical_migration": True} if envelope.historical_migration else {}),
    }
    # Digits contain nothing JSON escapes, so the numbers' growth survives the escaping as is.
    value = _utf8_len(json.dumps(captured, separators=(",", ":"), ensure_ascii=False)) + growth
    key = _utf8_len(f"{envelope.token}:{envelope.ip if cookieless else distinct_id}")
    headers = {
        "token": envelope.token,
        "distinct_id": distinct_id,
        "session_id": None,
        "timestamp": "1700000000000",  # milliseconds, 13 digits until 2286
        "event": event["event"],
        "uuid": identifier,
        "now": now,
        "force_disable_person_processing": None,
        "historical_migration": "true" if envelope.historical_migration else None,
    }
    return value + key + _headers_bytes(headers) + KAFKA_MESSAGE_OVERHEAD


def _raw_event(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` as a RawEvent holds it: its known fields only, ``uuid`` always present."""
    raw: dict[str, Any] = {}
    for name, aliases in (("token", ("$token", "api_key")), ("distinct_id", ("$distinct_id",))):
        for key in (name, *aliases):
            if event.get(key) is not None:
                raw[name] = event[key]
                break
    identifier = event.get("uuid")
    raw["uuid"] = str(uuid.UUID(identifier)) if identifier else None
    raw["event"] = event["event"]
    raw["properties"] = event.get("properties") or {}
    for name in ("timestamp", "offset", "$set", "$set_once"):
        if event.get(name) is not None:
            raw[name] = event[name]
    return raw


def _number_growth(value: Any) -> int:
    """Bytes serde_json writes for the numbers in ``value`` beyond what json.dumps writes."""
    growth = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif type(item) is float:
            if not math.isfinite(item):
                raise _RefusalError(
                    HTTPStatus.BAD_REQUEST, "failed to parse request: number out of range"
                )
            growth += len(ryu(item)) - len(repr(item))
        elif type(item) is int and not _I64_MIN <= item < _U64_LIMIT:
            try:
                as_double = float(item)
            except OverflowError as exc:
                raise _RefusalError(
                    HTTPStatus.BAD_REQUEST, "failed to parse request: number out of range"
                ) from exc
            growth += len(ryu(as_double)) - len(str(item))
    return growth


def ryu(value: float) -> str:
    """``value`` as serde_json writes a double (the ryu crate's format64).

    Positional for decimal exponents -5 to 15 (``0.00001``, ``1000.0``), else scientific
    without ``+`` or leading zeros (``1e16``, ``1.5e-7``). The digits are the shortest
    that round-trip, which Python's repr also writes.
    """
    if not math.isfinite(value):
        raise ValueError(f"{value} is not finite")
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return f"{sign}0.0"
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    # kk: the decimal point sits after kk digits (10**(kk-1) <= value < 10**kk).
    kk = len(whole.lstrip("0")) if whole.strip("0") else len(fraction.lstrip("0")) - len(fraction)
    kk += int(exponent or 0)
    digits = digits.rstrip("0")
    count = len(digits)
    if count <= kk <= 16:
        text = digits + "0" * (kk - count) + ".0"
    elif 0 < kk <= 16:
        text = f"{digits[:kk]}.{digits[kk:]}"
    elif -5 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif count == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + text


def _headers_bytes(headers: dict[str, str | None]) -> int:
    """rd_kafka_headers_serialized_size: per header, varint lengths, name and value."""
    total = 0
    for name, value in headers.items():
        name_len = len(name.encode())
        value_len = -1 if value is None else _utf8_len(value)
        total += _varint_bytes(name_len) + name_len + _varint_bytes(value_len)
        total += max(0, value_len)
    return total


def _varint_bytes(number: int) -> int:
    """Size of a zigzag varint, as Kafka's record format writes lengths."""
    zigzag = (number << 1) ^ (number >> 63)
    size = 1
    while zigzag >= 0x80:  # seven bits per byte
        zigzag >>= 7
        size += 1
    return size


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _nesting_depth(document: Any) -> int:
    """How many arrays/objects are open at the deepest point of ``document``, iteratively."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


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
    """Serve until interrupted (``python -m local standin``)."""
    server = make_server(port, api_key, record_file)
    log.info(
        "PostHog stand-in on http://127.0.0.1:%d (project key %s...)",
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
