"""Turn a properties file into the KCL daemon's command line, and exec it.

The daemon reads KCL keys from a properties file, so environment overrides
(``KINESIS_POSTHOG_<key>``) are merged into a private copy of the file; secrets are
left out of that copy and passed through the environment instead, where both the
daemon's ``DefaultCredentialsProvider`` and our child processes read them. The java
process replaces this one (``exec``), so ECS's SIGTERM and a terminal's Ctrl+C reach
the daemon directly.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import amazon_kclpy

from consumer import config, hot_path, kclkeys, logs, preflight
from consumer.errors import ConfigError, DependencyError
from consumer.exits import ExitStatus
from consumer.propfile import format_properties

log = logging.getLogger(__name__)

DAEMON_CLASS = "software.amazon.kinesis.multilang.MultiLangDaemon"
# Daemon logging to stderr, quiet SDK, in the format the shard processes use (see
# consumer.logs); a logback.xml beside the properties file wins.
DAEMON_LOGBACK = {
    "text": Path(__file__).with_name("logback.xml"),
    "json": Path(__file__).with_name("logback-json.xml"),
}
# Defaults we apply when the file is silent. shutdownGraceMillis defaults to 0 in KCL,
# which makes Ctrl+C time out in the shutdown hook; 20 s fits inside ECS's default
# 30 s stopTimeout with room for the JVM to exit.
KCL_DEFAULTS = {
    "AwsCredentialsProvider": "DefaultCredentialsProvider",
    "shutdownGraceMillis": "20000",
}
# Java flags: a modest fixed heap (the daemon only moves records between Kinesis and
# the children), exit on OOM so the orchestrator restarts the task, and UTF-8 on the
# shard processes' pipes: the daemon writes to them through an OutputStreamWriter in the
# JVM's default charset, which Java 17 takes from the locale (a partition key "café"
# would reach a shard process as "caf?" under the C locale, as Latin-1 under an 8-bit
# one), and consumer/protocol.py reads UTF-8.
JVM_OPTIONS = ("-Xms128m", "-Xmx512m", "-XX:+ExitOnOutOfMemoryError", "-Dfile.encoding=UTF-8")
# ... and the shard processes' side of the pipes in UTF-8 too, whatever the locale
# (Python's UTF-8 mode: stdout, stderr and the log lines the daemon echoes).
PYTHON_UTF8_ENV = "PYTHONUTF8"


# What the daemon waits for before its first record (KCL 3.1.3's Scheduler and
# LeaseManagementConfig): the workers of a new application first wait a random 1-30 s
# for its empty lease table, so that one of them creates the leases; that first shard
# sync then takes one shardSyncIntervalMillis; leases are handed out at the leader's
# assignment rounds (leaseAssignmentIntervalMillis, default 2 x failoverTimeMillis),
# the first of which may find this worker's metrics not yet reported.
EMPTY_LEASE_TABLE_WAIT_SECONDS = 30
KCL_INTERVAL_DEFAULTS_MILLIS = {
    "shardSyncIntervalMillis": 60_000,
    "failoverTimeMillis": 10_000,
}
# Measured here: lease discovery, a shard process's start and its first read.
SHARD_START_SECONDS = 10
MILLIS = 1000


def _interval_seconds(properties: Mapping[str, str], key: str, default_millis: int) -> float:
    """A daemon interval as the file sets it (any spelling), else KCL's default."""
    for name, value in properties.items():
        if kclkeys.daemon_property(name) == key and value.strip().isdigit():
            return int(value) / MILLIS
    return default_millis / MILLIS


def startup_outlook(properties: Mapping[str, str], *, fresh: bool) -> str:
    """One line for the log: what the daemon will wait for before the first record."""
    failover = _interval_seconds(
        properties, "failoverTimeMillis", KCL_INTERVAL_DEFAULTS_MILLIS["failoverTimeMillis"]
    )
    rounds = _interval_seconds(
        properties, "leaseAssignmentIntervalMillis", int(2 * failover * MILLIS)
    )
    assign = f"hands out leases at assignment rounds every {rounds:g} s"
    expected = 2 * rounds + SHARD_START_SECONDS
    if fresh:
        sync = _interval_seconds(
            properties,
            "shardSyncIntervalMillis",
            KCL_INTERVAL_DEFAULTS_MILLIS["shardSyncIntervalMillis"],
        )
        expected += EMPTY_LEASE_TABLE_WAIT_SECONDS + sync
        return (
            f"a new KCL application: the daemon creates its tables, waits up to "
            f"{EMPTY_LEASE_TABLE_WAIT_SECONDS} s (at random) for the lease table, syncs the "
            f"shards once after shardSyncIntervalMillis ({sync:g} s), then {assign}; the first "
            f"records in about {expected:g} s at most. Meanwhile it logs 'Lease table is still "
            f"empty' and 'performing assignment'; each shard logs 'starting after' as it starts"
        )
    return (
        f"the daemon {assign} (the first may find this worker not yet known); the first "
        f"records in about {expected:g} s at most, when each shard logs 'starting after'"
    )


def new_worker_id() -> str:
    """A KCL worker id unique per start, as KCL's own default (a UUID) is, but readable.

    The host name (on ECS, the task's) and 8 random hex digits.
    """
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[: kclkeys.WORKER_ID_MAX - 9]
    return f"{host or 'worker'}-{uuid.uuid4().hex[:8]}"


def jar_dir() -> Path:
    """Where ``pip install amazon-kclpy`` put the KCL jars."""
    return Path(amazon_kclpy.__file__).parent / "jars"


class Launch(NamedTuple):
    """What ``run`` execs, and what it was made from.

    The daemon's command line and environment, the settings, and the properties the
    daemon reads (defaults and worker id included).
    """

    argv: list[str]
    env: dict[str, str]
    settings: config.Settings
    daemon_properties: dict[str, str]


def prepare(properties_path: Path, environ: Mapping[str, str], workdir: Path) -> Launch:
    """Validate everything and return the daemon's argv and environment."""
    # The values the settings were validated from (overrides applied, stripped), so the
    # daemon reads what we checked: the file is read once.
    settings, daemon_properties = config.load_with_properties(properties_path, environ)
    logs.add_secrets(settings.api_key, settings.aws_secret_access_key)
    merged = dict(daemon_properties)
    # The daemon fails on two keys that set one property (AwsCredentialsProvider and
    # awsCredentialsProvider), so a default is added only when no spelling is present.
    already = {kclkeys.daemon_property(key) for key in merged}
    merged.update(
        (key, value)
        for key, value in KCL_DEFAULTS.items()
        if kclkeys.daemon_property(key) not in already
    )
    # Every line of the worker names it: the daemon's (logback) and the shard processes'
    # (consumer.logs) read the id from the environment, so the file must fix it.
    worker_id = next(
        (
            value
            for key, value in merged.items()
            if kclkeys.daemon_property(key) == "workerIdentifier"
        ),
        None,
    )
    if worker_id is None:
        worker_id = new_worker_id()
        merged["workerId"] = worker_id
    logs.set_worker(worker_id)
    merged.setdefault("executableName", f"{sys.executable} -m consumer")
    if not merged.get("executableName", "").strip():
        raise ConfigError("executableName", "", "the command that starts a shard process")
    for key in config.SECRET_KEYS:
        merged.pop(key, None)
    effective = workdir / properties_path.name
    effective.write_text(format_properties(merged), encoding="utf-8")

    env = dict(environ)
    log_format = logs.resolve_format(environ, sys.stderr)
    env[logs.LOG_FORMAT_ENV] = log_format  # one format for the daemon and its children
    env[PYTHON_UTF8_ENV] = "1"  # the shard processes' pipes in UTF-8, as the daemon's
    env[logs.WORKER_ID_ENV] = worker_id
    env[config.PROPERTIES_ENV] = str(effective)
    env[config.API_KEY_ENV] = settings.api_key
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        env["AWS_ACCESS_KEY_ID"] = settings.aws_access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = settings.aws_secret_access_key
    if settings.region:
        env.setdefault("AWS_REGION", settings.region)
    # The children must find this interpreter's packages first when the file says `python`.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    java = shutil.which("java", path=env["PATH"])
    if java is None:
        raise ConfigError("java", "", "a Java 17+ runtime on PATH (run.sh installs one if missing)")
    classpath = os.pathsep.join([str(jar_dir() / "*"), str(properties_path.resolve().parent)])
    argv = [java, *JVM_OPTIONS, "-cp", classpath, DAEMON_CLASS, "--properties-file", str(effective)]
    own_logback = properties_path.resolve().parent / "logback.xml"
    logback = own_logback if own_logback.exists() else DAEMON_LOGBACK[log_format]
    argv += ["--log-configuration", str(logback)]
    return Launch(argv, env, settings, merged)


def run(properties_path: Path) -> int:
    """Validate, check the dependencies, then replace this process with the daemon.

    Never returns on success. Kinesis, DynamoDB or the dead-letter destination
    unreachable: one line naming it and exit 69, instead of the daemon's ~100 s of retries and an exit 0.
    A key PostHog does not know raises :class:`ConfigError` (exit 78).
    """
    workdir = Path(tempfile.mkdtemp(prefix="kinesis-posthog-"))
    argv, env, settings, daemon_properties = prepare(properties_path, os.environ, workdir)
    # The lease table the daemon will use: its `tableName` if the file sets one.
    table = next(
        (v for k, v in daemon_properties.items() if kclkeys.daemon_property(k) == "tableName"),
        None,
    )
    try:
        log.info("%s", preflight.probe_kinesis(settings))
        # One DescribeTable says both: DynamoDB answers, and whether the application is new.
        exists = preflight.lease_table_exists(settings, table)
        log.info(
            "%s", preflight.lease_table_state(table or settings.application_name, exists=exists)
        )
        log.info("%s", preflight.probe_dead_letter(settings))
        fresh = not exists
    except DependencyError as exc:
        log.critical("cannot start: %s", exc)
        return ExitStatus.UNAVAILABLE
    preflight.require_known_key(settings, log.warning)
    log.info("%s", startup_outlook(daemon_properties, fresh=fresh))
    # Which build the shard processes run: compiled, or (no C compiler) slower.
    log.info("%s", hot_path.describe())
    log.info(
        "starting the KCL daemon for application %s, stream %s -> PostHog at %s",
        settings.application_name,
        settings.stream_name,
        settings.posthog_host,
    )
    sys.stderr.flush()
    os.execvpe(argv[0], argv, env)  # noqa: S606 - argv is built above, no shell
    return ExitStatus.OK  # pragma: no cover - exec does not return
