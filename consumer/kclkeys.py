"""The keys the KCL multilang daemon reads from the properties file we share with it.

The daemon skips a key it does not know without a word, so a misspelled
``initialPositionInStream`` starts a new application at LATEST. ``consumer.config``
therefore refuses every key that is neither ours nor in :data:`KCL_KEYS`.

How KCL 3.1.3 reads the file (``MultiLangDaemonConfig``, ``KinesisClientLibConfigurator``):

* ``executableName``, ``processingLanguage`` and ``maxActiveThreads`` are read directly;
* every key then goes to ``BeanUtilsBean.setProperty(configuration, processKey(key), value)``,
  which sets it only if ``MultiLangDaemonConfiguration`` has a writeable bean property of
  exactly that name (case matters), and skips anything else. A dotted key reaches one
  of the nested config beans (``pollingConfig.maxRecords``, ``fanoutConfig.consumerArn``);
* ``processKey`` rewrites a key starting with ``awscredentialsprovider`` in any case to
  ``awsCredentialsProvider...``, so the documented ``AwsCredentialsProvider`` works.

Deliberately left out: the SDK builders' own properties (``kinesisClient.*``,
``dynamoDbClient.*``, ``cloudWatchClient.*``, ``*CredentialsProvider.*``). They are open
ended, and would let the daemon talk to other endpoints than the ones our start-up
checks and dead-letter stream use (``kinesisEndpoint``,
``dynamoDBEndpoint``, ``regionName``).

:data:`KCL_KEYS` is exact for the jars amazon-kclpy installs: ``tests/kcl_keys/ListKclKeys.java``
lists them with the configurator's own BeanUtils introspection, and ``tests/test_kclkeys.py``
fails when that list and this one differ. After upgrading amazon-kclpy, regenerate it with
``java -cp '<amazon_kclpy>/jars/*' tests/kcl_keys/ListKclKeys.java``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

from consumer.errors import ConfigError

KCL_VERSION = "3.1.3"

KCL_KEYS = frozenset(
    {
        "allowThroughputOvershoot",
        "applicationName",
        "awsCredentialsProvider",
        "awsCredentialsProviderCloudWatch",
        "awsCredentialsProviderDynamoDB",
        "callProcessRecordsEvenForEmptyRecordList",
        "cleanupLeasesUponShardCompletion",
        "clientVersionConfig",
        "coordinatorStateBillingMode",
        "coordinatorStateDeletionProtectionEnabled",
        "coordinatorStatePointInTimeRecoveryEnabled",
        "coordinatorStateReadCapacity",
        "coordinatorStateTableName",
        "coordinatorStateTags",
        "coordinatorStateWriteCapacity",
        "dampeningPercentage",
        "disableWorkerMetrics",
        "dynamoDBEndpoint",
        "enablePriorityLeaseAssignment",
        "executableName",
        "failoverTimeMillis",
        "gracefulLeaseHandoffTimeoutMillis",
        "idleTimeBetweenReadsInMillis",
        "ignoreUnexpectedChildShards",
        "inMemoryWorkerMetricsCaptureFrequencyMillis",
        "initialLeaseTableReadCapacity",
        "initialLeaseTableWriteCapacity",
        "initialPositionInStream",
        "initialPositionInStreamExtended",
        "isGracefulLeaseHandoffEnabled",
        "kinesisEndpoint",
        "leaseAssignmentIntervalMillis",
        "leaseTableDeletionProtectionEnabled",
        "leaseTablePitrEnabled",
        "listShardsBackoffTimeInMillis",
        "logWarningForTaskAfterMillis",
        "maxActiveThreads",
        "maxGetRecordsThreadPool",
        "maxLeaseRenewalThreads",
        "maxLeasesForWorker",
        "maxLeasesToStealAtOneTime",
        "maxListShardsRetryAttempts",
        "maxRecords",
        "maxThroughputPerHostKBps",
        "metricsBufferTimeMillis",
        "metricsEnabledDimensions",
        "metricsLevel",
        "metricsMaxQueueSize",
        "millisBehindLatestThresholdForReducedTps",
        "noOfPersistedMetricsPerWorkerMetrics",
        "parentShardPollIntervalMillis",
        "processingLanguage",
        "reBalanceThresholdPercentage",
        "regionName",
        "retrievalMode",
        "retryGetRecordsInSeconds",
        "schedulerInitializationBackoffTimeMillis",
        "shardPrioritization",
        "shardSyncIntervalMillis",
        "shutdownGraceMillis",
        "skipShardSyncAtWorkerInitializationIfLeasesExist",
        "staleWorkerMetricsEntryCleanupDuration",
        "streamArn",
        "streamName",
        "tableName",
        "taskBackoffTimeMillis",
        "timeoutInSeconds",
        "validateSequenceNumberBeforeCheckpointing",
        "varianceBalancingFrequency",
        "workerId",
        "workerIdentifier",
        "workerMetricsBillingMode",
        "workerMetricsDeletionProtectionEnabled",
        "workerMetricsEMAAlpha",
        "workerMetricsPointInTimeRecoveryEnabled",
        "workerMetricsReadCapacity",
        "workerMetricsReporterFreqInMillis",
        "workerMetricsTableName",
        "workerMetricsTags",
        "workerMetricsWriteCapacity",
        # Nested config beans (most have a flat alias above, written through Lombok @Delegate).
        "coordinatorStateTableConfigBean.coordinatorStateBillingMode",
        "coordinatorStateTableConfigBean.coordinatorStateDeletionProtectionEnabled",
        "coordinatorStateTableConfigBean.coordinatorStatePointInTimeRecoveryEnabled",
        "coordinatorStateTableConfigBean.coordinatorStateReadCapacity",
        "coordinatorStateTableConfigBean.coordinatorStateTableName",
        "coordinatorStateTableConfigBean.coordinatorStateTags",
        "coordinatorStateTableConfigBean.coordinatorStateWriteCapacity",
        "fanoutConfig.consumerArn",
        "fanoutConfig.consumerName",
        "fanoutConfig.maxDescribeStreamConsumerRetries",
        "fanoutConfig.maxDescribeStreamSummaryRetries",
        "fanoutConfig.registerStreamConsumerRetries",
        "fanoutConfig.retryBackoffMillis",
        "gracefulLeaseHandoffConfigBean.gracefulLeaseHandoffTimeoutMillis",
        "gracefulLeaseHandoffConfigBean.isGracefulLeaseHandoffEnabled",
        "pollingConfig.idleTimeBetweenReadsInMillis",
        "pollingConfig.maxGetRecordsThreadPool",
        "pollingConfig.maxRecords",
        "pollingConfig.millisBehindLatestThresholdForReducedTps",
        "pollingConfig.retryGetRecordsInSeconds",
        "workerMetricStatsTableConfigBean.workerMetricsBillingMode",
        "workerMetricStatsTableConfigBean.workerMetricsDeletionProtectionEnabled",
        "workerMetricStatsTableConfigBean.workerMetricsPointInTimeRecoveryEnabled",
        "workerMetricStatsTableConfigBean.workerMetricsReadCapacity",
        "workerMetricStatsTableConfigBean.workerMetricsTableName",
        "workerMetricStatsTableConfigBean.workerMetricsTags",
        "workerMetricStatsTableConfigBean.workerMetricsWriteCapacity",
        "workerUtilizationAwareAssignmentConfigBean.allowThroughputOvershoot",
        "workerUtilizationAwareAssignmentConfigBean.dampeningPercentage",
        "workerUtilizationAwareAssignmentConfigBean.disableWorkerMetrics",
        "workerUtilizationAwareAssignmentConfigBean.inMemoryWorkerMetricsCaptureFrequencyMillis",
        "workerUtilizationAwareAssignmentConfigBean.maxThroughputPerHostKBps",
        "workerUtilizationAwareAssignmentConfigBean.noOfPersistedMetricsPerWorkerMetrics",
        "workerUtilizationAwareAssignmentConfigBean.reBalanceThresholdPercentage",
        "workerUtilizationAwareAssignmentConfigBean.staleWorkerMetricsEntryCleanupDuration",
        "workerUtilizationAwareAssignmentConfigBean.varianceBalancingFrequency",
        "workerUtilizationAwareAssignmentConfigBean.workerMetricsEMAAlpha",
        "workerUtilizationAwareAssignmentConfigBean.workerMetricsReporterFreqInMillis",
    }
)

# Keys written through another setter to one field of MultiLangDaemonConfiguration:
# setWorkerId sets workerIdentifier; setInitialPositionInStream sets the extended position.
_SAME_FIELD = {
    "workerId": "workerIdentifier",
    "initialPositionInStream": "initialPositionInStreamExtended",
}
_UNKNOWN = f"not a setting of kinesis-posthog or KCL {KCL_VERSION} (the daemon would ignore it)"
_WHERE_LISTED = 'ours are listed in README "Configuration", the daemon\'s in consumer/kclkeys.py'
_CREDENTIALS = re.compile("awscredentialsprovider", re.IGNORECASE | re.ASCII)


def daemon_key(key: str) -> str:
    """The property name the daemon looks up for ``key`` (``KinesisClientLibConfigurator.processKey``)."""
    if _CREDENTIALS.match(key):
        return _CREDENTIALS.sub("awsCredentialsProvider", key)
    return key


def daemon_property(key: str) -> str | None:
    """What ``key`` sets in the daemon, aliases folded into one name; None if it ignores ``key``.

    Two keys with the same answer set one value, and the daemon applies them in no fixed
    order (a hash map's), so a file may hold only one of them.
    """
    name = daemon_key(key)
    if name not in KCL_KEYS:
        return None
    flat = name.rpartition(".")[2]
    name = flat if flat in KCL_KEYS else name
    return _SAME_FIELD.get(name, name)


def suggest(key: str, ours: frozenset[str]) -> str | None:
    """The known key ``key`` was probably meant to be: same letters in another case, or close."""
    known = sorted(ours | KCL_KEYS)
    return {name.lower(): name for name in known}.get(key.lower()) or next(
        iter(difflib.get_close_matches(key, known, n=1)), None
    )


def unknown_key(name: str, guess: str | None) -> ConfigError:
    """The error for a key nobody reads; its value is never shown (it may be a secret)."""
    hint = f"did you mean {guess}?" if guess else _WHERE_LISTED
    return ConfigError(name, "<not shown>", f"{_UNKNOWN}; {hint}")


def reject_unknown(values: Mapping[str, str], ours: frozenset[str]) -> None:
    """Refuse a key that is neither in ``ours`` nor read by the daemon, or a second key for one setting.

    Raises:
        ConfigError: naming the key, with the closest known key as a suggestion; the value
            is never shown (an unknown key may hold a secret under another name).
    """
    setters: dict[str, str] = {}
    for key, value in values.items():
        if key in ours:
            continue
        target = daemon_property(key)
        if target is None:
            raise unknown_key(key, suggest(key, ours))
        if target in setters:
            raise ConfigError(
                key,
                value,
                f"one key per KCL setting, but {setters[target]} sets {target} too "
                "(the daemon would apply the two in no fixed order)",
            )
        setters[target] = key


# Values the daemon parses into enums (Enum.valueOf: exact, upper case); anything else
# fails inside the daemon with a Java stack trace instead of our one line.
KCL_CHOICES = {
    # AT_TIMESTAMP is no choice here: the daemon's setter throws on it (it has no time).
    # It is chosen by giving the time: `initialPositionInStreamExtended = <epoch seconds>`.
    "initialPositionInStream": ("TRIM_HORIZON", "LATEST"),
    "retrievalMode": ("POLLING", "FANOUT", "DEFAULT"),
    "metricsLevel": ("NONE", "SUMMARY", "DETAILED"),
}
# AWS SDK v1 provider names (DefaultAWSCredentialsProviderChain, ...) silently build an
# empty chain in KCL 3 (SDK v2): the worker would start and fail on its first AWS call.
_SDK_V1_PROVIDER = re.compile(r"AWSCredentialsProvider|ProviderChain$")


# Worker ids appear verbatim in every log line (consumer/logback*.xml substitute them into
# the pattern, which would read `%`, `{` or a quote as syntax): letters, digits and
# `.`, `_`, `:`, `-`, as host names, UUIDs and ECS task ids are.
WORKER_ID_MAX = 128
_WORKER_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{WORKER_ID_MAX}}}", re.ASCII)
# `initialPositionInStreamExtended`: the daemon's converter reads Long.parseLong(value)
# seconds since the epoch (MultiLangDaemonConfiguration$1) and starts AT_TIMESTAMP there.
AT_TIMESTAMP_KEY = "initialPositionInStreamExtended"
_EPOCH_SECONDS = re.compile(r"[0-9]{1,12}", re.ASCII)


def check_values(values: Mapping[str, str]) -> None:
    """Refuse values of daemon keys that the daemon cannot parse or would misread."""
    for key, choices in KCL_CHOICES.items():
        value = values.get(key)
        if value == "AT_TIMESTAMP" and key == "initialPositionInStream":
            raise ConfigError(
                key,
                value,
                f"TRIM_HORIZON or LATEST; for AT_TIMESTAMP remove this key and set "
                f"{AT_TIMESTAMP_KEY} = <seconds since the epoch>",
            )
        if value and value not in choices:
            raise ConfigError(key, value, "one of " + ", ".join(choices))
    for key, value in values.items():
        if daemon_property(key) == "workerIdentifier" and not _WORKER_ID.fullmatch(value):
            raise ConfigError(
                key,
                value,
                f"1-{WORKER_ID_MAX} letters, digits, '.', '_', ':' or '-', unique among live workers",
            )
    at = values.get(AT_TIMESTAMP_KEY)
    if at is not None and not _EPOCH_SECONDS.fullmatch(at):
        raise ConfigError(
            AT_TIMESTAMP_KEY,
            at,
            "the AT_TIMESTAMP start as whole seconds since the epoch, e.g. 1700000000",
        )
    for key, value in values.items():
        if daemon_key(key) == "awsCredentialsProvider" and _SDK_V1_PROVIDER.search(value):
            raise ConfigError(
                key,
                value,
                "an AWS SDK v2 provider name such as DefaultCredentialsProvider (SDK v1 names "
                "build an empty credentials chain in KCL 3)",
            )
