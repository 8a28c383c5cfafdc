"""KCL's keys (consumer/kclkeys.py): every key the daemon reads passes, spelled as it reads
them; any other key, or a second key for one daemon setting, stops start-up; and the list
is exactly what the installed jars read."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from consumer import config, kclkeys
from consumer.launcher import KCL_DEFAULTS, jar_dir
from local.harness import FAST_KCL
from tests.support import SettingsFactory, assert_rejected

ROOT = Path(__file__).resolve().parents[1]
LIST_KCL_KEYS = Path(__file__).with_name("kcl_keys") / "ListKclKeys.java"


class TestValid:
    def test_keys_the_project_writes_are_accepted(self, make_settings: SettingsFactory) -> None:
        """The launcher's defaults, the local harness's fast KCL timings, a table name."""
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


class TestInvalid:
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
        pytest.fail(
            "no java on PATH: cannot ask the KCL jars which keys they read. The daemon needs "
            "Java anyway: ./run.sh installs it (openjdk-17-jre-headless) when none is found."
        )
    result = subprocess.run(
        [java, "-cp", str(jar_dir() / "*"), str(LIST_KCL_KEYS), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()
