"""The README's commands, run as a user runs them."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

from consumer.config import PROPERTIES_ENV
from consumer.exits import ExitStatus
from consumer.propfile import format_properties
from local.emulators import LOCAL_ENV, free_port
from scripts.bench import messages
from tests.support import BASE_PROPERTIES

ROOT = Path(__file__).resolve().parents[1]
LOCAL_DEFAULT_TIMEOUT = 300
# How long a signalled shard process must stay up to show it ignored the signal.
SIGNAL_GRACE_SECONDS = 1.0
# How long a shard process may take to answer a message (a shared, loaded machine).
ANSWER_TIMEOUT_SECONDS = 60.0


def run_sh(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "run.sh"), *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_preview_command_from_the_readme() -> None:
    """`./run.sh preview properties/app.properties --data ...` prints the event on stdout."""
    result = run_sh(
        "preview",
        "properties/app.properties",
        "--data",
        '{"properties": {"eventName": "signup", "userId": "u1"}}',
    )
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    assert (event["event"], event["distinct_id"]) == ("signup", "u1")


def test_redrive_help_from_run_sh() -> None:
    """`./run.sh redrive --help` reaches the command's own help (run.sh passes it through)."""
    result = run_sh("redrive", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--from", "--to", "--allow-other-streams"):
        assert option in result.stdout


def test_bad_properties_fail_before_the_daemon(tmp_path: Path) -> None:
    """`./run.sh <file>` with a typo stops at once, naming the key, with EX_CONFIG."""
    bad = tmp_path / "bad.properties"
    bad.write_text((ROOT / "properties" / "app.properties").read_text() + "\nevntKey = x\n")
    result = run_sh(str(bad))
    assert result.returncode == 78
    assert "evntKey" in result.stderr
    assert "did you mean eventKey" in result.stderr


def test_unreachable_kinesis_fails_at_once_naming_the_endpoint(tmp_path: Path) -> None:
    """`./run.sh <file>` with nothing at the Kinesis endpoint exits 69 with one line naming it,
    instead of the daemon's minutes of stack traces and an exit status of 0."""
    dead = f"http://127.0.0.1:{free_port()}"
    props = tmp_path / "app.properties"
    text = (ROOT / "properties" / "app.properties").read_text()
    props.write_text(text.replace("http://localhost:4566", dead))
    start = time.monotonic()
    result = run_sh(str(props), env={"POSTHOG_API_KEY": "phc_unused", **LOCAL_ENV})
    took = time.monotonic() - start
    print(f"\n[cli] unreachable Kinesis: exit {result.returncode} after {took:.1f}s")
    assert result.returncode == ExitStatus.UNAVAILABLE, result.stderr[-2000:]
    critical = [line for line in result.stderr.splitlines() if "CRITICAL" in line]
    assert len(critical) == 1
    assert f"Kinesis at {dead}" in critical[0]
    assert "Traceback" not in result.stderr


LOG_EVERYTHING = """
import logging
from consumer.__main__ import configure_logging
configure_logging()
for name in ("consumer.processor", "urllib3", "amazon_kclpy", "some.library"):
    logger = logging.getLogger(name)
    logger.critical("line from %s", name)
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("traceback from %s", name)
"""


def test_configured_logging_never_writes_to_stdout() -> None:
    """Stdout is the KCL protocol: every logger, a traceback included, writes to stderr only."""
    result = subprocess.run(
        [sys.executable, "-c", LOG_EVERYTHING],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == ""
    assert result.stderr.count("line from") == 4
    assert result.stderr.count("ValueError: boom") == 4


@pytest.mark.e2e
def test_local_default_delivers() -> None:
    """`./run.sh local` (the README's first command) brings events to the stand-in, then stops cleanly."""
    start = time.monotonic()
    result = run_sh("local", "--records", "30", "--until-delivered", timeout=LOCAL_DEFAULT_TIMEOUT)
    print(
        f"\n[cli] ./run.sh local: {time.monotonic() - start:.1f}s; "
        + result.stderr.splitlines()[-3]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "accepted 30 of 30 events" in result.stderr
    # The records waited ~30 s for KCL's start-up: the worker says it is behind.
    assert "worker progress: " in result.stderr
    assert '"event": ' in result.stderr  # the sample event is shown


def test_readme_lists_every_exit_status() -> None:
    """The README's exit-status table holds exactly the statuses of consumer/exits.py."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("Exit statuses, one enum", 1)[1].split("\n\n", 2)[1]
    listed = {int(row.split("|")[1]) for row in table.splitlines() if row[:3].strip("| ").isdigit()}
    assert listed == {int(status) for status in ExitStatus}


def test_every_test_the_readme_names_exists() -> None:
    """A promise in the README names the test that proves it: each name must be real."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    references = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?", readme)
    assert references
    for path, name in references:
        source = ROOT / path
        assert source.is_file(), f"README names {path}, which does not exist"
        if name:
            defined = re.search(rf"^\s*(?:def|class) {name}\b", source.read_text(), re.MULTILINE)
            assert defined, f"README names {path}::{name}, which {path} does not define"


@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGTERM,  # a supervisor stopping the whole process group (systemd, kill -- -PGID)
        signal.SIGINT,  # Ctrl+C in a terminal reaches every process of the group
    ],
)
def test_shard_process_leaves_stopping_to_the_daemon(tmp_path: Path, signum: int) -> None:
    """A shard process survives a signal sent to the whole group and ends, status 0, only
    when the daemon closes its stdin (after shutdownRequested): nothing in flight is lost."""
    properties = tmp_path / "worker.properties"
    properties.write_text(format_properties(BASE_PROPERTIES), encoding="utf-8")
    with subprocess.Popen(
        [sys.executable, "-m", "consumer", "process"],
        cwd=ROOT,
        env={**os.environ, PROPERTIES_ENV: str(properties)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,  # unbuffered: what select() sees ready is what readline() reads
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            child.stdin.write(
                b'{"action": "initialize", "shardId": "shardId-000000000000", '
                b'"sequenceNumber": "TRIM_HORIZON", "subSequenceNumber": 0}\n'
            )
            child.stdin.flush()
            # The answer proves the process is past start-up, its signal dispositions set.
            assert _next_message(child.stdout) == {"action": "status", "responseFor": "initialize"}
            child.send_signal(signum)
            with pytest.raises(subprocess.TimeoutExpired):
                child.wait(SIGNAL_GRACE_SECONDS)
            child.stdin.close()  # what the daemon does once the shard's shutdown is done
            assert child.wait(30) == ExitStatus.OK
        finally:
            child.kill()


def _next_message(stdout: IO[bytes]) -> object:
    """The shard process's next message, or a failure after ANSWER_TIMEOUT_SECONDS.

    Read a byte at a time with a deadline (``stdout`` is unbuffered): a shard process
    that never answers, or stops mid-line, fails the test instead of hanging it.
    (amazon-kclpy writes a newline before each message.)
    """
    deadline = time.monotonic() + ANSWER_TIMEOUT_SECONDS
    line = b""
    while True:
        ready, _, _ = select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, "the shard process did not answer"
        byte = stdout.read(1)
        assert byte, "the shard process closed its stdout"
        line += byte
        if byte == b"\n":
            if line.strip():
                return json.loads(line)
            line = b""


def test_a_message_the_shard_process_cannot_read_stops_it_as_an_error(tmp_path: Path) -> None:
    """A record the daemon would never write (its data no base64): exit 70 and a critical
    line naming the shard, as any unexpected error; nothing is answered or checkpointed."""
    properties = tmp_path / "worker.properties"
    properties.write_text(format_properties(BASE_PROPERTIES), encoding="utf-8")
    lines = messages.initialize("shardId-000000000007") + messages.process_records([])
    bad = lines.replace('"records":[]', '"records":[' + _record_with_data("abcde") + "]")
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "process"],
        cwd=ROOT,
        env={**os.environ, PROPERTIES_ENV: str(properties), "LOG_FORMAT": "json"},
        input=bad.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == ExitStatus.UNEXPECTED
    assert b'"responseFor": "processRecords"' not in done.stdout
    assert b"checkpoint" not in done.stdout
    logged = [json.loads(line) for line in done.stderr.decode().splitlines() if line.strip()]
    critical = [entry for entry in logged if entry.get("level") == "CRITICAL"]
    assert len(critical) == 1
    assert "shardId-000000000007" in critical[0]["message"]
    assert "reading the daemon's messages" in critical[0]["message"]


def _record_with_data(data: str) -> str:
    """One record as the daemon writes it, but with ``data`` as given (not base64)."""
    record = messages.process_records(
        [messages.DaemonRecord(b"{}", "pk", messages.sequence_number(1), 0, 1)]
    )
    fields = json.loads(record)["records"][0]
    fields["data"] = data
    return json.dumps(fields, separators=(",", ":"))


def test_a_shard_process_whose_daemon_is_gone_exits_75(tmp_path: Path) -> None:
    """The daemon died (its end of our stdout closed) before an answer: 75 and a warning,
    not a critical "unexpected error" (nothing was answered, so nothing checkpointed)."""
    properties = tmp_path / "worker.properties"
    properties.write_text(format_properties(BASE_PROPERTIES), encoding="utf-8")
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read what the shard process answers
    try:
        done = subprocess.run(
            [sys.executable, "-m", "consumer", "process"],
            cwd=ROOT,
            env={**os.environ, PROPERTIES_ENV: str(properties), "LOG_FORMAT": "json"},
            input=messages.initialize("shardId-000000000009").encode(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.returncode == ExitStatus.DAEMON_GONE
    logged = [json.loads(line) for line in done.stderr.decode().splitlines() if line.strip()]
    assert [entry["level"] for entry in logged if entry["level"] in ("WARNING", "CRITICAL")] == [
        "WARNING"
    ]
    assert any("the daemon is gone" in entry["message"] for entry in logged)
