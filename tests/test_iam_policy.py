"""Deploying on ECS: the image (Dockerfile), its task definition and the task role's IAM
policy (deploy/), checked against the code, the baked-in properties and, end to end,
against every AWS call the emulators recorded during the session."""

from __future__ import annotations

import ast
import base64
import json
import math
import re
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from consumer import config, kclkeys
from consumer.exits import ExitStatus
from consumer.launcher import KCL_DEFAULTS
from consumer.propfile import read_properties
from local import api_calls
from local.api_calls import ApiCall, Client
from local.emulators import LOCAL_ENV, Emulators, free_port
from tests.support import Pipeline
from tests.test_cli import run_sh

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
TASK_DEFINITION = ROOT / "deploy" / "ecs-task-definition.json"
TASK_ROLE_POLICY = ROOT / "deploy" / "iam-task-role-policy.json"
EXECUTION_ROLE_POLICY = ROOT / "deploy" / "iam-execution-role-policy.json"
RUN_SH = ROOT / "run.sh"

PLACEHOLDERS = ("REGION", "ACCOUNT_ID", "APPLICATION_NAME", "STREAM_NAME", "DEAD_LETTER_STREAM")
_PLACEHOLDER = re.compile(rf"\b({'|'.join(PLACEHOLDERS)})\b")
# What the placeholders stand for in the unit tests: the names of properties/aws.properties.
EXAMPLE = {
    "REGION": "eu-west-1",
    "ACCOUNT_ID": "123456789012",
    "APPLICATION_NAME": "kinesis-posthog",
    "STREAM_NAME": "events",
    "DEAD_LETTER_STREAM": "events-dead-letter",
}

# Every action the task role may need, and who calls it: the policy grants exactly these.
# KCL's calls were read in awslabs/amazon-kinesis-client v3.1.3 and v3.5.1
# (DynamoDBLeaseRefresher, CoordinatorStateDAO, WorkerMetricStatsDAO, the lock client,
# KinesisShardDetector, KinesisDataFetcher, CloudWatchMetricsPublisher).
NEEDED_ACTIONS = {
    "kinesis:ListShards": "KCL: shard discovery",
    "kinesis:GetShardIterator": "KCL: polling reads",
    "kinesis:GetRecords": "KCL: polling reads",
    "kinesis:DescribeStreamSummary": "our start-up check: the source and dead-letter streams",
    "kinesis:PutRecords": "our Kinesis dead-letter sink",
    "dynamodb:CreateTable": "KCL: the lease, coordinator-state and worker-metrics tables",
    "dynamodb:DescribeTable": "KCL: waits for its tables and the index; our start-up check",
    "dynamodb:UpdateTable": "KCL: adds the lease-owner index to the lease table",
    "dynamodb:Query": "KCL: leases by owner, on the lease table's index",
    "dynamodb:Scan": "KCL: all leases, coordinator state, worker metrics",
    "dynamodb:GetItem": "KCL: leases, coordinator state, the leader lock",
    "dynamodb:PutItem": "KCL: new leases, coordinator state, the leader lock",
    "dynamodb:UpdateItem": "KCL: lease renewals and checkpoints, worker metrics, the lock",
    "dynamodb:DeleteItem": "KCL: finished leases, stale worker metrics, the lock",
    "dynamodb:ConditionCheckItem": "KCL 3.5: moving coordinator state into the lease table",
    "cloudwatch:PutMetricData": "KCL: metrics (metricsLevel is not NONE on AWS)",
}
# IAM cannot narrow this to a resource; a condition narrows it to KCL's namespace.
UNSCOPED_ACTIONS = frozenset({"cloudwatch:PutMetricData"})
# The permission IAM checks for each kind of item in a DynamoDB transaction.
TRANSACTION_PERMISSIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}
# Stopping: the daemon waits shutdownGraceMillis for the shard processes, then the JVM
# exits (measured: 0.4 s after a 15 s grace ran out, README "Graceful stop"). 10 s more
# is room for a slow exit on a throttled Fargate CPU before ECS sends SIGKILL.
JVM_EXIT_ALLOWANCE_SECONDS = 10
FARGATE_MAX_STOP_TIMEOUT_SECONDS = 120
# The image's command against an unreachable Kinesis must stop at our start-up check
# (about 1 s here), not after the daemon's ~100 s of retries.
ENTRY_FAILS_WITHIN_SECONDS = 30.0
ENTRY_TIMEOUT_SECONDS = 120.0


# --- Reading the files ------------------------------------------------------------------


def load_json(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            pending = ""
    return instructions


def instruction_values(keyword: str) -> list[str]:
    return [arguments for name, arguments in dockerfile() if name == keyword]


def exec_form(keyword: str) -> list[str]:
    """The last ENTRYPOINT or CMD, which must be in exec form (a JSON array)."""
    value: list[str] = json.loads(instruction_values(keyword)[-1])
    return value


def dockerfile_env() -> dict[str, str]:
    """What the image's ENV instructions set (``NAME=value`` pairs)."""
    env: dict[str, str] = {}
    for arguments in instruction_values("ENV"):
        for pair in shlex.split(arguments):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def copied_sources() -> list[str]:
    """Every path a COPY instruction takes from the build context."""
    sources: list[str] = []
    for arguments in instruction_values("COPY"):
        words = [word for word in shlex.split(arguments) if not word.startswith("--")]
        sources += words[:-1]
    return sources


def image_command() -> list[str]:
    return exec_form("ENTRYPOINT") + exec_form("CMD")


def container() -> dict[str, Any]:
    (only,) = load_json(TASK_DEFINITION)["containerDefinitions"]
    return dict(only)


def baked_in_properties() -> Path:
    """The properties file the image runs: its CMD, relative to WORKDIR."""
    return ROOT / exec_form("CMD")[0]


# --- IAM, as far as these policies need ---------------------------------------------------


def instantiate(document: Any, values: Mapping[str, str]) -> Any:
    """``document`` with every placeholder replaced by its value."""
    text = _PLACEHOLDER.sub(lambda found: values[found.group(1)], json.dumps(document))
    return json.loads(text)


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern),
        re.DOTALL,
    )


def _resource_matches(pattern: str, resource: str) -> bool:
    """IAM's rule: wildcards match within an ARN segment (the parts between colons)."""
    if pattern == "*":
        return True
    wanted, given = pattern.split(":", 5), resource.split(":", 5)
    return len(wanted) == len(given) and all(
        _wildcard(part).fullmatch(value) for part, value in zip(wanted, given, strict=True)
    )


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _condition_holds(condition: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    for operator, tests in condition.items():
        if operator != "StringEquals":
            return False  # no other operator is used here: treat it as unmet
        for key, expected in tests.items():
            if context.get(key) not in _as_list(expected):
                return False
    return True


def allows(
    policy: Mapping[str, Any],
    action: str,
    resource: str,
    context: Mapping[str, str] | None = None,
) -> bool:
    """Whether ``policy`` (placeholders replaced) allows ``action`` on ``resource``."""
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        if not any(
            _wildcard(a.lower()).fullmatch(action.lower()) for a in _as_list(statement["Action"])
        ):
            continue
        if not any(_resource_matches(r, resource) for r in _as_list(statement["Resource"])):
            continue
        if _condition_holds(statement.get("Condition", {}), context or {}):
            return True
    return False


def policy_actions(policy: Mapping[str, Any]) -> set[str]:
    return {action for statement in policy["Statement"] for action in _as_list(statement["Action"])}


def arn(service: str, name: str, values: Mapping[str, str]) -> str:
    kind = {"kinesis": "stream", "dynamodb": "table"}[service]
    return f"arn:aws:{service}:{values['REGION']}:{values['ACCOUNT_ID']}:{kind}/{name}"


def iam_action(call: ApiCall) -> str:
    """The permission IAM checks for ``call`` (a transaction item's own, not the transaction's)."""
    if call.part is not None:
        return f"{call.service}:{TRANSACTION_PERMISSIONS[call.part]}"
    return call.name


def product_operations() -> set[str]:
    """The Kinesis and DynamoDB operations our package's code calls through boto3.

    Every attribute call in ``consumer/`` whose name is a boto3 method of those clients
    (``describe_stream_summary`` -> ``kinesis:DescribeStreamSummary``).
    """
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    methods = {
        xform_name(operation): f"{service}:{operation}"
        for service in ("kinesis", "dynamodb")
        for operation in session.get_service_model(service).operation_names
    }
    called = {
        node.func.attr
        for source in (ROOT / "consumer").rglob("*.py")
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    return {methods[name] for name in called if name in methods}


# --- The task role's policy ---------------------------------------------------------------


def test_policy_is_well_formed() -> None:
    """IAM's grammar as used here: unique Sids, Allow only, no NotAction/NotResource, no wildcard action."""
    policy = load_json(TASK_ROLE_POLICY)
    assert policy["Version"] == "2012-10-17"
    sids = [statement["Sid"] for statement in policy["Statement"]]
    assert len(sids) == len(set(sids))
    for statement in policy["Statement"]:
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}, statement
        assert statement["Effect"] == "Allow"
        assert statement["Action"]
        assert all("*" not in action for action in _as_list(statement["Action"]))


def test_policy_grants_exactly_the_actions_something_calls() -> None:
    """Nothing more than the reviewed list (least privilege), nothing less (a worker that
    cannot start)."""
    granted = policy_actions(load_json(TASK_ROLE_POLICY))
    assert granted == set(NEEDED_ACTIONS), {
        "granted, not in NEEDED_ACTIONS": granted - set(NEEDED_ACTIONS),
        "in NEEDED_ACTIONS, not granted": set(NEEDED_ACTIONS) - granted,
    }


def test_resources_are_named_with_the_placeholders() -> None:
    """Every resource is an ARN in REGION and ACCOUNT_ID naming the application's tables or
    a stream; ``*`` only where IAM has no resource to name; wildcards only for the index."""
    policy = load_json(TASK_ROLE_POLICY)
    for statement in policy["Statement"]:
        for resource in _as_list(statement["Resource"]):
            if resource == "*":
                assert set(_as_list(statement["Action"])) <= UNSCOPED_ACTIONS, statement["Sid"]
                continue
            service = resource.split(":")[2]
            assert resource.startswith(f"arn:aws:{service}:REGION:ACCOUNT_ID:"), resource
            assert re.search(r"\b(APPLICATION_NAME|STREAM_NAME|DEAD_LETTER_STREAM)\b", resource)
            assert "*" not in resource.removesuffix("/index/*"), resource
    metrics = [
        s for s in policy["Statement"] if "cloudwatch:PutMetricData" in _as_list(s["Action"])
    ]
    assert [s["Condition"] for s in metrics] == [
        {"StringEquals": {"cloudwatch:namespace": "APPLICATION_NAME"}}
    ]


@pytest.mark.parametrize(
    ("action", "resource", "context", "allowed"),
    [
        # The daemon reads the source stream; nobody writes it.
        ("kinesis:GetRecords", "stream/events", {}, True),
        ("kinesis:ListShards", "stream/events", {}, True),
        ("kinesis:PutRecords", "stream/events", {}, False),
        # Dead letters are written, never read (the worker must not consume them).
        ("kinesis:PutRecords", "stream/events-dead-letter", {}, True),
        ("kinesis:GetRecords", "stream/events-dead-letter", {}, False),
        # Our start-up check describes both streams, and no other.
        ("kinesis:DescribeStreamSummary", "stream/events-dead-letter", {}, True),
        ("kinesis:DescribeStreamSummary", "stream/other", {}, False),
        # KCL 3.1.3's three tables (from KCL 3.5 a new application uses the first alone).
        ("dynamodb:UpdateItem", "table/kinesis-posthog", {}, True),
        ("dynamodb:UpdateItem", "table/kinesis-posthog-CoordinatorState", {}, True),
        ("dynamodb:Scan", "table/kinesis-posthog-WorkerMetricStats", {}, True),
        # The index is only queried; only the lease table gets it added.
        ("dynamodb:Query", "table/kinesis-posthog/index/LeaseOwnerToLeaseKeyIndex", {}, True),
        ("dynamodb:Query", "table/kinesis-posthog", {}, False),
        ("dynamodb:UpdateTable", "table/kinesis-posthog", {}, True),
        ("dynamodb:UpdateTable", "table/kinesis-posthog-CoordinatorState", {}, False),
        # KCL 3.5's migration fences on the old leader lock, in the old table only.
        ("dynamodb:ConditionCheckItem", "table/kinesis-posthog-CoordinatorState", {}, True),
        ("dynamodb:ConditionCheckItem", "table/kinesis-posthog", {}, False),
        # Another application's tables, and deleting tables, are out of reach.
        ("dynamodb:GetItem", "table/other-app", {}, False),
        ("dynamodb:DeleteTable", "table/kinesis-posthog", {}, False),
        # Listing every table is not needed: the start-up check looks the lease table up.
        ("dynamodb:ListTables", "*", {}, False),
        # Metrics only in KCL's namespace (the application name).
        ("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "kinesis-posthog"}, True),
        ("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "AWS/EC2"}, False),
    ],
)
def test_policy_decisions(
    action: str, resource: str, context: dict[str, str], allowed: bool
) -> None:
    """The policy, placeholders filled in, allows what a worker does and nothing near it."""
    policy = instantiate(load_json(TASK_ROLE_POLICY), EXAMPLE)
    service = action.split(":", maxsplit=1)[0]
    target = resource if resource == "*" else arn(service, resource.split("/", 1)[1], EXAMPLE)
    assert allows(policy, action, target, context) is allowed


def test_kcl_metrics_namespace_is_the_application_name() -> None:
    """KCL's ConfigsBuilder.namespace() falls back to applicationName (read in v3.1.3 and
    v3.5.1), and no key the daemon reads (listed from the installed jars) sets another, so
    the policy's condition names the application."""
    assert not [key for key in kclkeys.KCL_KEYS if "namespace" in key.lower()]


def test_our_code_calls_only_what_the_policy_allows() -> None:
    """Every Kinesis or DynamoDB operation ``consumer/`` calls through boto3 is granted."""
    ours = product_operations()
    # The scan finds the calls we know of (else it would prove nothing).
    assert {"kinesis:DescribeStreamSummary", "kinesis:PutRecords", "dynamodb:DescribeTable"} <= ours
    assert ours <= policy_actions(load_json(TASK_ROLE_POLICY))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        # Fan-out would also need RegisterStreamConsumer, DescribeStreamConsumer and
        # SubscribeToShard, which the policy leaves out.
        ("retrievalMode", "POLLING"),
        # The policy's PutMetricData is for KCL's metrics; NONE would need none.
        ("metricsLevel", "SUMMARY"),
        # KCL's default table names (applicationName and its suffixes) are what the policy names.
        ("tableName", None),
        ("coordinatorStateTableName", None),
        ("workerMetricsTableName", None),
    ],
)
def test_baked_in_properties_fit_the_policy(key: str, value: str | None) -> None:
    properties = read_properties(baked_in_properties())
    found = {kclkeys.daemon_property(name): setting for name, setting in properties.items()}
    assert found.get(kclkeys.daemon_property(key) or key) == value


def test_execution_role_reads_exactly_the_task_s_secrets() -> None:
    """The execution role (which fetches secrets for ECS) may read the secrets the task
    definition names, and nothing else."""
    policy = load_json(EXECUTION_ROLE_POLICY)
    sources = {secret["valueFrom"] for secret in container()["secrets"]}
    granted = {r for statement in policy["Statement"] for r in _as_list(statement["Resource"])}
    assert granted == sources
    assert policy_actions(policy) <= {"ssm:GetParameters", "secretsmanager:GetSecretValue"}


# --- The task definition ------------------------------------------------------------------


def test_stop_timeout_covers_the_graceful_shutdown() -> None:
    """ECS's stopTimeout = the daemon's shutdown grace (the baked-in file's, else the
    launcher's default) + time for the JVM to exit; within Fargate's maximum."""
    properties = read_properties(baked_in_properties())
    grace_millis = int(properties.get("shutdownGraceMillis", KCL_DEFAULTS["shutdownGraceMillis"]))
    expected = math.ceil(grace_millis / 1000) + JVM_EXIT_ALLOWANCE_SECONDS
    assert container()["stopTimeout"] == expected
    assert expected <= FARGATE_MAX_STOP_TIMEOUT_SECONDS


def test_the_health_check_runs_the_health_command(tmp_path: Path) -> None:
    """The container's health check is `./run.sh health <the image's file>`, and that
    command answers healthy for a worker with no shard yet (exit 0), as ECS reads it."""
    check = container()["healthCheck"]
    kind, *command = check["command"]
    assert (kind, command) == ("CMD", ["./run.sh", "health", "properties/aws.properties"])
    assert check["startPeriod"] >= 60, "covers KCL's start-up"
    result = run_sh(
        *command[1:],
        env={config.API_KEY_ENV: "phc_from_the_secret", "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == ExitStatus.OK, result.stderr
    assert result.stdout == ""
    assert "healthy: 0 shards" in result.stderr


def test_task_definition_environment_with_the_baked_in_file_is_a_valid_configuration() -> None:
    """The task's environment over the image's properties: settings that validate, the
    key from its secret, the host from the environment."""
    environment = {item["name"]: item["value"] for item in container()["environment"]}
    secrets = {secret["name"] for secret in container()["secrets"]}
    assert secrets == {config.API_KEY_ENV}
    assert not secrets & set(environment), "a secret in plain environment"
    assert not any(value.startswith(("phc_", "phx_")) for value in environment.values())
    environ = {**instantiate(environment, EXAMPLE), config.API_KEY_ENV: "phc_from_the_secret"}
    settings = config.load(baked_in_properties(), environ)
    assert (settings.application_name, settings.stream_name, settings.region) == (
        EXAMPLE["APPLICATION_NAME"],
        EXAMPLE["STREAM_NAME"],
        EXAMPLE["REGION"],
    )
    assert settings.dead_letter.location == EXAMPLE["DEAD_LETTER_STREAM"]
    assert settings.posthog_host == environment["POSTHOG_HOST"]
    assert settings.api_key == "phc_from_the_secret"


def test_task_definition_runs_the_image_as_ecs_should() -> None:
    """Role ARNs as placeholders, logs to CloudWatch, an init process that forwards
    SIGTERM to the daemon and reaps (its health check: the test above)."""
    definition = load_json(TASK_DEFINITION)
    for role in ("taskRoleArn", "executionRoleArn"):
        assert definition[role].startswith("arn:aws:iam::ACCOUNT_ID:role/"), role
    assert container()["logConfiguration"]["logDriver"] == "awslogs"
    assert container()["linuxParameters"]["initProcessEnabled"] is True
    assert "command" not in container(), "the image's CMD (the baked-in properties) is the command"


# --- The image ----------------------------------------------------------------------------


def test_image_runs_as_a_non_root_user() -> None:
    users = instruction_values("USER")
    assert users, "no USER: the worker would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_image_is_built_by_the_setup_ci_runs() -> None:
    """One install path: `./run.sh setup` (CI runs it through `./run.sh test`), in the
    production profile run.sh documents."""
    steps = [step.strip() for run in instruction_values("RUN") for step in run.split("&&")]
    assert "./run.sh setup" in steps
    profile = dockerfile_env()["RUN_SH_SETUP"]
    assert profile == "production"
    assert f"RUN_SH_SETUP={profile}" in RUN_SH.read_text(encoding="utf-8")
    assert instruction_values("FROM")[0].startswith("python:3.11-")


def test_image_command_is_run_sh_with_the_baked_in_properties() -> None:
    entrypoint, command = exec_form("ENTRYPOINT"), exec_form("CMD")
    assert [(ROOT / entrypoint[0]).resolve()] == [RUN_SH]
    assert command == ["properties/aws.properties"]
    assert command[0] in copied_sources()


def test_nothing_secret_is_baked_into_the_image() -> None:
    """No secret in ENV/ARG or anywhere in the Dockerfile, none in the baked-in file."""
    secret_names = {config.API_KEY_ENV, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    declared = set(dockerfile_env()) | {arg.split("=")[0] for arg in instruction_values("ARG")}
    assert not declared & secret_names
    assert not re.search(r"ph[cx]_\w", DOCKERFILE.read_text(encoding="utf-8"))
    assert not config.SECRET_KEYS & set(read_properties(baked_in_properties()))


def test_dockerignore_lets_in_only_what_is_copied() -> None:
    """Everything is excluded, then exactly the COPY sources are let back in: never
    .venv, .local, .git or a developer's properties file."""
    rules = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert rules[0] == "*"
    let_in = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert let_in == {source.rstrip("/") for source in copied_sources()}


@pytest.mark.parametrize(
    ("env", "args", "says"),
    [
        # An unknown profile stops before anything is installed.
        ({"RUN_SH_SETUP": "prod"}, ("setup",), "RUN_SH_SETUP must be full or production"),
        # The production image has no dev tools or emulators to test or demo with.
        ({"RUN_SH_SETUP": "production"}, ("test",), "'test' needs the dev tools"),
        ({"RUN_SH_SETUP": "production"}, ("local",), "'local' needs the dev tools"),
    ],
)
def test_run_sh_production_profile_refuses_what_it_leaves_out(
    env: dict[str, str], args: tuple[str, ...], says: str
) -> None:
    result = run_sh(*args, env=env)
    assert result.returncode == ExitStatus.USAGE
    assert says in result.stderr


@pytest.mark.parametrize(
    ("api_key", "status", "names"),
    [
        # The key from the environment: the file parses, the launcher's start-up check
        # runs and names the Kinesis endpoint set through KINESIS_POSTHOG_kinesisEndpoint.
        ("phc_from_the_environment", ExitStatus.UNAVAILABLE, "Kinesis at {endpoint}"),
        # No key in the environment: nothing baked into the image stands in for it.
        (None, ExitStatus.CONFIG, config.API_KEY_ENV),
    ],
)
def test_image_command_starts_the_launcher_outside_a_container(
    api_key: str | None, status: ExitStatus, names: str
) -> None:
    """The Dockerfile's ENTRYPOINT + CMD, run from the repository root (WORKDIR) with the
    image's ENV, the secret and POSTHOG_HOST from the environment, and Kinesis pointed at
    a port where nothing listens."""
    command = image_command()
    assert (ROOT / command[0]).resolve() == RUN_SH  # run_sh runs exactly this script
    endpoint = f"http://127.0.0.1:{free_port()}"
    env = {
        **dockerfile_env(),
        **LOCAL_ENV,
        "POSTHOG_HOST": "https://eu.i.posthog.com",
        f"{config.ENV_PREFIX}kinesisEndpoint": endpoint,
    }
    if api_key is not None:
        env[config.API_KEY_ENV] = api_key
    start = time.monotonic()
    result = run_sh(*command[1:], env=env, timeout=ENTRY_TIMEOUT_SECONDS)
    took = time.monotonic() - start
    print(f"\n[image] {' '.join(command)}: exit {result.returncode} after {took:.1f}s")
    assert result.returncode == status, result.stderr[-2000:]
    critical = [line for line in result.stderr.splitlines() if "CRITICAL" in line]
    assert len(critical) == 1, result.stderr[-2000:]
    assert names.format(endpoint=endpoint) in critical[0]
    assert took < ENTRY_FAILS_WITHIN_SECONDS


# --- What the emulators record ------------------------------------------------------------

# Real lines (identifiers shortened) as kinesis-mock 0.6.2 logs them at DEBUG: a request's
# stages share a contextId; the stream is named once the request is parsed.
_ROUTES = "[debug] kinesis.mock.KinesisMockRoutes 2026-11-27T00:03:28.34Z"
_CACHE = "[debug] kinesis.mock.cache.Cache 2026-11-27T00:03:28.35Z"
_JSON = "contentType=application/x-amz-json-1.1"
_CBOR = "contentType=application/x-amz-cbor-1.1"
KINESIS_MOCK_LOG = "\n".join(
    [
        "[info] kinesis.mock.KinesisMockService$ 2026-11-27T00:03:27.72Z  Starting on port 57083",
        f"{_ROUTES} contextId=77cf, x-amzn-RequestId=01da, action=PutRecords Assembled headers",
        f"{_ROUTES} x-amz-id-2=nob, {_JSON}, action=PutRecords, contextId=77cf Parsing auth header",
        f"{_CACHE} {_JSON}, action=PutRecords, contextId=77cf, streamName=demo Processing request",
        f"{_ROUTES} {_CBOR}, action=GetRecords, contextId=d4a8 Parsing auth header",
        f"{_CACHE} {_CBOR}, action=GetRecords, contextId=d4a8 Processing GetRecords request",
        f"{_ROUTES} {_CBOR}, action=GetShardIterator, contextId=e0f1 Parsing auth header",
        (
            f"{_CACHE} action=GetShardIterator, contextId=e0f1, "
            "streamArn=arn:aws:kinesis:us-east-1:000000000000:stream/demo Processing request"
        ),
    ]
)


def _moto_line(agent: str, target: str, body: dict[str, Any] | None) -> str:
    encoded = base64.b64encode(json.dumps(body).encode()).decode() if body is not None else ""
    headers = {"User-Agent": agent, "X-Amz-Target": f"DynamoDB_20120810.{target}"}
    return json.dumps(
        {
            "headers": headers,
            "method": "POST",
            "url": "http://127.0.0.1:1/",
            "body": encoded,
            "body_encoded": True,
        }
    )


JAVA_AGENT = "aws-sdk-java/2.33.0 Linux/6.1 OpenJDK_64-Bit_Server_VM/17.0.13 Java/17.0.13"
BOTO3_AGENT = "Boto3/1.44.8 md/Botocore#1.44.8 ua/2.1 os/linux#6.1"


def test_kinesis_mock_log_is_read_per_request(tmp_path: Path) -> None:
    log = tmp_path / "kinesis-mock.log"
    log.write_text(KINESIS_MOCK_LOG, encoding="utf-8")
    assert set(api_calls.kinesis_calls(log)) == {
        ApiCall("kinesis", "PutRecords", "demo", client=Client.PYTHON),  # JSON: boto3
        ApiCall("kinesis", "GetRecords", None, client=Client.JAVA),  # CBOR: the daemon
        ApiCall("kinesis", "GetShardIterator", "demo", client=Client.JAVA),  # named by ARN
    }


@pytest.mark.parametrize(
    ("line", "calls"),
    [
        # The daemon renewing a lease.
        (
            _moto_line(JAVA_AGENT, "UpdateItem", {"TableName": "app"}),
            {ApiCall("dynamodb", "UpdateItem", "app", client=Client.JAVA)},
        ),
        # A query of the lease table's index is a request on the index.
        (
            _moto_line(
                JAVA_AGENT, "Query", {"TableName": "app", "IndexName": "LeaseOwnerToLeaseKeyIndex"}
            ),
            {
                ApiCall(
                    "dynamodb", "Query", "app/index/LeaseOwnerToLeaseKeyIndex", client=Client.JAVA
                )
            },
        ),
        # A table named by ARN is the table.
        (
            _moto_line(
                BOTO3_AGENT, "GetItem", {"TableName": "arn:aws:dynamodb:us-east-1:1:table/app"}
            ),
            {ApiCall("dynamodb", "GetItem", "app", client=Client.PYTHON)},
        ),
        # A transaction: one call per table and kind of item.
        (
            _moto_line(
                JAVA_AGENT,
                "TransactWriteItems",
                {
                    "TransactItems": [
                        {"ConditionCheck": {"TableName": "app-CoordinatorState"}},
                        {"Put": {"TableName": "app"}},
                        {"Delete": {"TableName": "app-CoordinatorState"}},
                    ]
                },
            ),
            {
                ApiCall(
                    "dynamodb",
                    "TransactWriteItems",
                    "app-CoordinatorState",
                    "ConditionCheck",
                    Client.JAVA,
                ),
                ApiCall("dynamodb", "TransactWriteItems", "app", "Put", Client.JAVA),
                ApiCall(
                    "dynamodb", "TransactWriteItems", "app-CoordinatorState", "Delete", Client.JAVA
                ),
            },
        ),
        # ListTables names no table; an empty body names none either.
        (
            _moto_line(BOTO3_AGENT, "ListTables", None),
            {ApiCall("dynamodb", "ListTables", client=Client.PYTHON)},
        ),
        # A line cut short while moto was still writing it is skipped.
        ('{"headers": {"X-Amz-Tar', set()),
    ],
)
def test_moto_recording_is_read_per_request(tmp_path: Path, line: str, calls: set[ApiCall]) -> None:
    recording = tmp_path / "moto-recording.jsonl"
    recording.write_text(line + "\n", encoding="utf-8")
    skipped: list[str] = []
    assert set(api_calls.dynamodb_calls(recording, skipped)) == calls
    assert len(skipped) == (0 if calls else 1)


# --- End to end: the policy against what was really called --------------------------------


def _print_calls(title: str, calls: list[ApiCall]) -> None:
    print(f"\n[iam] {title}: {len(calls)}")
    for call in sorted(calls):
        part = f" ({call.part})" if call.part else ""
        print(f"[iam]   {call.client.value:12} {iam_action(call):32} {call.resource or '-'}{part}")


def _pipeline_names(pipeline: Pipeline) -> dict[str, str]:
    properties = read_properties(pipeline.properties)
    application, stream = properties["applicationName"], properties["streamName"]
    # The pipeline dead-letters to a file: no stream may be written.
    return {
        **EXAMPLE,
        "APPLICATION_NAME": application,
        "STREAM_NAME": stream,
        "DEAD_LETTER_STREAM": f"{stream}-no-dead-letter-stream",
    }


def _belongs_to(call: ApiCall, names: Mapping[str, str]) -> bool:
    """Whether ``call`` names one of the pipeline's own tables or its stream."""
    if call.resource is None:
        return False
    if call.service == "kinesis":
        return call.resource == names["STREAM_NAME"]
    application = names["APPLICATION_NAME"]
    return call.resource == application or call.resource.startswith(
        (f"{application}-", f"{application}/")
    )


@pytest.mark.e2e
def test_every_recorded_call_is_allowed_by_the_task_role(
    pipeline: Pipeline, emulators: Emulators
) -> None:
    """Every call the KCL daemons made during the session (the AWS SDK for Java), and every
    call of an operation our code makes, is allowed by the task role's policy; on the
    shared pipeline's own tables and stream, the resource is checked too."""
    pipeline.running_worker()
    recorded = emulators.recorded()
    names = _pipeline_names(pipeline)
    policy = instantiate(load_json(TASK_ROLE_POLICY), names)
    granted = policy_actions(policy)
    daemon = [call for call in recorded.calls if call.client is Client.JAVA]
    others = [call for call in recorded.calls if call.client is not Client.JAVA]
    _print_calls("the KCL daemons (AWS SDK for Java)", daemon)
    _print_calls("boto3: our processes and the tests' own set-up", others)
    print(f"[iam] recorded lines skipped (being written): {recorded.skipped_lines}")
    print(f"[iam] actions called: {', '.join(sorted({call.name for call in recorded.calls}))}")

    # The recording saw the worker read and keep its leases, on the pipeline's table:
    # otherwise the checks below would pass on nothing.
    assert {"kinesis:GetRecords", "dynamodb:UpdateItem"} <= {call.name for call in daemon}
    assert any(_belongs_to(call, names) for call in daemon if call.service == "dynamodb")

    refused = [call for call in daemon if iam_action(call) not in granted]
    ours = product_operations()
    refused += [call for call in others if call.name in ours and call.name not in granted]
    for call in daemon:
        if _belongs_to(call, names):
            target = arn(call.service, call.resource or "", names)
            if not allows(policy, iam_action(call), target):
                refused.append(call)
    unscoped = [c for c in daemon + others if c.name == "dynamodb:ListTables"]
    refused += [call for call in unscoped if not allows(policy, call.name, "*")]
    assert not refused, sorted(refused)
