"""The PostHog stand-in's answers: their shape, PostHog's fixed bodies, flags and decide.

The bodies are PostHog's own (``rust/capture``, ``rust/feature-flags``, ``posthog/api``);
:func:`flags_answer` and :func:`decide_answer` are the whole of the stand-in's
``/flags/`` and ``/decide/`` endpoints (see :mod:`local.standin`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from local.capture_body import decode_json_object
from local.capture_errors import RefusalError

# CaptureResponse { status: CaptureResponseCode::Ok } as axum's Json writes it.
CAPTURE_OK = b'{"status":"Ok"}'
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
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PLAIN = "text/plain; charset=utf-8"
JSON = "application/json"
HTML = "text/html; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer: status, body, its content type and any further headers."""

    status: HTTPStatus
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(cls, status: HTTPStatus, message: str) -> Answer:
        """A plain-text answer."""
        return cls(status, message.encode(), PLAIN)

    @classmethod
    def json(cls, status: HTTPStatus, payload: Any, *, compact: bool = True) -> Answer:
        """A JSON answer: compact as serde_json and axum write it, or as Django writes it."""
        separators = (",", ":") if compact else None
        return cls(status, json.dumps(payload, separators=separators).encode(), JSON)


def flags_answer(body: bytes, query: dict[str, list[str]], api_key: str) -> Answer:
    """The flags service's answer to a ``/flags/`` request for project ``api_key``."""
    try:
        document = decode_json_object(body)
    except RefusalError as refusal:
        return Answer.text(
            HTTPStatus.BAD_REQUEST,
            f"Failed to decode request: {refusal}. Please check your request format and try again.",
        )
    distinct_id = document.get("distinct_id", document.get("$distinct_id"))
    if distinct_id is None:
        return Answer.text(HTTPStatus.BAD_REQUEST, FLAGS_NO_DISTINCT_ID)
    if isinstance(distinct_id, bool) or not isinstance(distinct_id, str | int | float):
        # FlagRequest's distinct_id reads a string or a number; anything else fails it.
        return Answer.text(
            HTTPStatus.BAD_REQUEST,
            "Failed to decode request: invalid JSON. "
            "Please check your request format and try again.",
        )
    key = document.get("token", document.get("api_key"))
    if not key:
        return Answer.json(HTTPStatus.UNAUTHORIZED, FLAGS_NO_KEY)
    if key != api_key:
        return Answer.json(HTTPStatus.UNAUTHORIZED, FLAGS_BAD_KEY)
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
    return Answer.json(HTTPStatus.OK, payload)


def decide_answer(body: bytes, api_key: str) -> Answer:
    """Django's answer to a ``/decide/`` request for project ``api_key``."""
    try:
        document = decode_json_object(body)
    except RefusalError:
        document = {}
    key = document.get("api_key", document.get("token"))
    if not key or key != api_key:
        return Answer.json(HTTPStatus.UNAUTHORIZED, DECIDE_BAD_KEY, compact=False)
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
    return Answer.json(HTTPStatus.OK, payload, compact=False)
