"""The capture stand-in enforces PostHog's documented rules over real HTTP."""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from local.capture_body import BATCH_BODY_LIMIT
from local.captured_event import EVENT_LIMIT, CaptureEnvelope, captured_message_bytes, ryu
from local.standin import make_server

KEY = "phc_standin_test"
OTHER_KEY = "phc_another_project"
GOOD = {"event": "e", "distinct_id": "d", "uuid": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"}
# What PostHog's Rust capture answers to an accepted batch, byte for byte.
CAPTURE_OK = b'{"status":"Ok"}'


@contextlib.contextmanager
def running(record_file: Path | None = None) -> Iterator[str]:
    server = make_server(0, KEY, record_file)
    # A short poll interval: shutdown() waits for it, once per test.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(name="url")
def _url() -> Iterator[str]:
    with running() as url:
        yield url


def get(url: str, path: str) -> Any:
    return requests.get(url + path, timeout=5).json()


def control(url: str, **settings: Any) -> None:
    requests.post(url + "/_control", json=settings, timeout=5).raise_for_status()


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
        ({"api_key": f" {KEY}\n", "batch": [GOOD]}, 200),  # capture trims the key
        ({"api_key": OTHER_KEY, "batch": [GOOD]}, 200),  # well-formed wrong key: 200, dropped
        ({"api_key": "not-even-phc", "batch": [GOOD]}, 200),  # shape only: any prefix
        ({"batch": [GOOD]}, 401),  # no key
        ({"api_key": "", "batch": [GOOD]}, 401),  # empty
        ({"api_key": " \n", "batch": [GOOD]}, 401),  # empty once trimmed
        ({"api_key": "phx_personal_key", "batch": [GOOD]}, 401),  # a personal API key
        ({"api_key": "phc_" + "x" * 61, "batch": [GOOD]}, 401),  # over 64 bytes
        ({"api_key": "phc_é", "batch": [GOOD]}, 401),  # not ASCII
        ({"api_key": "phc_a\u0000b", "batch": [GOOD]}, 401),  # a NUL byte
        ({"api_key": "phx_personal_key", "batch": []}, 401),  # the key is checked first
        ({"api_key": KEY, "batch": []}, 400),  # empty batch
        ({"api_key": KEY, "batch": [{"distinct_id": "d"}]}, 400),  # no event name
        ({"api_key": KEY, "batch": [{"event": "e"}]}, 400),  # no distinct_id
        ({"api_key": OTHER_KEY, "batch": [{"event": "e"}]}, 400),  # events checked whatever the key
        (
            {"api_key": KEY, "batch": [{"event": "e", "properties": {"distinct_id": "d"}}]},
            200,
        ),  # id in properties
        ({"api_key": KEY, "batch": [{**GOOD, "uuid": "not-a-uuid"}]}, 400),  # invalid uuid
        (
            {"api_key": KEY, "batch": [{**GOOD, "uuid": ""}]},
            200,
        ),  # "" is no uuid (capture mints one)
        ({"api_key": KEY, "batch": [{**GOOD, "uuid": None}]}, 200),  # so is null
        ({"api_key": KEY, "batch": [{**GOOD, "properties": []}]}, 400),  # properties not an object
        (b"{not json", 400),  # malformed body
        (b"\xff\xfe{}", 400),  # not UTF-8
    ],
)
def test_batch_rules(url: str, body: Any, status: int) -> None:
    """Each of capture's rules gives capture's status."""
    assert status == post(url, body).status_code


def batch_of(*events: dict[str, Any]) -> dict[str, Any]:
    return {"api_key": KEY, "batch": list(events)}


@pytest.mark.parametrize(
    ("event", "status"),
    [
        ({**GOOD, "distinct_id": " \t\n"}, 400),  # blank once trimmed: MissingDistinctId
        ({**GOOD, "distinct_id": "\u3000\u00a0"}, 400),  # Unicode White_Space trims too
        ({**GOOD, "distinct_id": " u1 "}, 200),  # not blank: kept as sent
        ({**GOOD, "distinct_id": "\x1c"}, 200),  # Python's strip() would strip it; Rust's trim not
        ({**GOOD, "distinct_id": "\x00"}, 200),  # NUL becomes U+FFFD, which is not blank
        ({**GOOD, "distinct_id": 7}, 200),  # a number is stringified
        ({**GOOD, "distinct_id": None, "properties": {"distinct_id": "p"}}, 200),  # null: property
        ({**GOOD, "distinct_id": None, "properties": {"distinct_id": " "}}, 400),  # blank property
        ({"event": "e", "$distinct_id": "d"}, 200),  # the $distinct_id alias
        ({**GOOD, "$distinct_id": "d"}, 400),  # both: serde's duplicate field
        ({**GOOD, "properties": {"$cookieless_mode": True}}, 200),  # a boolean
        ({**GOOD, "properties": {"$cookieless_mode": "true"}}, 400),  # InvalidCookielessMode
        ({**GOOD, "properties": {"$cookieless_mode": None}}, 400),  # null is present, not boolean
        ({**GOOD, "properties": {"$cookieless_mode": 1}}, 400),  # nor is a number
        (
            {**GOOD, "event": "$performance_event"},
            400,
        ),  # dropped, leaving none: EmptyPayloadFiltered
        ({**GOOD, "properties": {"x": 1e400}}, 400),  # inf: serde_json's number out of range
    ],
)
def test_event_rules(url: str, event: dict[str, Any], status: int) -> None:
    """Each of process_single_event's refusals (and parsing's, for one event) gives its status."""
    answer = post(url, batch_of(event))
    assert status == answer.status_code, answer.text


@pytest.mark.parametrize(
    ("events", "text"),
    [
        (
            [{**GOOD, "distinct_id": "  "}],
            "event submitted without a distinct_id",
        ),  # MissingDistinctId
        (
            [{**GOOD, "properties": {"$cookieless_mode": "on"}}],
            "event submitted with invalid cookieless mode",
        ),  # InvalidCookielessMode
        (
            [{**GOOD, "event": "$performance_event"}],
            "payload empty after filtering invalid event types",
        ),  # EmptyPayloadFiltered
        (
            [{**GOOD, "properties": {"s": '"' * 300_000}}, {**GOOD, "distinct_id": " "}],
            "event submitted without a distinct_id",
        ),  # every event is validated before the sink measures any
    ],
)
def test_refusals_are_captures_plain_text(url: str, events: list[Any], text: str) -> None:
    """Each refusal carries capture's message, and validation precedes the size check."""
    answer = post(url, batch_of(*events))
    assert (answer.status_code, answer.text) == (400, text)


def test_performance_events_are_dropped_from_a_batch(url: str) -> None:
    """Among other events a $performance_event is dropped, not refused: 200, never stored."""
    answer = post(url, batch_of(GOOD, {**GOOD, "event": "$performance_event"}))
    assert answer.status_code == 200
    assert [e["event"] for e in get(url, "/_events")["events"]] == ["e"]
    assert get(url, "/_stats")["dropped"] == {"performance_event": 1}


def event_with(value: Any, count: int) -> dict[str, Any]:
    return {**GOOD, "properties": {"v": [value] * count}}


@pytest.mark.parametrize(
    ("event", "status"),
    [
        # 300,000 quotes: 600 KB as sent (\"), 1.2 MB once escaped again inside the message
        ({**GOOD, "properties": {"s": '"' * 300_000}}, 413),
        ({**GOOD, "properties": {"s": "x" * 600_000}}, 200),  # the same size as sent, no quotes
        ({**GOOD, "properties": {"s": "\\" * 300_000}}, 413),  # backslashes likewise
        ({**GOOD, "properties": {"s": "\x01" * 120_000}}, 200),  # \u0001: 720 KB, 840 KB escaped
        ({**GOOD, "properties": {"s": "\x01" * 150_000}}, 413),  # 900 KB, 1.05 MB escaped
        # 1e-05 is 5 bytes as Python writes it, 7 as serde_json does (0.00001)
        (event_with(1e-05, 125_000), 413),  # 750 KB sent, 1 MB in the message
        (event_with(1e-06, 125_000), 200),  # 1e-06 is shorter as serde_json writes it (1e-6)
        ({**GOOD, "event": "n" * 340_000}, 413),  # the name is in the message three times
        ({**GOOD, "event": "n" * 320_000}, 200),  # just under: 3 x 320 KB and the rest
    ],
)
def test_event_size_is_measured_as_capture_measures_it(
    url: str, event: dict[str, Any], status: int
) -> None:
    """An event is too big when capture's Kafka message of it is, not when its own text is:
    each of these is under 1 MB as sent."""
    assert len(json.dumps(event).encode()) < EVENT_LIMIT
    answer = post(url, batch_of(event), compress=True)
    assert status == answer.status_code
    if status == 413:
        assert answer.text == "maximum event size exceeded: Event rejected by kafka during send"


def test_measure_counts_the_message_not_only_the_event() -> None:
    """A small event's message is its text escaped again, plus key, headers and overhead."""
    envelope = CaptureEnvelope(token=KEY)
    plain = captured_message_bytes({**GOOD, "properties": {"s": "ab"}}, envelope)
    quoted = captured_message_bytes({**GOOD, "properties": {"s": 'a"'}}, envelope)
    named = captured_message_bytes({**GOOD, "event": "ee", "properties": {"s": "ab"}}, envelope)
    assert quoted - plain == 3  # " is \" in data, \\\" in the message: 4 bytes for 1
    assert named - plain == 3  # one more byte of name in data, in the event field, in a header
    assert plain > len(json.dumps(GOOD))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e-05, "0.00001"),  # positional from exponent -5 (Python: 1e-05)
        (1.5e-05, "0.000015"),  # with more digits
        (1e-06, "1e-6"),  # scientific below, no leading zero in the exponent
        (-2.5e-07, "-2.5e-7"),  # negative
        (0.0001, "0.0001"),  # as Python
        (1e15, "1000000000000000.0"),  # integral, positional up to 16 digits
        (1e16, "1e16"),  # scientific from 17 digits, no "+"
        (123.456, "123.456"),  # plain
        (-0.0, "-0.0"),  # negative zero
        (1.7976931348623157e308, "1.7976931348623157e308"),  # the largest double
        (5e-324, "5e-324"),  # the smallest
    ],
)
def test_ryu_writes_doubles_as_serde_json_does(value: float, text: str) -> None:
    """The stand-in's model of serde_json's float output (ryu's format64)."""
    assert ryu(value) == text


@pytest.mark.parametrize(
    ("key", "text"),
    [
        (None, "event submitted without an api_key"),  # CaptureError::NoTokenError
        ("phx_personal_key", "API key is not valid: personal_api_key"),  # validate_token
        ("", "API key is not valid: empty"),
        ("phc_" + "x" * 61, "API key is not valid: too_long"),
    ],
)
def test_401_is_captures_plain_text(url: str, key: str | None, text: str) -> None:
    """A refused key gets capture's plain-text reason, as PostHog sends it."""
    body: dict[str, Any] = {"batch": [GOOD]} if key is None else {"api_key": key, "batch": [GOOD]}
    answer = post(url, body)
    assert (answer.status_code, answer.text) == (401, text)
    assert answer.headers["Content-Type"].startswith("text/plain")


def test_wrong_well_formed_key_is_answered_200_and_dropped(url: str) -> None:
    """As in PostHog: capture says 200 to any well-formed key; the events never arrive."""
    answer = post(url, {"api_key": OTHER_KEY, "batch": [GOOD, GOOD]}, compress=True)
    assert (answer.status_code, answer.content) == (200, CAPTURE_OK)
    assert get(url, "/_events")["total"] == 0
    stats = get(url, "/_stats")
    assert stats["dropped"] == {"invalid_token": 2}
    assert stats["events"] == 0
    assert get(url, "/_requests")["requests"][-1]["dropped"] == 2


def test_gzip_body_and_events_recorded(url: str) -> None:
    """A gzip body is accepted and its events are listed by /_events."""
    answer = post(url, {"api_key": KEY, "batch": [GOOD, GOOD]}, compress=True)
    assert (answer.status_code, answer.content) == (200, CAPTURE_OK)
    assert answer.headers["Content-Type"] == "application/json"
    assert get(url, "/_events")["total"] == 2
    assert get(url, "/_stats")["dropped"] == {}


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


# A batch written by hand: odd spacing, escapes, nested values, brackets and commas in
# strings; the stand-in must keep each event's text exactly as sent.
RAW_EVENTS = [
    '{"event":"a","distinct_id":"d1","properties":{"s":"x],[y","q":"\\"quoted\\""}}',
    '{ "distinct_id" : "d2" ,\n  "event" : "caf\\u00e9" , "properties" : { "n" : [1, 2.50, {"k": null}] } }',
    '{"event":"\u00e9t\u00e9","distinct_id":"d3","properties":{"e":1e3,"t":true}}',
]
RAW_BODY = (
    '{ "api_key" : "'
    + KEY
    + '",\n "sent_at": null, "batch" : [ '
    + " ,\n\t".join(RAW_EVENTS)
    + ' ] , "historical_migration": false }'
)


@pytest.mark.parametrize(
    "compress",
    [
        False,  # plain JSON
        True,  # gzip, as the sender sends it
    ],
)
def test_raw_events_are_byte_exact(url: str, compress: bool) -> None:
    """/_raw gives each accepted event's text as sent, aligned with /_events."""
    answer = post(url, RAW_BODY.encode(), compress=compress)
    assert answer.status_code == 200
    raw = get(url, "/_raw")
    assert raw == {"raw": RAW_EVENTS, "total": 3}
    events = get(url, "/_events")["events"]
    assert events == [json.loads(text) for text in RAW_EVENTS]
    assert get(url, "/_raw?since=2")["raw"] == RAW_EVENTS[2:]


def test_raw_event_of_a_single_event_endpoint(url: str) -> None:
    """On /capture/ the whole body is the event."""
    text = '{"api_key": "' + KEY + '", "event": "one",  "distinct_id": "d"}'
    assert post(url, text.encode(), path="/capture/").status_code == 200
    assert get(url, "/_raw")["raw"] == [text]


def test_record_file_keeps_raw_events_across_restarts(tmp_path: Path) -> None:
    """A restarted stand-in still knows what it accepted, text included; files written by
    earlier versions (one parsed event per line) still load."""
    record_file = tmp_path / "events.jsonl"
    old_line = json.dumps({"event": "old", "distinct_id": "d0"})
    record_file.write_text(old_line + "\n", encoding="utf-8")
    with running(record_file) as url:
        assert post(url, RAW_BODY.encode(), compress=True).status_code == 200
    with running(record_file) as url:
        assert get(url, "/_raw")["raw"] == [old_line, *RAW_EVENTS]
        assert [e["event"] for e in get(url, "/_events")["events"]] == [
            "old",
            *(json.loads(t)["event"] for t in RAW_EVENTS),
        ]


FLAGS_BAD_KEY = {
    "type": "authentication_error",
    "code": "authentication_failed",
    "detail": "The provided API key is invalid or has expired. "
    "Please check your API key and try again.",
    "attr": None,
}
DECIDE_BAD_KEY = {
    "type": "authentication_error",
    "code": "invalid_api_key",
    "detail": "Project API key invalid. You can find your project API key in PostHog project settings.",
    "attr": None,
}


@pytest.mark.parametrize(
    ("path", "body", "status", "expected"),
    [
        # /flags, the flags service: a known key gets flags, any other key a 401 JSON
        ("/flags/?v=2", {"api_key": KEY, "distinct_id": "x"}, 200, {"flags": {}}),
        ("/flags?v=2", {"token": KEY, "distinct_id": "x"}, 200, {"flags": {}}),  # alias
        ("/flags/", {"api_key": KEY, "distinct_id": "x"}, 200, {"featureFlags": {}}),  # legacy
        ("/flags/?v=2", {"api_key": OTHER_KEY, "distinct_id": "x"}, 401, FLAGS_BAD_KEY),
        ("/flags/?v=2", {"api_key": "phx_personal", "distinct_id": "x"}, 401, FLAGS_BAD_KEY),
        (
            "/flags/?v=2",
            {"distinct_id": "x"},
            401,
            {"type": "authentication_error", "code": "not_authenticated"},
        ),  # no key at all
        ("/flags/?v=2", {"api_key": KEY}, 400, None),  # no distinct_id
        ("/flags/?v=2", {"api_key": KEY, "distinct_id": None}, 400, None),  # null is none either
        ("/flags/?v=2", {"api_key": KEY, "distinct_id": ""}, 200, {"flags": {}}),  # empty is fine
        ("/flags/?v=2", {"api_key": KEY, "distinct_id": 42}, 200, {"flags": {}}),  # numbers too
        ("/flags/?v=2", {"api_key": KEY, "distinct_id": ["x"]}, 400, None),  # not a string
        ("/flags/?v=2", {"api_key": KEY, "$distinct_id": "x"}, 200, {"flags": {}}),  # alias
        # /decide, older self-hosted PostHog
        ("/decide/?v=3", {"api_key": KEY, "distinct_id": "x"}, 200, {"featureFlags": {}}),
        ("/decide/?v=3", {"api_key": OTHER_KEY, "distinct_id": "x"}, 401, DECIDE_BAD_KEY),
        ("/decide/?v=3", {"distinct_id": "x"}, 401, DECIDE_BAD_KEY),  # no key
    ],
)
def test_flags_and_decide(
    url: str, path: str, body: dict[str, Any], status: int, expected: dict[str, Any] | None
) -> None:
    """The key lookups answer as PostHog's flags service and /decide do."""
    answer = post(url, body, path=path)
    assert answer.status_code == status
    if expected is not None:
        document = answer.json()
        assert {k: document.get(k) for k in expected} == expected
    if status == 200:
        assert answer.json()["errorsWhileComputingFlags"] is False


def test_flags_takes_gzip_and_names_the_request(url: str) -> None:
    """A gzip body works; a v2 answer has a requestId and no quotaLimited when not limited."""
    answer = post(url, {"api_key": KEY, "distinct_id": "x"}, path="/flags/?v=2", compress=True)
    document = answer.json()
    assert set(document) == {"errorsWhileComputingFlags", "flags", "requestId"}
    assert get(url, "/_stats")["statuses"] == {"200": 1}


def test_redirect_hook(url: str) -> None:
    """redirect_to: every PostHog endpoint redirects; a client that follows arrives as a GET
    without its events, which capture refuses."""
    control(url, redirect_to=url + "/batch/", redirect_status=302)
    answer = requests.post(
        url + "/batch/", json={"api_key": KEY, "batch": [GOOD]}, allow_redirects=False, timeout=5
    )
    assert (answer.status_code, answer.headers["Location"]) == (302, url + "/batch/")
    followed = requests.post(url + "/batch/", json={"api_key": KEY, "batch": [GOOD]}, timeout=5)
    assert (followed.request.method, followed.status_code) == ("GET", 400)
    flags = requests.post(
        url + "/flags/?v=2",
        json={"api_key": KEY, "distinct_id": "x"},
        allow_redirects=False,
        timeout=5,
    )
    assert flags.status_code == 302
    assert get(url, "/_events")["total"] == 0


def test_html_200_hook(url: str) -> None:
    """html_200: a web page with 200 for every PostHog endpoint; nothing is recorded."""
    control(url, html_200=True)
    for path in ("/batch/", "/flags/?v=2"):
        answer = post(url, {"api_key": KEY, "batch": [GOOD], "distinct_id": "x"}, path=path)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("text/html")
        assert answer.text.startswith("<!DOCTYPE html>")
    assert get(url, "/_events")["total"] == 0


def test_reject_all_hook(url: str) -> None:
    """reject_all: a proxy's 400 page for every capture request, good events included;
    the flags endpoint still answers (the wrong path is capture's)."""
    control(url, reject_all=True)
    answer = post(url, {"api_key": KEY, "batch": [GOOD]})
    assert answer.status_code == 400
    assert "400 Bad Request" in answer.text
    assert post(url, {"api_key": KEY, "distinct_id": "x"}, path="/flags/?v=2").status_code == 200
    assert get(url, "/_events")["total"] == 0
    requests.post(url + "/_reset", timeout=5)
    assert post(url, {"api_key": KEY, "batch": [GOOD]}).status_code == 200
