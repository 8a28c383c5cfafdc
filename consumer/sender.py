"""One HTTP request to PostHog's ``/batch/`` endpoint, and what its answer means.

The transport is a seam: production uses :class:`RequestsTransport` (one pooled
``requests.Session`` per shard process); unit tests pass a function instead. Every
``requests`` exception is translated here into a :mod:`consumer.errors` type, so
nothing above this module knows which HTTP library is in use.

Only PostHog's own answer counts as accepted: a 200 whose body is capture's
``CaptureResponse`` (``{"status":"Ok"}`` from the Rust capture service,
``{"status": 1}`` from the older Django one). A redirect is never followed (``requests``
would resend the POST as a GET without a body) and, like a 200 from a web page or a
proxy, means ``posthogHost`` is wrong: :class:`~consumer.errors.WrongHostError`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import requests
from isal import isal_zlib

from consumer.batching import encode_body
from consumer.errors import (
    AuthenticationError,
    BadBatchError,
    PayloadTooLargeError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    WrongHostError,
)
from consumer.retry import is_retryable_status, parse_retry_after

log = logging.getLogger(__name__)

BATCH_PATH = "/batch/"
USER_AGENT = "kinesis-posthog/0.1"
# Bodies are gzipped by ISA-L (python-isal), not zlib: CPU is what limits a shard
# process, and ISA-L's level 1 compresses 1,000 benchmark events (407 KB) in 0.23 ms to
# 1/7.5 of their size, where zlib's level 1 takes 2.0 ms for 1/6.7 (level 6: 4.0 ms,
# 1/7.9). ISA-L's levels run from 0 to 3; 0 is no faster here and compresses less (1/5.2).
GZIP_LEVEL = 1
# zlib's wbits for a gzip wrapper (header with mtime 0, deflate stream, CRC and size).
GZIP_WBITS = 31
# Only the first bytes of an error answer are kept (for logs and dead-letter reasons).
MAX_ERROR_BODY_CHARS = 500
# How much of an answer is read at most. PostHog's answers are tens of bytes (capture's
# CaptureResponse, its one-line plain-text errors); 64 KiB leaves room for the start of
# a proxy's error page, and a multi-megabyte page is never held in memory whole.
MAX_ANSWER_BYTES = 64 * 1024
READ_CHUNK_BYTES = 8 * 1024
# How much of an answer that is not PostHog's goes into the error message.
MAX_EXCERPT_CHARS = 120
# PostHog's capture sends no quota signal on /batch/ today (an over-quota project gets
# 200 and its events are dropped); if a quota_limited field ever appears, say so, but
# not on every batch.
QUOTA_WARNING_INTERVAL_SECONDS = 300.0

# CaptureResponseCode::Ok as serde serialises a unit variant (rust/capture/src/api.rs),
# and the integer the older Django capture answered with.
_POSTHOG_OK_NAME = "Ok"
_POSTHOG_OK_NUMBER = 1
_HTTP_OK = 200
_SUCCESS = range(200, 300)
_REDIRECTS = range(300, 400)


@dataclass(frozen=True, slots=True)
class Response:
    """The parts of an HTTP answer the delivery logic looks at (``text``: a bounded prefix)."""

    status: int
    headers: Mapping[str, str]
    text: str


Transport = Callable[[str, bytes, Mapping[str, str], float], Response]
"""``(url, body, headers, timeout_seconds) -> Response``; raises RetryableDeliveryError on I/O.

A transport never follows redirects and returns at most :data:`MAX_ANSWER_BYTES` of the
answer's body.
"""


@dataclass(frozen=True, slots=True)
class _Environment:
    """What the environment says for requests to one URL."""

    proxies: dict[str, str]
    verify: bool | str | None  # True, or a CA bundle's path
    auth: tuple[str, str] | None  # from ~/.netrc (or $NETRC), as requests would add it


class RequestsTransport:
    """The production transport: one keep-alive session, errors translated.

    Neither the request body nor its headers are logged or put into error messages:
    the body holds the project API key.
    """

    def __init__(self, max_answer_bytes: int = MAX_ANSWER_BYTES) -> None:
        """Open the session (connections are made lazily)."""
        self._session = requests.Session()
        # What the environment says for each URL (proxies, CA bundle, .netrc) is read at
        # its first request (_read_environment) and passed with every request: the
        # session would read it again for each one (0.2-0.4 ms of CPU per batch, on the
        # thread the mapper shares the GIL with).
        self._session.trust_env = False
        self._environment: dict[str, _Environment] = {}
        self._max_answer_bytes = max_answer_bytes

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Response:
        """POST ``body``; network failures become :class:`RetryableDeliveryError`."""
        # Uncompressed answers, so that the cap counts the bytes we actually hold.
        sent = {"Accept-Encoding": "identity", **headers}
        environment = self._environment.get(url) or self._read_environment(url)
        try:
            answer = self._session.post(
                url,
                data=body,
                headers=sent,
                timeout=timeout,
                allow_redirects=False,
                stream=True,
                proxies=environment.proxies,
                verify=environment.verify,
                auth=environment.auth,
            )
            try:
                prefix = _read_prefix(answer, self._max_answer_bytes)
            finally:
                answer.close()
        except requests.Timeout as exc:
            raise RetryableDeliveryError(f"no answer from PostHog within {timeout:g}s") from exc
        except requests.RequestException as exc:
            raise RetryableDeliveryError(f"cannot reach PostHog: {type(exc).__name__}") from exc
        return Response(answer.status_code, answer.headers, _decode(prefix, answer.encoding))

    def _read_environment(self, url: str) -> _Environment:
        """What requests takes from the environment for ``url``, read as it reads it, once.

        ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` with ``NO_PROXY``,
        ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, and credentials for the host in
        ``~/.netrc`` (or ``$NETRC``).
        """
        # A session of its own, reading the environment as every session does by default;
        # it sends nothing.
        with requests.Session() as reader:
            settings = reader.merge_environment_settings(url, {}, None, None, None)
        environment = _Environment(
            dict(settings["proxies"]), settings["verify"], requests.utils.get_netrc_auth(url)
        )
        self._environment[url] = environment
        return environment

    def close(self) -> None:
        """Release pooled connections."""
        self._session.close()


def _read_prefix(answer: requests.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of the body; the rest is never read (closing drops it)."""
    data = bytearray()
    for chunk in answer.iter_content(chunk_size=READ_CHUNK_BYTES):
        data += chunk
        if len(data) >= limit:
            break
    return bytes(data[:limit])


def _decode(data: bytes, encoding: str | None) -> str:
    try:
        return data.decode(encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")


class Sender:
    """Posts encoded events to ``<host>/batch/`` and raises unless PostHog accepted them."""

    def __init__(  # noqa: PLR0913 - the clock is injected for tests
        self,
        *,
        host: str,
        api_key: str,
        historical_migration: bool,
        timeout: float,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Bind where and how to send; ``transport`` defaults to :class:`RequestsTransport`."""
        self._url = host.rstrip("/") + BATCH_PATH
        self._api_key = api_key
        self._historical_migration = historical_migration
        self._timeout = timeout
        self._transport: Transport = transport or RequestsTransport()
        self._clock = clock
        self._quota_warned_at: float | None = None

    def send(self, payloads: Sequence[bytes]) -> int:
        """Deliver one batch; return (the request body's size) only if PostHog accepted it."""
        body = isal_zlib.compress(
            encode_body(self._api_key, payloads, historical_migration=self._historical_migration),
            GZIP_LEVEL,
            wbits=GZIP_WBITS,
        )
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "User-Agent": USER_AGENT,
        }
        response = self._transport(self._url, body, headers, self._timeout)
        where = (
            f"PostHog answered {response.status} to a batch of {len(payloads)} events "
            f"({len(body)} bytes)"
        )
        if response.status in _SUCCESS:
            self._check_accepted(response, where)
            return len(body)
        if response.status in _REDIRECTS:
            raise self._redirect_error(response, where)
        raise self._error_for(response, where)

    def _check_accepted(self, response: Response, where: str) -> None:
        """Return if the answer is PostHog's acceptance; raise WrongHostError otherwise."""
        document = _json_object(response.text)
        status = None if document is None else document.get("status")
        if response.status != _HTTP_OK or not _is_posthog_ok(status):
            content_type = _header(response.headers, "Content-Type") or "no Content-Type"
            raise WrongHostError(
                f"posthogHost answered {response.status} but not as PostHog does: expected "
                f'{{"status":"Ok"}} or {{"status":1}}, got {content_type} '
                f"{self._excerpt(response.text)!r} ({where}): is it a proxy or a web page? "
                "Nothing of the batch was checkpointed",
                status=response.status,
                body=self._excerpt(response.text),
            )
        if document is not None and "quota_limited" in document:
            self._warn_quota(document["quota_limited"])

    def _warn_quota(self, limited: object) -> None:
        now = self._clock()
        last = self._quota_warned_at
        if last is not None and now - last < QUOTA_WARNING_INTERVAL_SECONDS:
            return
        self._quota_warned_at = now
        log.warning(
            "PostHog accepted the batch but says the project is quota limited (%s): "
            "PostHog may drop events over the quota",
            self._excerpt(json.dumps(limited)),
        )

    def _redirect_error(self, response: Response, where: str) -> WrongHostError:
        location = _header(response.headers, "Location")
        target = repr(self._excerpt(location)) if location else "nowhere (no Location header)"
        return WrongHostError(
            f"{where}, redirecting to {target}: redirects are not followed (the POST would "
            "arrive as a GET without its events); set posthogHost to the address PostHog "
            "answers at",
            status=response.status,
            body=self._excerpt(response.text),
        )

    def _error_for(self, response: Response, where: str) -> Exception:
        status = response.status
        text = self._scrub(response.text[:MAX_ERROR_BODY_CHARS])
        if is_retryable_status(status):
            retry_after = parse_retry_after(_header(response.headers, "Retry-After"))
            return RetryableDeliveryError(where, status=status, retry_after=retry_after, body=text)
        if status in (401, 403):
            return AuthenticationError(
                f"{where}: the project API key (POSTHOG_API_KEY) was refused "
                f"({self._excerpt(response.text)!r})",
                status=status,
                body=text,
            )
        if status == 413:
            return PayloadTooLargeError(where, status=status, body=text)
        if status == 400:
            return BadBatchError(where, status=status, body=text)
        return PermanentDeliveryError(where, status=status, body=text)

    def _scrub(self, text: str) -> str:
        """``text`` with the API key masked, should a proxy echo our request."""
        return text.replace(self._api_key, self._api_key[:4] + "...") if self._api_key else text

    def _excerpt(self, text: str) -> str:
        """A short one-line excerpt of an answer for messages (key masked)."""
        flat = " ".join(self._scrub(text).split())
        if len(flat) > MAX_EXCERPT_CHARS:
            return flat[:MAX_EXCERPT_CHARS] + "..."
        return flat


def _is_posthog_ok(status: object) -> bool:
    # type() rather than isinstance(): True == 1 in Python, and PostHog never sends it.
    return status == _POSTHOG_OK_NAME or (type(status) is int and status == _POSTHOG_OK_NUMBER)


def _json_object(text: str) -> dict[str, object] | None:
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, whatever the case of its name (transports may give plain dicts)."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)
