"""The daemon's command line and environment, built from the properties and overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consumer.config import PROPERTIES_ENV
from consumer.launcher import DAEMON_CLASS, prepare, startup_outlook
from consumer.propfile import read_properties
from tests.support import BASE_PROPERTIES


def test_prepare(tmp_path: Path) -> None:
    """Overrides reach the daemon's file, secrets travel only in the environment."""
    source = tmp_path / "app.properties"
    values = {**BASE_PROPERTIES, "awsAccessKeyId": "AKIDEXAMPLE", "awsSecretAccessKey": "s3cr3t"}
    source.write_text("\n".join(f"{k} = {v}" for k, v in values.items()))
    workdir = tmp_path / "work"
    workdir.mkdir()
    argv, env, settings, _ = prepare(
        source, {"KINESIS_POSTHOG_streamName": "prod", "PATH": "/usr/bin:/bin"}, workdir
    )

    effective = Path(env[PROPERTIES_ENV])
    written = read_properties(effective)
    assert written["streamName"] == "prod"
    assert written["shutdownGraceMillis"] == "20000"  # our default: KCL's 0 breaks Ctrl+C
    assert written["AwsCredentialsProvider"] == "DefaultCredentialsProvider"
    text = effective.read_text()
    for secret in ("phc_test", "s3cr3t", "AKIDEXAMPLE"):
        assert secret not in text
        assert secret not in " ".join(argv)
    assert (env["POSTHOG_API_KEY"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        "phc_test",
        "AKIDEXAMPLE",
        "s3cr3t",
    )
    assert DAEMON_CLASS in argv
    assert argv[argv.index("--properties-file") + 1] == str(effective)
    assert settings.stream_name == "prod"
    # Both ends of the shard processes' pipes in UTF-8, whatever the locale: the daemon
    # writes (and reads) in the JVM's default charset, Python in the locale's.
    assert "-Dfile.encoding=UTF-8" in argv[: argv.index(DAEMON_CLASS)]
    assert env["PYTHONUTF8"] == "1"


def test_the_daemon_reads_the_values_we_checked(tmp_path: Path) -> None:
    """Trailing blanks are stripped in the daemon's copy, as they were for validation
    (Java keeps them: "TRIM_HORIZON " is no enum constant, "events " no stream)."""
    source = tmp_path / "app.properties"
    values = {**BASE_PROPERTIES, "initialPositionInStream": "TRIM_HORIZON"}
    source.write_text("\n".join(f"{k} = {v}  " for k, v in values.items()))
    workdir = tmp_path / "work"
    workdir.mkdir()
    _, env, _, _ = prepare(source, {"PATH": "/usr/bin:/bin"}, workdir)
    written = read_properties(Path(env[PROPERTIES_ENV]))
    assert written["streamName"] == "events"
    assert written["initialPositionInStream"] == "TRIM_HORIZON"


def test_the_file_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare writes the daemon's copy from the values load validated, not from a second read."""
    source = tmp_path / "app.properties"
    source.write_text("\n".join(f"{k} = {v}" for k, v in BASE_PROPERTIES.items()))
    workdir = tmp_path / "work"
    workdir.mkdir()
    reads: list[Path] = []
    read_text = Path.read_text

    def counting(path: Path, *args: Any, **kwargs: Any) -> str:
        reads.append(path)
        return read_text(path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "read_text", counting)
        _, env, _, _ = prepare(source, {"PATH": "/usr/bin:/bin"}, workdir)
    assert reads.count(source) == 1
    assert read_properties(Path(env[PROPERTIES_ENV]))["eventKey"] == "properties.eventName"


@pytest.mark.parametrize(
    ("properties", "fresh", "expected"),
    [
        ({}, True, "about 140 s"),  # KCL's defaults, new application: 30 + 60 + 2 x 20 + 10
        ({}, False, "about 50 s"),  # an existing application: two 20 s rounds + 10
        ({"shardSyncIntervalMillis": "5000", "failoverTimeMillis": "5000"}, True, "about 65 s"),
        ({"leaseAssignmentIntervalMillis": "10000"}, False, "about 30 s"),  # aws.properties
        ({"failoverTimeMillis": "soon"}, False, "about 50 s"),  # unreadable: KCL's default
    ],
)
def test_the_start_up_outlook_says_what_the_daemon_waits_for(
    properties: dict[str, str], fresh: bool, expected: str
) -> None:
    line = startup_outlook(properties, fresh=fresh)
    assert expected in line
    assert ("Lease table is still empty" in line) is fresh
    assert "starting after" in line
