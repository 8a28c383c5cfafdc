"""The capture stand-in enforces PostHog's documented rules over real HTTP."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from consumer.local.standin import BATCH_BODY_LIMIT, make_server

KEY = "phc_standin_test"
GOOD = {"event": "e", "distinct_id": "d", "uuid": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"}


@pytest.fixture(name="url")
def _url() -> Iterator[str]:
    server = make_server(0, KEY)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def post(
    url: str, body: Any, *, path: str = "/batch/", compress: bool = False
) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if compress:
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    return requests.post(url + path, data=data, headers=headers, timeout=10)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"api_key": KEY, "batch": [GOOD]}, 200),  # accepted
        ({"token": KEY, "batch": [GOOD]}, 200),  # token is an alias of api_key
        ({"api_key": "phc_wrong", "batch": [GOOD]}, 401),  # wrong key
        ({"batch": [GOOD]}, 401),  # no key
        ({"api_key": KEY, "batch": []}, 400),  # empty batch
        ({"api_key": KEY, "batch": [{"distinct_id": "d"}]}, 400),  # no event name
        ({"api_key": KEY, "batch": [{"event": "e"}]}, 400),  # no distinct_id
        (
            {"api_key": KEY, "batch": [{"event": "e", "properties": {"distinct_id": "d"}}]},
            200,
        ),  # id in properties
        ({"api_key": KEY, "batch": [{**GOOD, "uuid": "not-a-uuid"}]}, 400),  # invalid uuid
        (b"{not json", 400),  # malformed body
    ],
)
def test_batch_rules(url: str, body: Any, status: int) -> None:
    """Each documented rule gives PostHog's status."""
    assert status == post(url, body).status_code


def test_gzip_body_and_events_recorded(url: str) -> None:
    """A gzip body is accepted and its events are listed by /_events."""
    answer = post(url, {"api_key": KEY, "batch": [GOOD, GOOD]}, compress=True)
    assert (answer.status_code, answer.json()) == (200, {"status": 1})
    assert requests.get(url + "/_events", timeout=5).json()["total"] == 2


def test_capture_endpoint(url: str) -> None:
    """/capture/ takes one event with the key in the body."""
    assert post(url, {"api_key": KEY, **GOOD}, path="/capture/").status_code == 200


def test_body_over_20mb_is_413(url: str) -> None:
    """A body over PostHog's 20 MB cap (as sent) is refused with 413."""
    big = (
        b'{"api_key": "'
        + KEY.encode()
        + b'", "batch": [], "pad": "'
        + b"x" * BATCH_BODY_LIMIT
        + b'"}'
    )
    assert post(url, big).status_code == 413


def test_injected_failures_then_recovery(url: str) -> None:
    """_control makes the next N requests fail with a status and Retry-After."""
    requests.post(
        url + "/_control", json={"status": 429, "remaining": 2, "retry_after": "3"}, timeout=5
    )
    first = post(url, {"api_key": KEY, "batch": [GOOD]})
    second = post(url, {"api_key": KEY, "batch": [GOOD]})
    third = post(url, {"api_key": KEY, "batch": [GOOD]})
    assert [first.status_code, second.status_code, third.status_code] == [429, 429, 200]
    assert first.headers["Retry-After"] == "3"


def test_reject_named_events(url: str) -> None:
    """reject_events makes any batch holding that event name a 400."""
    requests.post(url + "/_control", json={"reject_events": ["poison"]}, timeout=5)
    assert (
        post(url, {"api_key": KEY, "batch": [GOOD, {**GOOD, "event": "poison"}]}).status_code == 400
    )
    assert post(url, {"api_key": KEY, "batch": [GOOD]}).status_code == 200


def test_hang(url: str) -> None:
    """hang_seconds delays answers (for client-timeout tests)."""
    requests.post(url + "/_control", json={"hang_seconds": 1.5}, timeout=5)
    with pytest.raises(requests.Timeout):
        requests.post(url + "/batch/", json={"api_key": KEY, "batch": [GOOD]}, timeout=0.5)
    requests.post(url + "/_reset", timeout=5)
    time.sleep(1.2)  # let the hung handler finish before the server shuts down
