"""How the PostHog stand-in's capture refuses a request: the exception and capture's texts.

The texts are CaptureError's messages in PostHog's ``rust/capture/src/api.rs``, sent as
capture sends them: plain text with the refusal's status (see :mod:`local.standin`).
"""

from __future__ import annotations

from http import HTTPStatus

# Capture's plain-text errors (CaptureError's messages in rust/capture/src/api.rs).
MISSING_KEY = "event submitted without an api_key"
EMPTY_BATCH = "request holds no event"
NO_EVENT_NAME = "event submitted with an empty event name"
NO_DISTINCT_ID = "event submitted without a distinct_id"
BAD_COOKIELESS_MODE = "event submitted with invalid cookieless mode"
ALL_FILTERED = "payload empty after filtering invalid event types"
# EventTooBig as the Kafka sink raises it when librdkafka refuses the message on send.
EVENT_TOO_BIG = "maximum event size exceeded: Event rejected by kafka during send"


class RefusalError(Exception):
    """Capture refuses the request: answer ``status`` with the message as plain text."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        """Refuse with ``status`` and capture's ``message``."""
        self.status = status
        super().__init__(message)
