"""pipes.take: the daemon's pipes reach the protocol alone, not children or stray writes.

Each test runs in a child process: take() moves the descriptors of the process it runs in.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consumer.config import API_KEY_ENV, PROPERTIES_ENV
from consumer.exits import ExitStatus
from consumer.propfile import format_properties
from local.emulators import free_port
from scripts.bench import messages
from tests.support import BASE_PROPERTIES

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_SECONDS = 60.0  # a shared, loaded machine; a hang is for ever

# What a child of the shard process may do to descriptors 0 and 1, then the protocol's
# answer to the daemon's line. Each check is printed to stderr (fd 2), which stays put.
_CHILD = r"""
import io, os, subprocess, sys
from consumer import pipes

daemon = pipes.take()
print("printed after take")  # not flushed: line by line it goes out at once
os.write(2, b"written to stderr after the print\n")
os.write(1, b"written to descriptor 1\n")
# A helper that reads its stdin and prints, as a credential_process helper may:
subprocess.run(["sh", "-c", "cat; echo child wrote this"], check=True, timeout=30)
line = daemon.stdin.readline()
daemon.stdout.write("answer:" + line.decode())
daemon.stdout.flush()
checks = {
    "stdin_unbuffered": type(daemon.stdin) is io.FileIO,
    "inherited": [os.get_inheritable(daemon.stdin.fileno()), os.get_inheritable(daemon.stdout.fileno())],
    "fd0": os.readlink("/proc/self/fd/0"),
    "private": min(daemon.stdin.fileno(), daemon.stdout.fileno()) > 2,
}
print("CHECKS " + repr(checks), file=sys.stderr, flush=True)
"""


def test_children_and_stray_writes_never_reach_the_daemons_pipes() -> None:
    """The daemon's line, already in the pipe when a child that reads its stdin starts, is
    the protocol's; what is printed or written to descriptor 1 goes to stderr, never into
    the answer the daemon reads. Without take(), ``cat`` takes the line and stdout holds
    every stray line."""
    # Buffered as a shard process's stdout is (the daemon sets no PYTHONUNBUFFERED).
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=b"the daemon's line\n",
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"answer:the daemon's line\n"
    stderr = done.stderr.decode()
    for stray in ("printed after take", "written to descriptor 1", "child wrote this"):
        assert stray in stderr
    # A stray line is written whole as it ends, not later, cut into a log line.
    assert stderr.index("printed after take\n") < stderr.index("written to stderr after the print")
    checks = stderr.split("CHECKS ", 1)[1]
    assert "'stdin_unbuffered': True" in checks  # one read(2) a call (consumer.lines)
    assert "'inherited': [False, False]" in checks  # no child gets the daemon's pipes
    assert f"'fd0': '{os.devnull}'" in checks
    assert "'private': True" in checks  # never one of the standard three


@pytest.mark.parametrize(
    "closed",
    [
        0,  # no stdin: nothing to read the daemon's messages from
        1,  # no stdout: nowhere to answer them
    ],
)
def test_a_shard_process_without_the_daemons_pipes_stops_as_an_error(closed: int) -> None:
    """Started with descriptor 0 or 1 closed there is no daemon to answer: exit 70, logged."""
    start = (
        f"import os, sys; os.close({closed}); "
        "os.execv(sys.executable, [sys.executable, '-m', 'consumer', 'process'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", start],
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, "LOG_FORMAT": "json"},
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == ExitStatus.UNEXPECTED, done.stderr.decode()
    assert done.stdout == b""
    assert b"cannot take the daemon's pipes from its stdin and stdout" in done.stderr


# A credential_process helper that reads its stdin before answering, as a prompting one
# does: what it read, then that it is done, left beside it.
_HELPER = """#!/bin/sh
cat > "{here}/read-by-helper"
touch "{here}/helper-done"
echo '{{"Version": 1, "AccessKeyId": "AKIDHELPER", "SecretAccessKey": "helper-secret"}}'
"""


def test_a_credential_process_helper_cannot_read_the_daemons_pipe(tmp_path: Path) -> None:
    """The real shard process dead-letters a record to a Kinesis stream, so botocore starts
    the profile's credential_process helper, which reads its stdin: it reads nothing (EOF
    at once) and answers, instead of taking the daemon's next bytes or waiting for ever on
    a pipe the daemon writes nothing more to until it is answered."""
    helper = tmp_path / "helper.sh"
    helper.write_text(_HELPER.format(here=tmp_path), encoding="utf-8")
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    aws_config = tmp_path / "aws-config"
    aws_config.write_text(f"[default]\ncredential_process = {helper}\n", encoding="utf-8")
    properties = tmp_path / "worker.properties"
    # The dead-letter stream's endpoint refuses connections: the write is retried, which
    # is fine, since what is checked is what the helper read before it.
    values = {
        **BASE_PROPERTIES,
        "deadLetter": "kinesis:dead-letters",
        "kinesisEndpoint": f"http://127.0.0.1:{free_port()}",
    }
    properties.write_text(format_properties(values), encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env |= {
        PROPERTIES_ENV: str(properties),
        API_KEY_ENV: "phc_test",
        "AWS_CONFIG_FILE": str(aws_config),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    not_json = messages.DaemonRecord(b"not json", "pk", messages.sequence_number(1), 0, 1)
    lines = messages.initialize(messages.SHARD_ID) + messages.process_records([not_json])
    with subprocess.Popen(
        [sys.executable, "-m", "consumer", "process"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as child:
        assert child.stdin is not None
        try:
            # Both lines at once, the pipe left open: what the daemon's pipe holds while
            # the shard process works on a message.
            child.stdin.write(lines.encode())
            child.stdin.flush()
            deadline = time.monotonic() + TIMEOUT_SECONDS
            while not (tmp_path / "helper-done").exists():
                assert child.poll() is None, "the shard process ended"
                assert time.monotonic() < deadline, "the helper is still reading stdin"
                time.sleep(0.1)
            assert (tmp_path / "read-by-helper").read_bytes() == b""
        finally:
            child.kill()
