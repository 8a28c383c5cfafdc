"""Base URLs (consumer/urls.py): every URL setting is parsed strictly; plain http:// to
PostHog only on loopback or on purpose; a user:password in a URL is never shown."""

from __future__ import annotations

import pytest

from consumer.errors import ConfigError
from tests.support import SettingsFactory, assert_rejected


class TestValid:
    @pytest.mark.parametrize(
        ("overrides", "expected"),
        [
            ({"posthogHost": "https://eu.i.posthog.com/"}, "https://eu.i.posthog.com"),  # slash
            ({"posthogHost": "https://example.com/ph/"}, "https://example.com/ph"),  # proxy prefix
            ({"posthogHost": "https://ph.example.com:8443"}, "https://ph.example.com:8443"),  # port
            ({"posthogHost": "http://localhost:8000"}, "http://localhost:8000"),  # local stand-in
            ({"posthogHost": "http://127.0.0.2:9"}, "http://127.0.0.2:9"),  # all of 127.0.0.0/8
            ({"posthogHost": "http://[::1]:8000/"}, "http://[::1]:8000"),  # IPv6 loopback
            ({"posthogHost": "http://LocalHost:8000"}, "http://LocalHost:8000"),  # any case
            ({"posthogHost": "https://[2001:db8::1]"}, "https://[2001:db8::1]"),  # IPv6 literal
            (
                {"posthogHost": "http://posthog.internal", "posthogAllowHttp": "true"},
                "http://posthog.internal",
            ),  # plain http on purpose
        ],
    )
    def test_posthog_host(
        self, make_settings: SettingsFactory, overrides: dict[str, str], expected: str
    ) -> None:
        """Valid hosts are kept, without a trailing slash."""
        assert make_settings(**overrides).posthog_host == expected

    @pytest.mark.parametrize(
        "url",
        [
            "http://localstack:4566",  # docker-compose: plain http to another container
            "http://10.0.0.5:4566/",  # any host over http: SigV4 never sends the secret
            "https://kinesis.eu-west-1.amazonaws.com",  # a regional endpoint
            "http://[::1]:4566",  # IPv6 literal
        ],
    )
    @pytest.mark.parametrize("key", ["kinesisEndpoint", "dynamoDBEndpoint"])
    def test_aws_endpoints(self, make_settings: SettingsFactory, key: str, url: str) -> None:
        """AWS endpoints may be http:// anywhere and are kept as written (the daemon reads them)."""
        settings = make_settings(**{key: url})
        assert url in (settings.kinesis_endpoint, settings.dynamodb_endpoint)


class TestInvalid:
    @pytest.mark.parametrize(
        ("url", "allowed"),
        [
            ("https://exa mple.com", "a valid host"),  # a space in the host
            ("https://exa_mple.com", "a valid host"),  # '_' is not allowed in host names
            ("https://-x.example.com", "a valid host"),  # a label starting with '-'
            ("https://example..com", "a valid host"),  # an empty label
            ("https://999.1.1.1", "a valid host"),  # all digits but not an IPv4 address
            ("https://[fe80::1%25eth0]", "a valid host"),  # IPv6 zone id
            ("https://[::1", "a well-formed http:// or https:// URL"),  # urlsplit's ValueError
            ("https://example.com:99999", "a port from 1 to 65535"),  # too high
            ("https://example.com:0", "a port from 1 to 65535"),  # port 0
            ("https://example.com:", "a port from 1 to 65535"),  # empty port
            ("https://example.com:https", "a port from 1 to 65535"),  # not a number
            ("https://user:pw@example.com", "user:password@"),  # credentials in the URL
            ("https://example.com?token=1", "?query"),  # a query
            ("https://example.com/#top", "#fragment"),  # a fragment
            ("https://exa\tmple.com", "control characters"),  # urlsplit would drop the tab
            ("ftp://example.com", "an http:// or https:// URL"),  # another scheme
            ("example.com", "an http:// or https:// URL"),  # no scheme
            ("https://", "an http:// or https:// URL with a host"),  # no host
        ],
    )
    @pytest.mark.parametrize("key", ["posthogHost", "kinesisEndpoint", "dynamoDBEndpoint"])
    def test_bad_urls(
        self, make_settings: SettingsFactory, key: str, url: str, allowed: str
    ) -> None:
        """Every URL setting is parsed strictly, and no parse error escapes as a traceback;
        a user:password in the URL is never shown."""
        shown = url.replace("user:pw@", "<redacted>@")
        assert_rejected(make_settings, {key: url}, key, shown, allowed)
        with pytest.raises(ConfigError) as caught:
            make_settings(**{key: url})
        assert ":pw@" not in str(caught.value)

    @pytest.mark.parametrize(
        ("overrides", "key", "value", "allowed"),
        [
            (
                {"kinesisEndpoint": "http://localstack:4566/kinesis"},
                "kinesisEndpoint",
                "http://localstack:4566/kinesis",
                "no path",
            ),  # AWS endpoints take no path
            (
                {"posthogHost": "https://example.com/post hog"},
                "posthogHost",
                "https://example.com/post hog",
                "a path of URL characters",
            ),  # a space in the path prefix
            (
                {"posthogHost": "http://eu.i.posthog.com"},
                "posthogHost",
                "http://eu.i.posthog.com",
                "the project API key travels in every request body",
            ),  # the key would cross the internet in clear
            (
                {"posthogHost": "http://10.0.0.7:8000"},
                "posthogHost",
                "http://10.0.0.7:8000",
                "or with posthogAllowHttp = true",
            ),  # private is not loopback
            (
                {"posthogHost": "HTTP://eu.i.posthog.com"},
                "posthogHost",
                "HTTP://eu.i.posthog.com",
                "posthogAllowHttp = true",
            ),  # the scheme in capitals is still plain http
            (
                {"posthogHost": "http://localhost.example.com"},
                "posthogHost",
                "http://localhost.example.com",
                "only to localhost, 127.0.0.0/8 or ::1",
            ),  # a name that starts like localhost
            (
                {"posthogHost": "http://posthog.internal", "posthogAllowHttp": "false"},
                "posthogHost",
                "http://posthog.internal",
                "posthogAllowHttp = true",
            ),  # explicitly not allowed
        ],
    )
    def test_bad_hosts(
        self,
        make_settings: SettingsFactory,
        overrides: dict[str, str],
        key: str,
        value: str,
        allowed: str,
    ) -> None:
        """Paths only for PostHog, and plain http:// to PostHog only on loopback or on purpose."""
        assert_rejected(make_settings, overrides, key, value, allowed)
