"""PostHog capture's rules for a decoded request and its events, as the stand-in applies them.

In capture's order (``rust/capture``; see :mod:`local.standin` for the overview): the
key's shape (:func:`token_problem`), the batch's shape (:func:`check_request`), then
(:func:`process_events`) what parsing refuses, the events filtered out, each event's
own checks, and last the size of the Kafka message each event becomes
(:mod:`local.captured_event`). A refusal is a :class:`~local.capture_errors.RefusalError`.
"""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Any

from local.capture_body import CaptureRequest
from local.capture_errors import (
    ALL_FILTERED,
    BAD_COOKIELESS_MODE,
    EMPTY_BATCH,
    EVENT_TOO_BIG,
    MISSING_KEY,
    NO_DISTINCT_ID,
    NO_EVENT_NAME,
    RefusalError,
)
from local.captured_event import (
    EVENT_LIMIT,
    CaptureEnvelope,
    captured_distinct_id,
    captured_message_bytes,
)
from local.raw_json import JSON_WHITESPACE, raw_batch

# serde_json (default features) gives up at 128 levels of nesting, the body included.
SERDE_JSON_RECURSION_LIMIT = 128
# RawRequest::events (rust/capture/src/v0_request.rs) drops these; none left is a 400.
FILTERED_EVENT_NAMES = frozenset({"$performance_event"})
# validate_token (rust/capture/src/token.rs): the longest key it lets through, in bytes,
# and the prefix of personal API keys, which capture refuses.
TOKEN_MAX_BYTES = 64
PERSONAL_KEY_PREFIX = "phx_"


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


def check_request(
    request: CaptureRequest, *, single: bool, ip: str
) -> tuple[list[Any], list[str], CaptureEnvelope]:
    """Capture's checks of the request, in its order: key shape, then the batch.

    -> (the events, their text as sent, what capture adds to each of them).
    """
    document = request.document
    key = document.get("api_key", document.get("token"))
    if single and key is None:
        properties = document.get("properties")
        key = properties.get("token") if isinstance(properties, dict) else None
    if key is None:
        raise RefusalError(HTTPStatus.UNAUTHORIZED, MISSING_KEY)
    if not isinstance(key, str):
        raise RefusalError(
            HTTPStatus.BAD_REQUEST, "failed to parse request: the api_key is not a string"
        )
    problem = token_problem(key)
    if problem is not None:
        raise RefusalError(HTTPStatus.UNAUTHORIZED, f"API key is not valid: {problem}")
    if single:
        events: Any = [document]
        raw = [request.text.strip(JSON_WHITESPACE)]
    else:
        events = document.get("batch")
        if not isinstance(events, list):
            raise RefusalError(
                HTTPStatus.BAD_REQUEST, "failed to parse request: batch is not a list"
            )
        raw = raw_batch(request.text)
    if not events:
        raise RefusalError(HTTPStatus.BAD_REQUEST, EMPTY_BATCH)
    sent_at = document.get("sent_at")
    envelope = CaptureEnvelope(
        token=key.strip(),
        ip=ip,
        sent_at=sent_at if isinstance(sent_at, str) else None,
        historical_migration=document.get("historical_migration") is True,
    )
    return events, raw, envelope


def process_events(
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
        raise RefusalError(
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
        raise RefusalError(HTTPStatus.BAD_REQUEST, ALL_FILTERED)
    for event, _ in kept:
        _validate_event(event, rejected)
    for event, _ in kept:
        if captured_message_bytes(event, envelope) > EVENT_LIMIT:
            raise RefusalError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, EVENT_TOO_BIG)
    return [event for event, _ in kept], [text for _, text in kept]


def _check_parsable(event: Any) -> None:
    """What deserialising a RawEvent (rust/common/types/src/event.rs) refuses, as a 400."""
    if not isinstance(event, dict):
        raise RefusalError(
            HTTPStatus.BAD_REQUEST, "failed to parse request: an event is not an object"
        )
    if "distinct_id" in event and "$distinct_id" in event:
        raise RefusalError(
            HTTPStatus.BAD_REQUEST, "failed to parse request: duplicate field `distinct_id`"
        )
    if "properties" in event and not isinstance(event["properties"], dict):
        raise RefusalError(
            HTTPStatus.BAD_REQUEST, "failed to parse request: properties is not an object"
        )
    identifier = event.get("uuid")
    # empty_string_uuid_is_none: null and "" are no uuid; anything else must parse.
    if identifier not in (None, ""):
        try:
            uuid.UUID(identifier if isinstance(identifier, str) else "not a string")
        except ValueError as exc:
            raise RefusalError(
                HTTPStatus.BAD_REQUEST, "failed to parse request: invalid uuid"
            ) from exc


def _validate_event(event: dict[str, Any], rejected: set[str]) -> None:
    """process_single_event's refusals (rust/capture/src/events/analytics.rs), in its order."""
    name = event.get("event")
    if not isinstance(name, str) or not name:
        raise RefusalError(HTTPStatus.BAD_REQUEST, NO_EVENT_NAME)
    if captured_distinct_id(event) is None:
        raise RefusalError(HTTPStatus.BAD_REQUEST, NO_DISTINCT_ID)
    properties = event.get("properties")
    cookieless = (
        properties.get("$cookieless_mode", False) if isinstance(properties, dict) else False
    )
    if not isinstance(cookieless, bool):  # null included: present and not a boolean
        raise RefusalError(HTTPStatus.BAD_REQUEST, BAD_COOKIELESS_MODE)
    if name in rejected:
        raise RefusalError(HTTPStatus.BAD_REQUEST, f"event {name!r} rejected (stand-in rule)")


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
