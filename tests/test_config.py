"""Settings: every bad value fails at start-up naming the key, the value and what is allowed."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from consumer import config, kclkeys
from consumer.deadletter import DeadLetterKind, DeadLetterTarget
from consumer.errors import ConfigError
from consumer.launcher import KCL_DEFAULTS, jar_dir
from consumer.mapping import MissingDistinctId
from local.harness import FAST_KCL
from tests.support import BASE_PROPERTIES, SettingsFactory

ROOT = Path(__file__).resolve().parents[1]
LIST_KCL_KEYS = Path(__file__).with_name("kcl_keys") / "ListKclKeys.java"
ARN = "arn:aws:kinesis:eu-west-1:123456789012:stream/"


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
        assert make_settings(streamName=None, streamArn=ARN + "clicks").stream_name == "clicks"

    @pytest.mark.parametrize(
        ("value", "target"),
        [
            ("file: dead.jsonl", ("file", "dead.jsonl")),  # spaces after ':' are not in the path
            ("kinesis:events-dead-letter", ("kinesis", "events-dead-letter")),  # another stream
            ("kinesis:Events", ("kinesis", "Events")),  # stream names are case-sensitive
        ],
    )
    def test_dead_letter(
        self, make_settings: SettingsFactory, value: str, target: tuple[str, str]
    ) -> None:
        """A dead-letter file path or another stream of a valid name."""
        dead_letter = make_settings(deadLetter=value).dead_letter
        assert (dead_letter.kind.value, dead_letter.location) == target

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

    def test_keys_the_project_writes_are_accepted(self, make_settings: SettingsFactory) -> None:
        """The launcher's defaults, the local harness's fast KCL timings, the leader's table."""
        written = {
            **KCL_DEFAULTS,
            **FAST_KCL,
            "executableName": "python -m consumer",
            "coordinatorStateTableName": "test-app-CoordinatorState",
        }
        assert make_settings(**written).stream_name == "events"

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("AwsCredentialsProvider", "DefaultCredentialsProvider"),  # the documented spelling
            ("awsCredentialsProvider", "DefaultCredentialsProvider"),  # the bean's own name
            ("AWSCREDENTIALSPROVIDER", "DefaultCredentialsProvider"),  # processKey: prefix any case
            ("AwsCredentialsProviderDynamoDB", "DefaultCredentialsProvider"),  # per client
            ("initialPositionInStreamExtended", "1700000000"),  # AT_TIMESTAMP
            ("pollingConfig.maxRecords", "500"),  # nested config bean, dotted
            ("fanoutConfig.consumerName", "kinesis-posthog"),  # only reachable dotted
            ("workerMetricStatsTableConfigBean.workerMetricsTableName", "wm"),  # nested table bean
            ("maxActiveThreads", "8"),  # read by MultiLangDaemonConfig itself
            ("processingLanguage", "python/3.11"),  # read by MultiLangDaemonConfig itself
        ],
    )
    def test_kcl_keys_are_accepted(
        self, make_settings: SettingsFactory, key: str, value: str
    ) -> None:
        """Keys the daemon reads pass, spelled as the daemon reads them."""
        assert make_settings(**{key: value}).stream_name == "events"

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

    def test_allow_http_is_kept(self, make_settings: SettingsFactory) -> None:
        """posthogAllowHttp = true is a setting of its own."""
        assert make_settings(posthogAllowHttp="true").posthog_allow_http

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
                "one of TRIM_HORIZON, LATEST, AT_TIMESTAMP",
            ),  # the daemon would fail on it with a Java stack trace
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

    @pytest.mark.parametrize(
        ("overrides", "key", "allowed"),
        [
            ({"evntKey": "x"}, "evntKey", "did you mean eventKey?"),  # typo of ours
            ({"eventkey": "x"}, "eventkey", "did you mean eventKey?"),  # wrong case of ours
            (
                {"posthogHots": "https://x.example"},
                "posthogHots",
                "did you mean posthogHost?",
            ),  # transposed letters
            (
                {"initialPositionInStrem": "TRIM_HORIZON"},
                "initialPositionInStrem",
                "did you mean initialPositionInStream?",
            ),  # KCL typo: a new application would start at LATEST
            ({"regonName": "eu-west-1"}, "regonName", "did you mean regionName?"),  # KCL typo
            (
                {"InitialPositionInStream": "TRIM_HORIZON"},
                "InitialPositionInStream",
                "did you mean initialPositionInStream?",
            ),  # BeanUtils matches case exactly
            (
                {"AwsCredentialsProviderdynamodb": "DefaultCredentialsProvider"},
                "AwsCredentialsProviderdynamodb",
                "did you mean awsCredentialsProviderDynamoDB?",
            ),  # processKey frees the prefix's case only
            (
                {"coordinatorStateConfig.coordinatorStateTableName": "t"},
                "coordinatorStateConfig.coordinatorStateTableName",
                "did you mean coordinatorStateTableConfigBean.coordinatorStateTableName?",
            ),  # the nested bean has another name in 3.1.3
            (
                {"someKclTuningKnob": "3"},
                "someKclTuningKnob",
                "the daemon's in consumer/kclkeys.py",
            ),  # nothing close: where the keys are listed
            (
                {"cloudWatchEndpoint": "http://localhost:4566"},
                "cloudWatchEndpoint",
                "ours are listed in README",
            ),  # KCL 3 has no CloudWatch endpoint key
            (
                {"kinesisClient.endpointOverride": "http://localhost:4566"},
                "kinesisClient.endpointOverride",
                "did you mean kinesisEndpoint?",
            ),  # SDK builder properties: our checks would not see the endpoint
        ],
    )
    def test_unknown_keys(
        self,
        make_settings: SettingsFactory,
        overrides: dict[str, str],
        key: str,
        allowed: str,
    ) -> None:
        """A key neither ours nor the daemon's stops start-up: the daemon would ignore it.
        Its value is never shown: an unknown key may hold a secret under another name."""
        assert_rejected(make_settings, overrides, key, "<not shown>", "not a setting")
        assert_rejected(make_settings, overrides, key, "<not shown>", allowed)

    @pytest.mark.parametrize(
        ("overrides", "key", "allowed"),
        [
            (
                {
                    "AwsCredentialsProvider": "DefaultCredentialsProvider",
                    "awsCredentialsProvider": "X",
                },
                "awsCredentialsProvider",
                "AwsCredentialsProvider sets awsCredentialsProvider too",
            ),  # two spellings of one key (the daemon fails on the second)
            (
                {"maxRecords": "100", "pollingConfig.maxRecords": "200"},
                "pollingConfig.maxRecords",
                "maxRecords sets maxRecords too",
            ),  # a flat key and its nested bean
            (
                {"workerId": "a", "workerIdentifier": "b"},
                "workerIdentifier",
                "workerId sets workerIdentifier too",
            ),  # two setters of one field
            (
                {"initialPositionInStream": "TRIM_HORIZON", "initialPositionInStreamExtended": "1"},
                "initialPositionInStreamExtended",
                "initialPositionInStream sets initialPositionInStreamExtended too",
            ),  # both set the start position: which one wins is a hash order
        ],
    )
    def test_one_key_per_kcl_setting(
        self,
        make_settings: SettingsFactory,
        overrides: dict[str, str],
        key: str,
        allowed: str,
    ) -> None:
        """Two keys for one daemon setting would be applied in no fixed order."""
        assert_rejected(make_settings, overrides, key, overrides[key], allowed)

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

    @pytest.mark.parametrize(
        ("overrides", "key", "value", "allowed"),
        [
            ({"streamName": None}, "streamName", "", "required"),  # nothing to read
            (
                {"streamName": "my events"},
                "streamName",
                "my events",
                "1 to 128 of a-z A-Z 0-9 _ . -",
            ),  # a space
            (
                {"streamName": "s" * 129},
                "streamName",
                "s" * 129,
                "1 to 128 of a-z A-Z 0-9 _ . -",
            ),  # too long
            (
                {"streamName": "événements"},
                "streamName",
                "événements",
                "1 to 128 of a-z A-Z 0-9 _ . -",
            ),  # not ASCII
            (
                {"streamName": None, "streamArn": "clicks"},
                "streamArn",
                "clicks",
                "arn:aws:kinesis",
            ),  # not an ARN
            (
                {"streamName": None, "streamArn": ARN + "my clicks"},
                "streamArn",
                ARN + "my clicks",
                "1 to 128 of a-z A-Z 0-9 _ . -",
            ),  # an ARN of an impossible name
            (
                {"deadLetter": "s3:bucket"},
                "deadLetter",
                "s3:bucket",
                "file:<path>",
            ),  # unsupported destination
            ({"deadLetter": "file:"}, "deadLetter", "file:", "file:<path>"),  # no path
            ({"deadLetter": "file:  "}, "deadLetter", "file:", "file:<path>"),  # blank path
            ({"deadLetter": "kinesis:"}, "deadLetter", "kinesis:", "kinesis:<stream name>"),
            (
                {"deadLetter": "kinesis:dead letters"},
                "deadLetter",
                "kinesis:dead letters",
                "1 to 128 of a-z A-Z 0-9 _ . -",
            ),  # an impossible stream name
            (
                {"deadLetter": "kinesis:events"},
                "deadLetter",
                "kinesis:events",
                "other than the source stream events",
            ),  # dead letters fed back into the input
            (
                {"deadLetter": "kinesis: events"},
                "deadLetter",
                "kinesis: events",
                "other than the source stream events",
            ),  # a space does not hide the loop
            (
                {"streamName": None, "streamArn": ARN + "clicks", "deadLetter": "kinesis:clicks"},
                "deadLetter",
                "kinesis:clicks",
                "other than the source stream clicks",
            ),  # the source named by its ARN
        ],
    )
    def test_bad_streams(
        self,
        make_settings: SettingsFactory,
        overrides: dict[str, str | None],
        key: str,
        value: str,
        allowed: str,
    ) -> None:
        """Stream names follow AWS's rules, and dead letters never go to the source stream."""
        assert_rejected(make_settings, overrides, key, value, allowed)

    @pytest.mark.parametrize(
        ("key", "secret"),
        [
            ("posthogApiKye", "phc_secret_value"),  # a typo of the PostHog key
            ("awsSecretAccesKey", "wJalrXUtnFEMI"),  # a typo of the AWS secret
            ("awsSessionToken", "IQoJb3JpZ2luX2Vj"),  # unknown, but named like a secret
        ],
    )
    def test_unknown_secret_keys_do_not_echo_them(
        self, make_settings: SettingsFactory, key: str, secret: str
    ) -> None:
        """A misspelled or unknown secret is reported without its value."""
        assert_rejected(make_settings, {key: secret}, key, "<not shown>", "not a setting")

    def test_upper_case_environment_names_find_their_key(self, tmp_path: Path) -> None:
        """KINESIS_POSTHOG_STREAMNAME sets streamName: environment names are often upper case."""
        path = tmp_path / "app.properties"
        path.write_text("\n".join(f"{k} = {v}" for k, v in BASE_PROPERTIES.items()))
        settings = config.load(path, {"KINESIS_POSTHOG_STREAMNAME": "prod-events"})
        assert settings.stream_name == "prod-events"

    def test_unknown_key_from_the_environment(self, tmp_path: Path) -> None:
        """KINESIS_POSTHOG_<key> is checked like a key in the file."""
        path = tmp_path / "app.properties"
        path.write_text("\n".join(f"{k} = {v}" for k, v in BASE_PROPERTIES.items()))
        with pytest.raises(ConfigError) as caught:
            config.load(path, {"KINESIS_POSTHOG_regonName": "eu-west-1"})
        assert str(caught.value) == (
            "invalid configuration regonName = '<not shown>': not a setting of kinesis-posthog "
            "or KCL 3.1.3 (the daemon would ignore it); did you mean regionName?"
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


class TestKclKeys:
    """config.KCL_KEYS is exactly what the installed KCL daemon reads."""

    def test_match_the_installed_jars(self, daemon_keys: frozenset[str]) -> None:
        """The jars' own introspection lists the same keys, no more, no fewer."""
        missing, extra = (
            sorted(daemon_keys - config.KCL_KEYS),
            sorted(config.KCL_KEYS - daemon_keys),
        )
        assert (missing, extra) == ([], []), "regenerate consumer/kclkeys.py with " + str(
            LIST_KCL_KEYS.relative_to(ROOT)
        )

    def test_key_spelling_matches_the_daemon(self) -> None:
        """daemon_key rewrites keys exactly as KinesisClientLibConfigurator.processKey does."""
        samples = [
            "AwsCredentialsProvider",  # the documented spelling
            "AWSCREDENTIALSPROVIDERDynamoDB",  # the prefix in any case
            "AwsCredentialsProviderdynamodb",  # the rest keeps its case
            "awscredentialsproviderAWSCredentialsProvider",  # every occurrence is rewritten
            "xAwsCredentialsProvider",  # only as a prefix
            "streamName",  # any other key is left alone
        ]
        output = run_list_kcl_keys("--process-key", *samples)
        assert output == [kclkeys.daemon_key(sample) for sample in samples]

    def test_version_is_the_installed_one(self) -> None:
        """The version named in messages is the multilang jar amazon-kclpy installed."""
        jar = jar_dir() / f"amazon-kinesis-client-multilang-{kclkeys.KCL_VERSION}.jar"
        assert jar.is_file()

    def test_ours_are_not_the_daemons(self) -> None:
        """None of our keys sets anything in the daemon (it reads the same file)."""
        assert [key for key in config.OUR_KEYS if kclkeys.daemon_property(key)] == []

    def test_no_two_keys_differ_only_in_case(self) -> None:
        """A key in the wrong case has exactly one suggestion."""
        known = config.OUR_KEYS | config.KCL_KEYS
        assert len({key.lower() for key in known}) == len(known)


@pytest.fixture(scope="module", name="daemon_keys")
def _daemon_keys() -> frozenset[str]:
    """The keys tests/kcl_keys/ListKclKeys.java finds in the installed jars."""
    return frozenset(run_list_kcl_keys())


def run_list_kcl_keys(*args: str) -> list[str]:
    """Run ListKclKeys.java on the daemon's jars; its output lines."""
    java = shutil.which("java")
    if java is None:
        pytest.skip("no java on PATH: cannot ask the KCL jars which keys they read")
    result = subprocess.run(
        [java, "-cp", str(jar_dir() / "*"), str(LIST_KCL_KEYS), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def assert_rejected(
    make_settings: SettingsFactory,
    overrides: dict[str, str | None] | dict[str, str],
    key: str,
    value: str,
    allowed: str,
) -> None:
    """Building the settings fails with one line naming ``key`` and ``value``, saying ``allowed``."""
    with pytest.raises(ConfigError) as caught:
        make_settings(**overrides)
    message = str(caught.value)
    assert caught.value.key == key
    assert message.startswith(f"invalid configuration {key} = {value!r}: "), message
    assert allowed in caught.value.allowed, message
