"""Every error this package raises on purpose, in one place.

The hierarchy follows what the caller must do about each failure::

    ConsumerError
    ├── ConfigError               bad settings: fail at start-up, before any record is read
    ├── RecordError               one record cannot become an event: dead-letter it, go on
    ├── DeadLetterError           the dead-letter destination refused a write: do not checkpoint
    ├── NotADeadLetterError       an entry read back is no dead letter (a line torn by a crash,
    │                             a hand-edited one): redrive skips it, naming it; for
    │                             ``preview --dead-letter`` it is a ConfigError
    ├── DependencyError           start-up: Kinesis, DynamoDB or the dead-letter destination
    │                             cannot be reached or refused us: exit 69, naming it
    └── DeliveryError             PostHog did not accept a batch (carries status, retry_after)
        ├── RetryableDeliveryError    connection error, timeout, 408, 429, 5xx: back off, resend
        └── PermanentDeliveryError    resending the same bytes cannot succeed (also any other
            │                         4xx); one that leaves delivery ends the shard process
            │                         with exit status 78, nothing checkpointed
            ├── PayloadTooLargeError  413: split the batch
            ├── BadBatchError         400: find the offending events, dead-letter only them
            ├── AuthenticationError   401/403: stop consuming, checkpoint nothing, exit loudly
            ├── WrongHostError        a 3xx, or a 2xx that is not PostHog's answer: posthogHost
            │                         (or a proxy in front of it) is not PostHog's capture; stop
            └── RefusalStreakError    events refused one by one and no sign PostHog judged them
                                      (see consumer.delivery): stop before dead-lettering

``paths.PathSyntaxError`` (a ``ValueError`` of the path parser, which imports nothing of
ours) becomes a ConfigError where settings are read. Foreign exceptions (``requests``,
``botocore``, ``json``, ...) are translated into these at the module that talks to the
foreign library, with ``raise ... from exc``.
"""

from __future__ import annotations


class ConsumerError(Exception):
    """Base class of every error raised by this package."""


class ConfigError(ConsumerError):
    """A setting is missing or invalid; the message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        """Build the one-line message operators see at start-up."""
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid configuration {key} = {value!r}: {allowed}")


class RecordError(ConsumerError):
    """A record cannot become a PostHog event; ``reason`` is a stable, greppable code."""

    def __init__(self, reason: str, detail: str) -> None:
        """Keep the code (for counting) apart from the human detail (for the dead-letter)."""
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class DeadLetterError(ConsumerError):
    """Writing to the dead-letter destination failed, so the record must not be checkpointed."""


class NotADeadLetterError(ConsumerError):
    """An entry read back is not a dead letter as the sinks write it; the message says why."""


class DependencyError(ConsumerError):
    """A dependency cannot be reached or refused us at start-up; the message names it."""


class DeliveryError(ConsumerError):
    """PostHog did not accept a batch."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        body: str = "",
    ) -> None:
        """Carry what the retry policy and the dead-letter writer need to decide."""
        self.status = status
        self.retry_after = retry_after
        self.body = body
        super().__init__(message)


class RetryableDeliveryError(DeliveryError):
    """The outcome is unknown or temporary; the same batch may be sent again."""


class PermanentDeliveryError(DeliveryError):
    """PostHog refused the batch; sending the same bytes again cannot succeed."""


class PayloadTooLargeError(PermanentDeliveryError):
    """413: the body (or one event in it) is over PostHog's size limit."""


class BadBatchError(PermanentDeliveryError):
    """400: at least one event in the batch is malformed."""


class AuthenticationError(PermanentDeliveryError):
    """401/403: the project API key is wrong; this is a configuration error found late."""


class WrongHostError(PermanentDeliveryError):
    """posthogHost answered, but not as PostHog's capture does (a redirect, a web page).

    A redirect is never followed: ``requests`` would resend the POST as a GET without a
    body. Resending cannot help either way; the setting (or the proxy) must be fixed.
    """


class RefusalStreakError(PermanentDeliveryError):
    """PostHog refused event after event one by one and gave no sign it judged them.

    Raised by delivery instead of dead-lettering, so that a host answering 400 to
    everything (a wrong path behind a proxy) does not empty the stream into the
    dead-letter destination; nothing of the batch is checkpointed.
    """
