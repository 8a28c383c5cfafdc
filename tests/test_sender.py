"""One POST to /batch/: what is sent, and what each answer becomes."""

from __future__ import annotations

import gzip
import http.server
import json
import logging
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from consumer import errors
from consumer.batching import encode_body
from consumer.sender import (
    MAX_ANSWER_BYTES,
    QUOTA_WARNING_INTERVAL_SECONDS,
    READ_CHUNK_BYTES,
    RequestsTransport,
    Sender,
)
from local.capture_body import decode_capture
from local.standin import make_server
from tests.support import ScriptedTransport


def sender_with(transport: ScriptedTransport, *, historical_migration: bool = False) -> Sender:
    return Sender(
        host="http://ph.local/",
        api_key="phc_k",
        historical_migration=historical_migration,
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


def test_body_is_plain_gzip_and_the_same_for_the_same_batch() -> None:
    """ISA-L writes standard gzip (mtime 0) that zlib inflates to exactly the JSON body.

    PostHog's capture inflates with a stock gzip reader (Rust's flate2 ``GzDecoder``); a
    body of many deflate blocks (several MB of varied events) is read back whole, by
    Python's gzip and zlib and by the capture stand-in, and a resent batch is
    byte-identical.
    """
    payloads = [
        json.dumps({"event": f"e{n}", "distinct_id": f"user-{n * 7919 % 100_003}"}).encode()
        for n in range(60_000)
    ]
    transport = ScriptedTransport(200, 200)
    sender = sender_with(transport, historical_migration=True)
    sender.send(payloads)
    sender.send(payloads)
    first, again = (request["raw_body"] for request in transport.requests)
    assert first == again
    assert first[:4] == b"\x1f\x8b\x08\x00"  # gzip magic, deflate, no flags
    assert first[4:8] == b"\x00\x00\x00\x00"  # mtime 0
    expected = encode_body("phc_k", payloads, historical_migration=True)
    assert len(expected) > 2_000_000
    assert gzip.decompress(first) == expected
    assert zlib.decompressobj(wbits=31).decompress(first) == expected
    # As the capture stand-in reads a batch (local/capture_body.py), within capture's limits.
    assert decode_capture(first, single=False).document == json.loads(expected)


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


KEY = "phc_k"


class TestPostHogsAnswer:
    @pytest.mark.parametrize(
        "body",
        [
            '{"status":"Ok"}',  # the Rust capture service (CaptureResponseCode::Ok)
            '{"status": 1}',  # the older Django capture
            '{"status":"Ok","quota_limited":["events"]}',  # accepted, with a quota note
        ],
    )
    def test_posthogs_200_is_accepted(self, body: str) -> None:
        """Only PostHog's own acceptance counts as delivered."""
        sender_with(ScriptedTransport((200, {}, body))).send([b"{}"])

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            (200, "<!DOCTYPE html><html><body>Welcome to nginx!</body></html>"),  # a web page
            (200, ""),  # an empty answer
            (200, "{}"),  # JSON, but no status
            (200, '{"status": 0}'),  # not PostHog's code
            (200, '{"status": true}'),  # True == 1 in Python, not in PostHog
            (200, '"Ok"'),  # not an object
            (200, '{"status":"Ok"'),  # cut short (a huge answer read up to the cap)
            (204, ""),  # capture answers 204 only to beacon requests, which we never send
            (202, '{"status":"Ok"}'),  # PostHog's body, but not PostHog's status
        ],
    )
    def test_anything_else_is_a_wrong_host(self, status: int, body: str) -> None:
        """A 2xx that is not PostHog's answer stops delivery: posthogHost is wrong."""
        with pytest.raises(errors.WrongHostError, match="is it a proxy or a web page") as caught:
            sender_with(ScriptedTransport((status, {"Content-Type": "text/html"}, body))).send(
                [b"{}"]
            )
        assert isinstance(caught.value, errors.PermanentDeliveryError), "exits 78"
        assert "posthogHost answered" in str(caught.value)

    def test_excerpt_is_short_and_hides_the_key(self) -> None:
        """A proxy echoing our request: the message names neither the key nor the payload."""
        echo = json.dumps({"api_key": KEY, "batch": [{"event": "secret-payload" * 50}]})
        with pytest.raises(errors.WrongHostError) as caught:
            sender_with(ScriptedTransport((200, {}, echo))).send([b"{}"])
        message = str(caught.value)
        assert KEY not in message
        assert KEY not in caught.value.body
        assert message.count("secret-payload") <= 10, "only a short excerpt"

    def test_quota_limited_is_a_warning_at_most_every_interval(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """quota_limited never blocks delivery; it is logged, not on every batch."""
        now = [0.0]
        limited: tuple[int, dict[str, str], str] = (
            200,
            {},
            '{"status":"Ok","quota_limited":["events"]}',
        )
        subject = Sender(
            host="http://ph.local/",
            api_key=KEY,
            historical_migration=False,
            timeout=3,
            transport=ScriptedTransport(limited, limited, limited),
            clock=lambda: now[0],
        )
        with caplog.at_level(logging.WARNING, logger="consumer.sender"):
            subject.send([b"{}"])
            now[0] = QUOTA_WARNING_INTERVAL_SECONDS - 1
            subject.send([b"{}"])
            now[0] = QUOTA_WARNING_INTERVAL_SECONDS + 1
            subject.send([b"{}"])
        warnings = [r for r in caplog.records if "quota limited" in r.getMessage()]
        assert len(warnings) == 2


class TestRedirects:
    @pytest.mark.parametrize(
        ("status", "headers"),
        [
            (301, {"Location": "https://eu.i.posthog.com/batch/"}),  # moved permanently
            (302, {"Location": "https://eu.i.posthog.com/batch/"}),  # found
            (307, {"Location": "https://eu.i.posthog.com/batch/"}),  # keeps the method
            (308, {"location": "https://eu.i.posthog.com/batch/"}),  # a lower-case header
        ],
    )
    def test_a_redirect_is_a_wrong_host_naming_location(
        self, status: int, headers: dict[str, str]
    ) -> None:
        """A 3xx is never followed; the error says where the host points."""
        with pytest.raises(errors.WrongHostError) as caught:
            sender_with(ScriptedTransport((status, headers, ""))).send([b"{}"])
        assert "https://eu.i.posthog.com/batch/" in str(caught.value)
        assert caught.value.status == status

    def test_a_redirect_without_location_says_so(self) -> None:
        """A broken redirect still stops delivery, with a readable reason."""
        with pytest.raises(errors.WrongHostError, match="no Location header"):
            sender_with(ScriptedTransport((302, {}, ""))).send([b"{}"])


@pytest.fixture(name="standin")
def _standin() -> Iterator[Any]:
    """The PostHog stand-in over real HTTP (its project key is KEY)."""
    server = make_server(0, KEY)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class TestOverHttp:
    def url(self, server: Any) -> str:
        return f"http://127.0.0.1:{server.server_port}"

    def test_redirect_is_not_followed(self, standin: Any) -> None:
        """requests would turn the POST into a bodyless GET; the transport does not follow."""
        base = self.url(standin)
        requests.post(base + "/_control", json={"redirect_to": base + "/batch/"}, timeout=5)
        subject = Sender(host=base, api_key=KEY, historical_migration=False, timeout=5)
        with pytest.raises(errors.WrongHostError, match="redirecting to") as caught:
            subject.send([b'{"event":"e","distinct_id":"d"}'])
        assert base + "/batch/" in str(caught.value)
        assert KEY not in str(caught.value)
        paths = [r["path"] for r in requests.get(base + "/_requests", timeout=5).json()["requests"]]
        assert paths == ["/batch/"], "one POST, no GET after it"

    def test_web_page_is_a_wrong_host(self, standin: Any) -> None:
        """A host answering 200 with HTML is not PostHog: nothing counts as delivered."""
        base = self.url(standin)
        requests.post(base + "/_control", json={"html_200": True}, timeout=5)
        subject = Sender(host=base, api_key=KEY, historical_migration=False, timeout=5)
        with pytest.raises(errors.WrongHostError, match="text/html"):
            subject.send([b'{"event":"e","distinct_id":"d"}'])

    def test_accepted_over_http(self, standin: Any) -> None:
        """The stand-in's acceptance is PostHog's, byte for byte, so the sender accepts it."""
        subject = Sender(host=self.url(standin), api_key=KEY, historical_migration=False, timeout=5)
        subject.send([b'{"event":"e","distinct_id":"d"}'])
        assert standin.state.events == [{"event": "e", "distinct_id": "d"}]


class EndlessBody:
    """A file-like answer body of ``size`` bytes, made as it is read; counts what was read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.read_bytes = 0
        self.closed = False

    def read(self, amount: int) -> bytes:
        chunk = min(amount, self.size - self.read_bytes)
        self.read_bytes += chunk
        return b"<p>" + b"x" * (chunk - 3) if chunk >= 3 else b"x" * chunk

    def close(self) -> None:
        self.closed = True


def answer_200(body: EndlessBody) -> requests.Response:
    """A 200 answer whose body is read from ``body``, as the transport's session returns it."""
    answer = requests.Response()
    answer.status_code = 200
    answer.raw = body
    return answer


def test_huge_answer_is_read_only_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 50 MB web page: the transport reads the cap, drops the rest, and closes."""
    body = EndlessBody(50 * 1024 * 1024)
    seen: dict[str, Any] = {}

    def post(url: str, **kwargs: Any) -> requests.Response:
        seen.update(kwargs, url=url)
        answer = answer_200(body)
        answer.headers = CaseInsensitiveDict({"Content-Type": "text/html; charset=utf-8"})
        answer.encoding = "utf-8"
        return answer

    transport = RequestsTransport()
    monkeypatch.setattr(transport._session, "post", post)
    response = transport("http://ph.local/batch/", b"body", {"X": "1"}, 1.0)
    assert len(response.text) == MAX_ANSWER_BYTES
    assert body.read_bytes <= MAX_ANSWER_BYTES + READ_CHUNK_BYTES
    assert body.closed, "the rest is dropped with the connection"
    assert seen["allow_redirects"] is False
    assert seen["stream"] is True
    assert seen["headers"]["Accept-Encoding"] == "identity"
    transport.close()


def test_errors_reading_the_answer_are_translated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that breaks while the answer is read: outcome unknown, so retryable."""

    class Broken(EndlessBody):
        def read(self, amount: int) -> bytes:  # noqa: ARG002 - the base class's signature
            raise requests.ConnectionError("reset")

    def post(*_: Any, **__: Any) -> requests.Response:
        return answer_200(Broken(10))

    transport = RequestsTransport()
    monkeypatch.setattr(transport._session, "post", post)
    with pytest.raises(errors.RetryableDeliveryError):
        transport("http://ph.local/batch/", b"body", {}, 1.0)
    transport.close()


class _Proxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy that answers every request itself, as capture, and notes its target."""

    targets: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        _Proxy.targets.append(self.path)  # an absolute URI: the request came as to a proxy
        body = b'{"status":"Ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        """Quiet: nothing of the test's on stderr."""


@pytest.fixture(name="proxy")
def _proxy() -> Iterator[str]:
    """A forward proxy on loopback; its URL."""
    _Proxy.targets.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


# What requests reads from the environment, in both cases (urllib prefers lower case).
_ENVIRONMENT = (
    *("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"),
    *("http_proxy", "https_proxy", "all_proxy", "no_proxy"),
    *("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NETRC"),
)


class TestEnvironment:
    """Proxies, the CA bundle and .netrc come from the environment as requests reads it, once."""

    URL = "http://posthog.invalid/batch/"  # reachable only through the proxy

    @pytest.fixture(autouse=True)
    def _no_environment(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """None of the machine's proxy, CA or .netrc settings: each test sets its own."""
        for name in _ENVIRONMENT:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))

    def test_requests_go_through_the_environments_proxy(
        self, proxy: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """HTTP_PROXY is honoured, for the first request and every one after it."""
        monkeypatch.setenv("HTTP_PROXY", proxy)
        transport = RequestsTransport()
        for _ in range(2):
            assert transport(self.URL, b"{}", {}, 5.0).status == 200
        assert _Proxy.targets == [self.URL, self.URL]
        transport.close()

    def test_no_proxy_is_honoured(self, proxy: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """A host in NO_PROXY is reached directly (here: nothing answers, so it fails)."""
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("NO_PROXY", "posthog.invalid")
        transport = RequestsTransport()
        with pytest.raises(errors.RetryableDeliveryError, match="cannot reach PostHog"):
            transport(self.URL, b"{}", {}, 5.0)
        assert _Proxy.targets == []
        transport.close()

    def test_environment_is_read_once(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """The CA bundle, proxies and .netrc login of the first request are every request's."""
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/our-ca.pem")
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
        netrc = tmp_path / "netrc"
        netrc.write_text("machine ph.example login user password secret\n", encoding="ascii")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        seen: list[dict[str, Any]] = []

        def post(_url: str, **kwargs: Any) -> requests.Response:
            seen.append({**kwargs, "trust_env": transport._session.trust_env})
            return answer_200(EndlessBody(0))

        transport = RequestsTransport()
        monkeypatch.setattr(transport._session, "post", post)
        transport("https://ph.example/batch/", b"{}", {}, 1.0)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/changed.pem")
        transport("https://ph.example/batch/", b"{}", {}, 1.0)
        assert [call["verify"] for call in seen] == ["/etc/ssl/our-ca.pem"] * 2
        assert [call["proxies"]["https"] for call in seen] == ["http://proxy.invalid:3128"] * 2
        assert [call["auth"] for call in seen] == [("user", "secret")] * 2
        assert [call["trust_env"] for call in seen] == [False, False], "not read per request"
        transport.close()
