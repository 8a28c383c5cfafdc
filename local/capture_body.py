"""Decoding a request body for the PostHog stand-in: gzip or plain, JSON, within limits.

Capture's body limits and its refusals of a body it cannot read (PostHog's
``rust/capture/src/router.rs`` and ``v0_request.rs``); the flags and decide endpoints
read their body the same way (see :mod:`local.standin`).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from local.capture_errors import RefusalError

# PostHog's limits (rust/capture/src/router.rs): /batch/ body as sent, single-event
# endpoints, decompressed body.
BATCH_BODY_LIMIT = 20 * 1024 * 1024
CAPTURE_BODY_LIMIT = 2 * 1024 * 1024
DECOMPRESSED_LIMIT = 100 * 1000 * 1000


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    """A decoded capture request: the JSON document and its text as sent."""

    document: dict[str, Any]
    text: str


def _decompress(body: bytes) -> bytes:
    if body[:2] != b"\x1f\x8b":
        return body
    try:
        return zlib.decompressobj(wbits=31).decompress(body, DECOMPRESSED_LIMIT)
    except zlib.error as exc:
        raise RefusalError(HTTPStatus.BAD_REQUEST, "invalid gzip data") from exc


def decode_json_object(body: bytes) -> dict[str, Any]:
    """A gzip or plain JSON object body (for /flags and /decide)."""
    try:
        document = json.loads(_decompress(body).decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise RefusalError(HTTPStatus.BAD_REQUEST, "the body is not JSON") from exc
    if not isinstance(document, dict):
        raise RefusalError(HTTPStatus.BAD_REQUEST, "the body is not a JSON object")
    return document


def decode_capture(body: bytes, *, single: bool) -> CaptureRequest:
    """The request body (gzip or plain) as a JSON object and its text, or capture's refusal."""
    if len(body) > (CAPTURE_BODY_LIMIT if single else BATCH_BODY_LIMIT):
        raise RefusalError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "Failed to buffer the request body: length limit exceeded",
        )
    data = _decompress(body)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RefusalError(
            HTTPStatus.BAD_REQUEST, "failed to decode request: invalid body encoding"
        ) from exc
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RefusalError(HTTPStatus.BAD_REQUEST, f"failed to parse request: {exc}") from exc
    if not isinstance(document, dict):
        raise RefusalError(
            HTTPStatus.BAD_REQUEST, "failed to parse request: the body is not a JSON object"
        )
    return CaptureRequest(document, text)
