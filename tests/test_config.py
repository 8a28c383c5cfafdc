"""Settings: every bad value fails at start-up naming the key, the value and what is allowed.

KCL's keys, URLs and the value parsers have their own modules: test_kclkeys.py,
test_urls.py and test_settings_parsers.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from consumer import config
from consumer.deadletter import DeadLetterKind, DeadLetterTarget
from consumer.errors import ConfigError
from consumer.mapping import MissingDistinctId
from tests.support import BASE_PROPERTIES, SettingsFactory, assert_rejected

ROOT = Path(__file__).resolve().parents[1]


class TestValid:
    def test_defaults(self, make_settings: SettingsFactory) -> None:
        """The minimal file gives the documented defaults."""
        settings = make_settings(posthogHost=None)
        assert settings.posthog_host == config.DEFAULT_POSTHOG_HOST
        assert not settings.posthog_allow_http
        assert settings.missing_distinct_id is MissingDistinctId.PARTITION_KEY
        assert settings.dead_letter == DeadLetterTarget(DeadLetterKind.FILE, "dead-letter.jsonl")
        assert settings.batch_max_bytes == config.DEFAULT_BATCH_MAX_BYTES
        assert not settings.include_all_properties
        assert not settings.historical_migration

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

    def test_the_launchers_file_pointer_is_not_a_key(self, tmp_path: Path) -> None:
        """KINESIS_POSTHOG_PROPERTIES (set for shard processes) names the file, not a key."""
        path = tmp_path / "app.properties"
        path.write_text("\n".join(f"{k} = {v}" for k, v in BASE_PROPERTIES.items()))
        environ = {config.PROPERTIES_ENV: str(path)}
        assert "PROPERTIES" not in config.apply_overrides({}, environ)
        assert config.load(path, environ).stream_name == "events"

    @pytest.mark.parametrize(
        "name", ["app.properties", "aws.properties"]
    )  # LocalStack; real AWS. Both as shipped.
    def test_shipped_properties_files_load(self, name: str) -> None:
        """Every key of the example files is accepted as written."""
        settings = config.load(ROOT / "properties" / name, {config.API_KEY_ENV: "phc_test"})
        assert settings.application_name.startswith("kinesis-posthog")

    def test_allow_http_is_kept(self, make_settings: SettingsFactory) -> None:
        """posthogAllowHttp = true is a setting of its own."""
        assert make_settings(posthogAllowHttp="true").posthog_allow_http


class TestInvalid:
    @pytest.mark.parametrize(
        ("overrides", "key", "value", "allowed"),
        [
            ({"eventKey": None}, "eventKey", "", "required"),  # the seed's one required mapping
            ({"eventKey": "a..b"}, "eventKey", "a..b", "empty key"),  # unparsable path
            ({"posthogApiKey": None}, "POSTHOG_API_KEY", "", "project API key"),  # no key at all
            (
                {"posthogApiKey": "phx_personal"},
                "POSTHOG_API_KEY",
                "phx_<redacted>",
                "not a personal key",
            ),  # wrong kind of key, shown by its kind only
            (
                {"additionalPropertyMappings": "a.b"},
                "additionalPropertyMappings",
                "a.b",
                "one ':'",
            ),  # no ':'
            (
                {"additionalPropertyMappings": "a:b:c"},
                "additionalPropertyMappings",
                "a:b:c",
                "one ':'",
            ),  # two ':'
            (
                {"additionalPropertyMappings": ":x"},
                "additionalPropertyMappings",
                ":x",
                "non-empty source",
            ),  # empty source
            (
                {"additionalPropertyMappings": "a: "},
                "additionalPropertyMappings",
                "a:",
                "non-empty",
            ),  # empty destination
            (
                {"additionalPropertyMappings": "a:x,b:x"},
                "additionalPropertyMappings",
                "b:x",
                "at most once",
            ),  # duplicate
            (
                {"additionalPropertyMappings": "a:x.y"},
                "additionalPropertyMappings",
                "a:x.y",
                "cannot be nested",
            ),  # nested dest
            (
                {"additionalPropertyMappings": "a..b:x"},
                "additionalPropertyMappings",
                "a..b:x",
                "empty key",
            ),  # bad source path
            (
                {"includeAllProperties": "yes please"},
                "includeAllProperties",
                "yes please",
                "true or false",
            ),  # not a boolean
            (
                {"posthogAllowHttp": "sure"},
                "posthogAllowHttp",
                "sure",
                "true or false",
            ),  # not a boolean either
            (
                {"missingDistinctId": "drop"},
                "missingDistinctId",
                "drop",
                "partitionKey, fixed, deadLetter",
            ),  # bad choice
            (
                {"missingDistinctId": "fixed"},
                "fallbackDistinctId",
                "",
                "non-empty",
            ),  # fixed needs an id
            (
                {"batchMaxBytes": "30000000"},
                "batchMaxBytes",
                "30000000",
                "to 20000000",
            ),  # over PostHog's 20 MB
            (
                {"batchMaxEvents": "lots"},
                "batchMaxEvents",
                "lots",
                "a whole number",
            ),  # not a number
            ({"batchMaxEvents": "1.5"}, "batchMaxEvents", "1.5", "a whole number"),  # not whole
            (
                {"initialPositionInStream": "TRIM_HORIZN"},
                "initialPositionInStream",
                "TRIM_HORIZN",
                "one of TRIM_HORIZON, LATEST",
            ),  # the daemon would fail on it with a Java stack trace
            (
                {"initialPositionInStream": "AT_TIMESTAMP"},
                "initialPositionInStream",
                "AT_TIMESTAMP",
                "initialPositionInStreamExtended = <seconds since the epoch>",
            ),  # the daemon's setter throws on AT_TIMESTAMP: it is chosen by giving the time
            (
                {"initialPositionInStreamExtended": "2023-11-14T22:13:20Z"},
                "initialPositionInStreamExtended",
                "2023-11-14T22:13:20Z",
                "whole seconds since the epoch",
            ),  # the daemon's converter reads Long.parseLong(value) seconds
            ({"retrievalMode": "POLLNG"}, "retrievalMode", "POLLNG", "POLLING"),  # likewise
            (
                {"AwsCredentialsProvider": "DefaultAWSCredentialsProviderChain"},
                "AwsCredentialsProvider",
                "DefaultAWSCredentialsProviderChain",
                "SDK v2 provider name",
            ),  # an SDK v1 name builds an empty chain in KCL 3
            ({"applicationName": None}, "applicationName", "", "required"),  # KCL needs it too
            ({"awsAccessKeyId": "AKID"}, "awsSecretAccessKey", "", "both"),  # half a key pair
        ],
    )
    def test_rejected(
        self,
        make_settings: SettingsFactory,
        overrides: dict[str, str | None],
        key: str,
        value: str,
        allowed: str,
    ) -> None:
        """The error names the key and the value, and says what is allowed."""
        assert_rejected(make_settings, overrides, key, value, allowed)

    def test_upper_case_environment_names_find_their_key(self, tmp_path: Path) -> None:
        """KINESIS_POSTHOG_STREAMNAME sets streamName: environment names are often upper case."""
        path = tmp_path / "app.properties"
        path.write_text("\n".join(f"{k} = {v}" for k, v in BASE_PROPERTIES.items()))
        settings = config.load(path, {"KINESIS_POSTHOG_STREAMNAME": "prod-events"})
        assert settings.stream_name == "prod-events"

    def test_unknown_key_from_the_environment(self, tmp_path: Path) -> None:
        """KINESIS_POSTHOG_<key> is checked like a key in the file; the error names the
        variable the operator set, and suggests one."""
        path = tmp_path / "app.properties"
        path.write_text("\n".join(f"{k} = {v}" for k, v in BASE_PROPERTIES.items()))
        with pytest.raises(ConfigError) as caught:
            config.load(path, {"KINESIS_POSTHOG_regonName": "eu-west-1"})
        assert str(caught.value) == (
            "invalid configuration KINESIS_POSTHOG_regonName = '<not shown>': not a setting of "
            "kinesis-posthog or KCL 3.1.3 (the daemon would ignore it); "
            "did you mean KINESIS_POSTHOG_regionName?"
        )

    def test_posthog_host_from_the_environment(self, tmp_path: Path) -> None:
        """POSTHOG_HOST is parsed as strictly as posthogHost."""
        path = tmp_path / "app.properties"
        path.write_text("\n".join(f"{k} = {v}" for k, v in BASE_PROPERTIES.items()))
        with pytest.raises(ConfigError, match=r"posthogHost = 'https://\[::1'"):
            config.load(path, {config.HOST_ENV: "https://[::1"})

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing properties file is a ConfigError naming the path."""
        with pytest.raises(ConfigError, match=r"absent\.properties"):
            config.load(tmp_path / "absent.properties", {})


class TestTable:
    """config.SETTINGS declares each key once; the rest is derived from it."""

    def test_readme_table_is_the_settings_table(self) -> None:
        """README "Configuration"'s key table is exactly config.readme_table()."""
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        start = readme.index("| key | default | meaning |")
        end = readme.index("\n\n", start) + 1
        assert readme[start:end] == config.readme_table(), (
            "README's key table differs from config.SETTINGS; paste the output of "
            "python -c 'from consumer import config; print(config.readme_table(), end=\"\")'"
        )

    def test_every_field_is_filled_once(self) -> None:
        """Each Settings field comes from one row (stream_name from the streamName/streamArn rule)."""
        filled = [setting.field for setting in config.SETTINGS if setting.field]
        assert len(filled) == len(set(filled))
        fields = {item.name for item in dataclasses.fields(config.Settings)}
        assert {*filled, "stream_name"} == fields

    def test_keys_are_unique(self) -> None:
        """No key is declared twice."""
        keys = [setting.key for setting in config.SETTINGS]
        assert len(keys) == len(set(keys))

    def test_the_daemons_keys_we_read(self) -> None:
        """Rows the daemon reads too are its keys; OUR_KEYS are the rest."""
        theirs = {setting.key for setting in config.SETTINGS if setting.daemon_reads}
        assert theirs <= config.KCL_KEYS
        assert {setting.key for setting in config.SETTINGS} - theirs == config.OUR_KEYS

    def test_secrets(self) -> None:
        """The keys marked secret: kept out of repr and of the daemon's file."""
        assert {"posthogApiKey", "awsAccessKeyId", "awsSecretAccessKey"} == config.SECRET_KEYS

    def test_bounds_are_documented(self) -> None:
        """Every number's range is in its README row."""
        for setting in config.SETTINGS:
            assert (setting.bounds is not None) == ("{bounds}" in setting.doc), setting.key

    def test_defaults_are_the_tables(self, make_settings: SettingsFactory) -> None:
        """A key left out takes its row's default."""
        settings = make_settings(posthogHost=None, regionName=None)
        for setting in config.SETTINGS:
            if setting.field and setting.required is None:
                assert getattr(settings, setting.field) == setting.default, setting.key

    def test_load_keeps_the_daemons_properties(self, tmp_path: Path) -> None:
        """Overrides applied and values stripped, as validated: nothing reads the file again."""
        path = tmp_path / "app.properties"
        values = {**BASE_PROPERTIES, "initialPositionInStream": "TRIM_HORIZON"}
        path.write_text("\n".join(f"{k} = {v}  " for k, v in values.items()))
        environ = {"KINESIS_POSTHOG_STREAMNAME": "prod", config.API_KEY_ENV: "phc_env"}
        settings, properties = config.load_with_properties(path, environ)
        assert dict(properties) == {
            **values,
            "streamName": "prod",
            "posthogApiKey": "phc_env",
        }
        assert settings == config.load(path, environ)
        assert settings.stream_name == "prod"
