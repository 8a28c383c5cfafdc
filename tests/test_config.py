"""Settings: every bad value fails at start-up naming the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer import config
from consumer.errors import ConfigError
from tests.conftest import BASE_PROPERTIES, SettingsFactory


class TestValid:
    def test_defaults(self, make_settings: SettingsFactory) -> None:
        """The minimal file gives the documented defaults."""
        settings = make_settings(posthogHost=None)
        assert settings.posthog_host == config.DEFAULT_POSTHOG_HOST
        assert settings.missing_distinct_id is config.MissingDistinctId.PARTITION_KEY
        assert settings.dead_letter == config.DeadLetterTarget(
            config.DeadLetterKind.FILE, "dead-letter.jsonl"
        )
        assert settings.batch_max_bytes == config.DEFAULT_BATCH_MAX_BYTES
        assert not settings.include_all_properties
        assert not settings.historical_migration

    def test_mappings_are_trimmed_and_parsed(self, make_settings: SettingsFactory) -> None:
        """Whitespace around entries is trimmed; nested sources stay paths."""
        settings = make_settings(
            additionalPropertyMappings=" properties.userId : distinct_id ,  a.b.0:c ,"
        )
        assert [(m.source.segments, m.destination) for m in settings.property_mappings] == [
            (("properties", "userId"), "distinct_id"),
            (("a", "b", "0"), "c"),
        ]

    def test_stream_arn_gives_the_stream_name(self, make_settings: SettingsFactory) -> None:
        """streamArn may replace streamName."""
        arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/clicks"
        assert make_settings(streamName=None, streamArn=arn).stream_name == "clicks"

    def test_secrets_stay_out_of_repr(self, make_settings: SettingsFactory) -> None:
        """The API key and AWS secret never appear in a logged Settings."""
        settings = make_settings(awsAccessKeyId="AKIDEXAMPLE", awsSecretAccessKey="s3cr3t")
        text = repr(settings)
        assert "phc_test" not in text
        assert "s3cr3t" not in text
        assert "AKIDEXAMPLE" not in text

    def test_environment_overrides_the_file(self, tmp_path: Path) -> None:
        """KINESIS_POSTHOG_<key>, POSTHOG_HOST and POSTHOG_API_KEY win over the file."""
        path = tmp_path / "app.properties"
        path.write_text("\n".join(f"{k} = {v}" for k, v in BASE_PROPERTIES.items()))
        settings = config.load(
            path,
            {
                "KINESIS_POSTHOG_streamName": "other",
                "POSTHOG_HOST": "https://eu.i.posthog.com/",
                "POSTHOG_API_KEY": "phc_env",
            },
        )
        assert (settings.stream_name, settings.posthog_host, settings.api_key) == (
            "other",
            "https://eu.i.posthog.com",
            "phc_env",
        )


class TestInvalid:
    @pytest.mark.parametrize(
        ("overrides", "key", "allowed"),
        [
            ({"eventKey": None}, "eventKey", "required"),  # the seed's one required mapping
            ({"eventKey": "a..b"}, "eventKey", "empty key"),  # unparsable path
            ({"posthogApiKey": None}, "POSTHOG_API_KEY", "project API key"),  # no key at all
            (
                {"posthogApiKey": "phx_personal"},
                "POSTHOG_API_KEY",
                "not a personal key",
            ),  # wrong kind of key
            (
                {"posthogHost": "us.i.posthog.com"},
                "posthogHost",
                "http:// or https://",
            ),  # not a URL
            ({"posthogHost": "ftp://x"}, "posthogHost", "http:// or https://"),  # wrong scheme
            (
                {"additionalPropertyMappings": "a.b"},
                "additionalPropertyMappings",
                "one ':'",
            ),  # no ':'
            (
                {"additionalPropertyMappings": "a:b:c"},
                "additionalPropertyMappings",
                "one ':'",
            ),  # two ':'
            (
                {"additionalPropertyMappings": ":x"},
                "additionalPropertyMappings",
                "non-empty source",
            ),  # empty source
            (
                {"additionalPropertyMappings": "a: "},
                "additionalPropertyMappings",
                "non-empty",
            ),  # empty destination
            (
                {"additionalPropertyMappings": "a:x,b:x"},
                "additionalPropertyMappings",
                "at most once",
            ),  # duplicate
            (
                {"additionalPropertyMappings": "a:x.y"},
                "additionalPropertyMappings",
                "cannot be nested",
            ),  # nested dest
            (
                {"additionalPropertyMappings": "a..b:x"},
                "additionalPropertyMappings",
                "empty key",
            ),  # bad source path
            ({"evntKey": "x"}, "evntKey", "did you mean eventKey"),  # typo of ours
            ({"eventkey": "x"}, "eventkey", "did you mean eventKey"),  # wrong case
            (
                {"posthogHots": "http://x"},
                "posthogHots",
                "did you mean posthogHost",
            ),  # transposed letters
            (
                {"includeAllProperties": "yes please"},
                "includeAllProperties",
                "true or false",
            ),  # not a boolean
            (
                {"missingDistinctId": "drop"},
                "missingDistinctId",
                "partitionKey, fixed, deadLetter",
            ),  # bad choice
            (
                {"missingDistinctId": "fixed"},
                "fallbackDistinctId",
                "non-empty",
            ),  # fixed needs an id
            ({"batchMaxBytes": "30000000"}, "batchMaxBytes", "to 2e+07"),  # over PostHog's 20 MB
            ({"batchMaxEvents": "lots"}, "batchMaxEvents", "a number"),  # not a number
            ({"deadLetter": "s3:bucket"}, "deadLetter", "file:<path>"),  # unsupported destination
            ({"deadLetter": "file:"}, "deadLetter", "file:<path>"),  # no location
            ({"streamName": None}, "streamName", "required"),  # nothing to read
            (
                {"streamName": None, "streamArn": "clicks"},
                "streamArn",
                "arn:aws:kinesis",
            ),  # not an ARN
            ({"applicationName": None}, "applicationName", "required"),  # KCL needs it too
            ({"awsAccessKeyId": "AKID"}, "awsSecretAccessKey", "both"),  # half a key pair
        ],
    )
    def test_rejected(
        self,
        make_settings: SettingsFactory,
        overrides: dict[str, str | None],
        key: str,
        allowed: str,
    ) -> None:
        """The error names the key and says what is allowed."""
        with pytest.raises(ConfigError) as caught:
            make_settings(**overrides)
        assert key == caught.value.key
        assert allowed in str(caught.value)

    def test_typo_of_a_secret_key_does_not_echo_it(self, make_settings: SettingsFactory) -> None:
        """A misspelled posthogApiKey is reported without its value."""
        with pytest.raises(ConfigError) as caught:
            make_settings(posthogApiKye="phc_secret_value")
        assert "phc_secret_value" not in str(caught.value)

    def test_unknown_kcl_like_keys_pass(self, make_settings: SettingsFactory) -> None:
        """Keys unlike ours are left to the daemon (KCL ignores unknown keys)."""
        assert make_settings(someKclTuningKnob="3").stream_name == "events"

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing properties file is a ConfigError naming the path."""
        with pytest.raises(ConfigError, match=r"absent\.properties"):
            config.load(tmp_path / "absent.properties", {})
