"""Start-up checks: the PostHog key verdicts, and the dependency probes' messages."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from consumer import preflight
from consumer.errors import ConfigError, DependencyError, RetryableDeliveryError
from consumer.preflight import KeyVerdict, verify_key
from consumer.sender import Response
from local.emulators import LOCAL_ENV
from local.standin import make_server
from tests.support import SettingsFactory

HOST = "https://ph.example"


class FakePostHog:
    """Answers by path; records what was asked."""

    def __init__(self, answers: Mapping[str, Response | Exception]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, dict[str, str]]] = []

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Response:
        del headers, timeout
        self.asked.append((url, json.loads(body)))
        for path, answer in self.answers.items():
            if url.startswith(HOST + path):
                if isinstance(answer, Exception):
                    raise answer
                return answer
        return Response(404, {}, "not found")


def answer(status: int, text: str = "{}", **headers: str) -> Response:
    return Response(status, headers, text)


@pytest.mark.parametrize(
    ("answers", "verdict"),
    [
        # /flags knows the key.
        ({"/flags/": answer(200, '{"flags": {}}')}, KeyVerdict.KNOWN),
        # /flags: no project has this key (PostHog's authentication_error).
        (
            {
                "/flags/": answer(
                    401, '{"type": "authentication_error", "code": "authentication_failed"}'
                )
            },
            KeyVerdict.UNKNOWN,
        ),
        # Older self-hosted: no /flags, /decide refuses the key.
        ({"/decide/": answer(401, '{"code": "invalid_api_key"}')}, KeyVerdict.UNKNOWN),
        # Older self-hosted: no /flags, /decide knows the key.
        ({"/decide/": answer(200, '{"featureFlags": {}}')}, KeyVerdict.KNOWN),
        # PostHog down: a start-up must not wait for it.
        ({"/flags/": answer(503, "transient error")}, KeyVerdict.UNVERIFIED),
        # Nothing listening.
        ({"/flags/": RetryableDeliveryError("cannot reach PostHog")}, KeyVerdict.UNVERIFIED),
        # Neither endpoint exists.
        ({}, KeyVerdict.UNVERIFIED),
    ],
)
def test_key_verdicts(answers: Mapping[str, Response | Exception], verdict: KeyVerdict) -> None:
    """Each answer PostHog can give maps to one verdict."""
    fake = FakePostHog(answers)
    assert verify_key(HOST, "phc_k", transport=fake).verdict is verdict
    url, body = fake.asked[0]
    assert url == HOST + preflight.FLAGS_PATH, "flags first, unbilled"
    assert body["api_key"] == "phc_k"


@pytest.mark.parametrize(
    ("response", "allowed"),
    [
        (answer(301, "", Location="https://us.i.posthog.com/flags/"), "redirects to https://us"),
        (answer(200, "<html>welcome</html>"), "not PostHog's JSON"),
    ],
)
def test_a_wrong_host_is_a_config_error(response: Response, allowed: str) -> None:
    """A redirect or a web page is posthogHost's fault, named at start-up."""
    with pytest.raises(ConfigError) as caught:
        verify_key(HOST, "phc_k", transport=FakePostHog({"/flags/": response}))
    assert caught.value.key == "posthogHost"
    assert allowed in caught.value.allowed


def test_require_known_key_stops_on_an_unknown_key(make_settings: SettingsFactory) -> None:
    """An unknown key is a ConfigError naming POSTHOG_API_KEY, without the whole key."""
    settings = make_settings(posthogApiKey="phc_0123456789abcdef", posthogHost=HOST)
    fake = FakePostHog({"/flags/": answer(401, '{"code": "authentication_failed"}')})
    with pytest.raises(ConfigError) as caught:
        preflight.require_known_key(settings, pytest.fail, transport=fake)
    assert caught.value.key == "POSTHOG_API_KEY"
    assert "phc_0123456789abcdef" not in str(caught.value)


def test_require_known_key_warns_when_posthog_is_down(make_settings: SettingsFactory) -> None:
    """PostHog unreachable at start-up: one warning, and start anyway."""
    warnings: list[str] = []
    fake = FakePostHog({"/flags/": RetryableDeliveryError("cannot reach PostHog")})
    preflight.require_known_key(make_settings(posthogHost=HOST), warnings.append, transport=fake)
    assert len(warnings) == 1
    assert "starting anyway" in warnings[0]


@pytest.fixture(name="standin_url")
def _standin_url() -> Iterator[str]:
    server = make_server(0, "phc_project")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("key", "verdict"),
    [
        ("phc_project", KeyVerdict.KNOWN),  # the stand-in's project key
        ("phc_someone_elses", KeyVerdict.UNKNOWN),  # well-formed, but no project has it
    ],
)
def test_against_the_standin_over_http(standin_url: str, key: str, verdict: KeyVerdict) -> None:
    """The real transport against the stand-in's /flags, which refuses keys it does not know."""
    assert verify_key(standin_url, key).verdict is verdict


def test_probes_name_the_endpoint(make_settings: SettingsFactory) -> None:
    """Kinesis and DynamoDB unreachable: each message names the endpoint it could not reach."""
    dead = "http://127.0.0.1:9"
    settings = make_settings(kinesisEndpoint=dead, dynamoDBEndpoint=dead)
    for probe, name in (
        (preflight.probe_kinesis, "Kinesis"),
        (preflight.probe_dynamodb, "DynamoDB"),
    ):
        with pytest.raises(DependencyError, match=f"{name} at {dead}"):
            probe(settings)


def test_the_lease_table_is_looked_up_by_name(
    make_settings: SettingsFactory, emulators: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DescribeTable on the lease table (KCL's own permission; no ListTables on "*", and no
    first page of 100 tables to miss it in): missing is fine, KCL creates it."""
    import boto3

    for name, value in LOCAL_ENV.items():
        monkeypatch.setenv(name, value)
    settings = make_settings(
        applicationName="preflight-lease-table", dynamoDBEndpoint=emulators.dynamodb_endpoint
    )
    assert "will be created by KCL" in preflight.probe_dynamodb(settings)
    boto3.client(
        "dynamodb",
        endpoint_url=emulators.dynamodb_endpoint,
        region_name=LOCAL_ENV["AWS_REGION"],
    ).create_table(
        TableName="preflight-lease-table",
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    assert preflight.probe_dynamodb(settings).endswith("exists")
    # A file's own `tableName` is the table looked up (and the one IAM allows).
    assert preflight.probe_dynamodb(settings, "custom-leases") == (
        "lease table custom-leases will be created by KCL on first start"
    )


@pytest.mark.parametrize(
    "response",
    [
        answer(403, "<html>Access denied by the firewall</html>"),  # a WAF page
        answer(401, "Proxy authentication required"),  # a proxy asking for its own login
        answer(401, '{"code": "not_authenticated"}'),  # the flags service got no key at all
    ],
)
def test_a_refusal_that_is_not_about_the_key_is_unverified(response: Response) -> None:
    """Only the flags service's own unknown-key answer condemns the key."""
    fake = FakePostHog({"/flags/": response})
    assert verify_key(HOST, "phc_k", transport=fake).verdict is KeyVerdict.UNVERIFIED


def test_a_quota_limited_project_is_warned_about(make_settings: SettingsFactory) -> None:
    """/flags says the project is over a quota: the start-up log says so, and it starts."""
    warnings: list[str] = []
    body = '{"flags": {}, "quotaLimited": ["feature_flags"]}'
    fake = FakePostHog({"/flags/": answer(200, body)})
    preflight.require_known_key(make_settings(posthogHost=HOST), warnings.append, transport=fake)
    assert len(warnings) == 1
    assert "feature_flags" in warnings[0]


def test_a_short_key_is_never_echoed(make_settings: SettingsFactory) -> None:
    """Not even a prefix of the key appears in the error."""
    settings = make_settings(posthogApiKey="hunter22", posthogHost=HOST)
    fake = FakePostHog({"/flags/": answer(401, '{"code": "authentication_failed"}')})
    with pytest.raises(ConfigError) as caught:
        preflight.require_known_key(settings, pytest.fail, transport=fake)
    assert "hunt" not in str(caught.value)


def test_no_region_is_one_line_not_a_traceback(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without regionName or AWS_REGION, the probe says so as a DependencyError."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    settings = make_settings(regionName=None)
    with pytest.raises(DependencyError, match="Kinesis at"):
        preflight.probe_kinesis(settings)


@pytest.mark.parametrize(
    ("target", "ok"),
    [
        ("nested/dir/dead.jsonl", True),  # folders are created, as the sink would
        ("/proc/no-such-place/dead.jsonl", False),  # nowhere to write
    ],
)
def test_dead_letter_file_probe(
    make_settings: SettingsFactory, tmp_path: Path, target: str, ok: bool
) -> None:
    """The dead-letter file must be writable before the first bad record needs it."""
    path = target if target.startswith("/") else str(tmp_path / target)
    settings = make_settings(deadLetter=f"file:{path}")
    if ok:
        assert "writable" in preflight.probe_dead_letter(settings)
    else:
        with pytest.raises(DependencyError, match="deadLetter file"):
            preflight.probe_dead_letter(settings)


def test_dead_letter_stream_probe_names_it(make_settings: SettingsFactory) -> None:
    """A dead-letter stream nobody can reach fails the probe, naming Kinesis's endpoint."""
    dead = "http://127.0.0.1:9"
    settings = make_settings(kinesisEndpoint=dead, deadLetter="kinesis:events-dead-letter")
    with pytest.raises(DependencyError, match=f"Kinesis at {dead}"):
        preflight.probe_dead_letter(settings)
