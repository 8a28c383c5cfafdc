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
  (:func:`local.captured_event.captured_message_bytes`: the event re-serialised as serde_json writes it,
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

This module is the HTTP server and its routes; the rest lives apart:

* :mod:`local.capture_body`: decoding a body (gzip or plain JSON) within capture's limits;
* :mod:`local.raw_json`: each event's JSON text exactly as sent;
* :mod:`local.capture_rules`: capture's checks of a request and of each event, in order;
* :mod:`local.captured_event`: the distinct id capture extracts and the size of the
  Kafka message it makes of an event;
* :mod:`local.capture_errors`: how capture refuses (the exception and capture's texts);
* :mod:`local.posthog_answers`: the answers' shape, PostHog's fixed bodies, and the
  whole of ``/flags/`` and ``/decide/``;
* :mod:`local.standin_state`: what the stand-in remembers (accepted events, the record
  file, counters, the request log) and the test hooks' settings.
"""

from __future__ import annotations

import json
import logging
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from local.capture_body import CaptureRequest, decode_capture
from local.capture_errors import RefusalError
from local.capture_rules import check_request, process_events
from local.posthog_answers import (
    CAPTURE_OK,
    HTML,
    INJECTED_TEXTS,
    JSON,
    PLAIN,
    PROXY_400,
    REDIRECT_STATUSES,
    WEB_PAGE,
    Answer,
    decide_answer,
    flags_answer,
)
from local.standin_state import State

log = logging.getLogger(__name__)

BATCH_PATHS = frozenset({"/batch", "/batch/"})
SINGLE_PATHS = frozenset({"/capture", "/capture/", "/e", "/e/", "/i/v0/e", "/i/v0/e/"})
FLAGS_PATHS = frozenset({"/flags", "/flags/"})
DECIDE_PATHS = frozenset({"/decide", "/decide/"})


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
            self._answer(url.path, Answer.text(HTTPStatus.BAD_REQUEST, message))
            return
        else:
            self._send(Answer.json(HTTPStatus.NOT_FOUND, {"error": "not found"}))
            return
        self._send(Answer.json(HTTPStatus.OK, payload))

    def do_POST(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if url.path == "/_control":
            with state.lock:
                state.control = json.loads(body or b"{}")
            self._send(Answer.json(HTTPStatus.OK, {"ok": True}))
            return
        if url.path == "/_reset":
            state.reset()
            self._send(Answer.json(HTTPStatus.OK, {"ok": True}))
            return
        known = BATCH_PATHS | SINGLE_PATHS | FLAGS_PATHS | DECIDE_PATHS
        if url.path not in known:
            self._answer(url.path, Answer.json(HTTPStatus.NOT_FOUND, {"error": "not found"}))
            return
        wrong_host = self._wrong_host()
        if wrong_host is not None:
            self._answer(url.path, wrong_host)
        elif url.path in FLAGS_PATHS:
            self._answer(url.path, flags_answer(body, parse_qs(url.query), state.api_key))
        elif url.path in DECIDE_PATHS:
            self._answer(url.path, decide_answer(body, state.api_key))
        else:
            self._capture(url.path, body, single=url.path in SINGLE_PATHS)

    # -- capture ---------------------------------------------------------------------

    def _capture(self, path: str, body: bytes, *, single: bool) -> None:
        state = self.server.state
        try:
            request: CaptureRequest | RefusalError = decode_capture(body, single=single)
        except RefusalError as refusal:
            request = refusal
        shards = _shards_of(request)
        hang = float(state.setting("hang_seconds") or 0)
        if hang:
            time.sleep(hang)
        if state.setting("reject_all"):
            self._answer(path, Answer(HTTPStatus.BAD_REQUEST, PROXY_400, HTML), shards=shards)
            return
        status, retry_after = state.next_override()
        if status is not None:
            headers = (("Retry-After", str(retry_after)),) if retry_after is not None else ()
            text = INJECTED_TEXTS.get(status, "injected").encode()
            self._answer(path, Answer(HTTPStatus(status), text, PLAIN, headers), shards=shards)
            return
        try:
            if isinstance(request, RefusalError):
                raise request
            events, raw, key, filtered = self._validate(request, single=single)
        except RefusalError as refusal:
            self._answer(path, Answer.text(refusal.status, str(refusal)), shards=shards)
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
        answer = Answer(HTTPStatus.OK, CAPTURE_OK, JSON)
        self._answer(path, answer, shards=shards, accepted=accepted, dropped=dropped)

    def _validate(
        self, request: CaptureRequest, *, single: bool
    ) -> tuple[list[dict[str, Any]], list[str], str, int]:
        """Capture's checks, in its order: the request's, then the events'.

        -> (events kept, their text as sent, the key, how many events capture filtered out).
        """
        events, raw, envelope = check_request(request, single=single, ip=self.client_address[0])
        rejected = set(self.server.state.setting("reject_events") or ())
        kept, kept_raw = process_events(request.document, events, raw, envelope, rejected)
        return kept, kept_raw, envelope.token, len(events) - len(kept)

    # -- answers ---------------------------------------------------------------------

    def _wrong_host(self) -> Answer | None:
        """The answer of a host that is not PostHog, if the test asked for one."""
        state = self.server.state
        target = state.setting("redirect_to")
        if target:
            status = int(state.setting("redirect_status") or HTTPStatus.MOVED_PERMANENTLY)
            if status not in REDIRECT_STATUSES:
                status = HTTPStatus.MOVED_PERMANENTLY
            return Answer(HTTPStatus(status), b"", PLAIN, (("Location", str(target)),))
        if state.setting("html_200"):
            return Answer(HTTPStatus.OK, WEB_PAGE, HTML)
        return None

    def _answer(
        self,
        path: str,
        answer: Answer,
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

    def _send(self, answer: Answer) -> None:
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


def _shards_of(request: CaptureRequest | Exception) -> tuple[str, ...]:
    """Which shards' events a request carries (for the request log only)."""
    batch = request.document.get("batch") if isinstance(request, CaptureRequest) else None
    shards = set()
    for event in batch if isinstance(batch, list) else ():
        properties = event.get("properties") if isinstance(event, dict) else None
        if isinstance(properties, dict):
            shards.add(str(properties.get("$kinesis_shard_id")))
    return tuple(sorted(shards))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002 - base signature
        """A client that gave up (timeout) before the answer is expected here; say so briefly."""
        log.debug("client %s went away before its answer", client_address)

    def __init__(self, port: int, api_key: str, record_file: Path | None) -> None:
        self.state = State(api_key, record_file)
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
