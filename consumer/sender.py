"""One HTTP request to PostHog's ``/batch/`` endpoint, and what its answer means.

The transport is a seam: production uses :class:`RequestsTransport` (one pooled
``requests.Session`` per shard process); unit tests pass a function instead. Every
``requests`` exception is translated here into a :mod:`consumer.errors` type, so
nothing above this module knows which HTTP library is in use.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import requests

from consumer.batching import encode_body
from consumer.errors import (
    AuthenticationError,
    BadBatchError,
    PayloadTooLargeError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from consumer.retry import is_retryable_status, parse_retry_after

log = logging.getLogger(__name__)

BATCH_PATH = "/batch/"
USER_AGENT = "kinesis-posthog/0.1"
# Level 6 costs ~3x the CPU of level 1 for a few percent less on JSON; the body is
# small next to PostHog's 20 MB cap either way, and CPU is what limits a shard process.
GZIP_LEVEL = 1
# Only the first bytes of an error answer are kept (for logs and dead-letter reasons).
MAX_ERROR_BODY_CHARS = 500


@dataclass(frozen=True, slots=True)
class Response:
    """The parts of an HTTP answer the delivery logic looks at."""

    status: int
    headers: Mapping[str, str]
    text: str


Transport = Callable[[str, bytes, Mapping[str, str], float], Response]
"""``(url, body, headers, timeout_seconds) -> Response``; raises RetryableDeliveryError on I/O."""


class RequestsTransport:
    """The production transport: one keep-alive session, errors translated."""

    def __init__(self) -> None:
        """Open the session (connections are made lazily)."""
        self._session = requests.Session()

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Response:
        """POST ``body``; network failures become :class:`RetryableDeliveryError`."""
        try:
            answer = self._session.post(url, data=body, headers=dict(headers), timeout=timeout)
        except requests.Timeout as exc:
            raise RetryableDeliveryError(f"no answer from PostHog within {timeout:g}s") from exc
        except requests.RequestException as exc:
            raise RetryableDeliveryError(f"cannot reach PostHog: {type(exc).__name__}") from exc
        return Response(answer.status_code, answer.headers, answer.text[:MAX_ERROR_BODY_CHARS])

    def close(self) -> None:
        """Release pooled connections."""
        self._session.close()


class Sender:
    """Posts encoded events to ``<host>/batch/`` and raises unless PostHog answered 200."""

    def __init__(
        self,
        *,
        host: str,
        api_key: str,
        historical_migration: bool,
        timeout: float,
        transport: Transport | None = None,
    ) -> None:
        """Bind where and how to send; ``transport`` defaults to :class:`RequestsTransport`."""
        self._url = host.rstrip("/") + BATCH_PATH
        self._api_key = api_key
        self._historical_migration = historical_migration
        self._timeout = timeout
        self._transport: Transport = transport or RequestsTransport()

    def send(self, payloads: Sequence[bytes]) -> None:
        """Deliver one batch; return only if PostHog accepted it."""
        body = gzip.compress(
            encode_body(self._api_key, payloads, historical_migration=self._historical_migration),
            compresslevel=GZIP_LEVEL,
            mtime=0,
        )
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "User-Agent": USER_AGENT,
        }
        response = self._transport(self._url, body, headers, self._timeout)
        if response.status == 200:
            return
        raise _error_for(response, len(payloads), len(body))


def _error_for(response: Response, count: int, body_bytes: int) -> Exception:
    status = response.status
    text = response.text[:MAX_ERROR_BODY_CHARS]
    where = f"PostHog answered {status} to a batch of {count} events ({body_bytes} bytes)"
    if is_retryable_status(status):
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return RetryableDeliveryError(where, status=status, retry_after=retry_after, body=text)
    if status in (401, 403):
        return AuthenticationError(
            f"{where}: the project API key (POSTHOG_API_KEY) was refused", status=status, body=text
        )
    if status == 413:
        return PayloadTooLargeError(where, status=status, body=text)
    if status == 400:
        return BadBatchError(where, status=status, body=text)
    return PermanentDeliveryError(where, status=status, body=text)
