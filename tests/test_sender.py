"""One POST to /batch/: what is sent, and what each answer becomes."""

from __future__ import annotations

import pytest
import requests

from consumer import errors
from consumer.sender import RequestsTransport, Sender
from tests.conftest import ScriptedTransport


def sender_with(transport: ScriptedTransport) -> Sender:
    return Sender(
        host="http://ph.local/",
        api_key="phc_k",
        historical_migration=False,
        timeout=3,
        transport=transport,
    )


def test_request_shape() -> None:
    """gzip JSON to <host>/batch/ with the key in the body and the configured timeout."""
    transport = ScriptedTransport(200)
    sender_with(transport).send([b'{"event":"a","distinct_id":"d"}'])
    request = transport.requests[0]
    assert request["url"] == "http://ph.local/batch/"
    assert request["headers"]["Content-Encoding"] == "gzip"
    assert request["body"]["api_key"] == "phc_k"
    assert request["body"]["batch"] == [{"event": "a", "distinct_id": "d"}]
    assert request["timeout"] == 3


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (503, errors.RetryableDeliveryError),  # transient
        (500, errors.RetryableDeliveryError),  # server error
        (429, errors.RetryableDeliveryError),  # rate limited
        (408, errors.RetryableDeliveryError),  # request timeout
        (400, errors.BadBatchError),  # a bad event somewhere
        (413, errors.PayloadTooLargeError),  # too big
        (401, errors.AuthenticationError),  # wrong key
        (403, errors.AuthenticationError),  # forbidden
        (404, errors.PermanentDeliveryError),  # wrong host or path
    ],
)
def test_answers_become_errors(answer: int, error: type[Exception]) -> None:
    """Every non-200 answer raises the error type that tells delivery what to do."""
    with pytest.raises(error):
        sender_with(ScriptedTransport(answer)).send([b"{}"])


def test_retry_after_is_carried() -> None:
    """A 429's Retry-After reaches the retry policy through the error."""
    with pytest.raises(errors.RetryableDeliveryError) as caught:
        sender_with(ScriptedTransport((429, {"Retry-After": "12"}))).send([b"{}"])
    assert caught.value.retry_after == 12.0


def test_requests_errors_are_translated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connection errors and timeouts from requests become RetryableDeliveryError."""
    transport = RequestsTransport()

    def refuse(*_: object, **__: object) -> None:
        raise requests.ConnectionError("refused")

    monkeypatch.setattr(transport._session, "post", refuse)
    with pytest.raises(errors.RetryableDeliveryError) as caught:
        transport("http://127.0.0.1:9/batch/", b"{}", {}, 1.0)
    assert isinstance(caught.value.__cause__, requests.ConnectionError)
    transport.close()
