"""consumer/logs.py and the daemon's logback files: one format for a whole worker, and no
secret in any line, tracebacks included."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from consumer import logs
from consumer.config import API_KEY_ENV, PROPERTIES_ENV
from consumer.exits import ExitStatus
from consumer.launcher import DAEMON_LOGBACK, jar_dir, new_worker_id
from consumer.propfile import format_properties
from tests.support import BASE_PROPERTIES

ROOT = Path(__file__).resolve().parents[1]
LOG_PROBE = Path(__file__).with_name("logback") / "LogProbe.java"
# Secrets long enough to be redacted, and unlike anything else in a line.
API_KEY = "phc_SecretProjectKey0123456789abcdefghijkl"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # noqa: S105 - AWS docs example
DAEMON_KEYS = {"time", "level", "logger", "worker", "message", "exception"}
PROCESS_KEYS = {"time", "level", "logger", "worker", "shard", "pid", "message"}
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test configures the root logger; put back pytest's handlers and our state."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logs.set_shard(logs.UNKNOWN)
    logs._secrets.clear()


@pytest.mark.parametrize(
    ("value", "terminal", "chosen"),
    [
        (None, False, "json"),  # the default, under ECS: not a terminal
        (None, True, "text"),  # the default, in a terminal
        ("auto", True, "text"),  # said explicitly
        ("json", True, "json"),  # forced
        ("TEXT", False, "text"),  # any case
        ("yaml", False, "json"),  # unknown: auto (logging must work before settings are read)
    ],
)
def test_format_follows_log_format_and_the_terminal(
    value: str | None, terminal: bool, chosen: str
) -> None:
    environ = {} if value is None else {logs.LOG_FORMAT_ENV: value}
    stream = _Terminal() if terminal else io.StringIO()
    assert logs.resolve_format(environ, stream) == chosen


def test_a_json_line_names_worker_shard_and_process() -> None:
    out = io.StringIO()
    logs.configure({logs.LOG_FORMAT_ENV: "json", logs.WORKER_ID_ENV: "host-1a2b3c4d"}, out)
    logs.set_shard("shardId-000000000003")
    logging.getLogger("consumer.processor").info("delivered %d", 5)
    line = json.loads(out.getvalue())
    assert set(line) == PROCESS_KEYS
    assert TIME.fullmatch(line["time"])
    assert (line["worker"], line["shard"], line["pid"]) == (
        "host-1a2b3c4d",
        "shardId-000000000003",
        os.getpid(),
    )
    assert (line["level"], line["logger"], line["message"]) == (
        "INFO",
        "consumer.processor",
        "delivered 5",
    )


def test_a_text_line_names_worker_and_shard() -> None:
    out = _Terminal()
    logs.configure({logs.WORKER_ID_ENV: "host-1a2b3c4d"}, out)
    logs.set_shard("shardId-000000000003")
    logging.getLogger("consumer.processor").warning("slow")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} WARNING consumer\.processor "
        r"\[host-1a2b3c4d shardId-000000000003\]: slow\n",
        out.getvalue(),
    )


@pytest.mark.parametrize("form", ["json", "text"])
def test_secrets_never_reach_a_line_even_in_a_traceback(form: str) -> None:
    out = io.StringIO()
    environ = {logs.LOG_FORMAT_ENV: form, API_KEY_ENV: API_KEY, "AWS_SECRET_ACCESS_KEY": AWS_SECRET}
    logs.configure(environ, out, secret_envs=(API_KEY_ENV,))

    def library_call() -> None:
        raise RuntimeError(f"a library put {API_KEY} and {AWS_SECRET} in its message")

    try:
        library_call()
    except RuntimeError:
        logging.getLogger("consumer").exception("failed with %s", API_KEY)
    written = out.getvalue()
    assert API_KEY not in written
    assert AWS_SECRET not in written
    assert written.count(logs.REDACTED) == 3
    assert "RuntimeError" in written, "the traceback itself is kept"


def test_short_values_are_not_secrets() -> None:
    """The emulators' dummy secret ("local") must not blank out ordinary words."""
    out = io.StringIO()
    logs.configure({logs.LOG_FORMAT_ENV: "text", "AWS_SECRET_ACCESS_KEY": "local"}, out)
    logging.getLogger("consumer").info("kinesis-mock runs locally")
    assert "locally" in out.getvalue()


def test_new_worker_ids_are_unique_and_valid() -> None:
    ids = {new_worker_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9.-]+-[0-9a-f]{8}", worker) for worker in ids)


def _logback_loggers(path: Path) -> list[tuple[str, str]]:
    return re.findall(r'<logger name="([^"]+)" level="([^"]+)"/>', path.read_text())


def test_both_daemon_logback_files_quiet_the_same_loggers() -> None:
    assert _logback_loggers(DAEMON_LOGBACK["json"]) == _logback_loggers(DAEMON_LOGBACK["text"])


def test_the_daemons_json_lines_parse_with_our_keys() -> None:
    """consumer/logback-json.xml, run by the daemon's own logback on hostile messages."""
    java = shutil.which("java")
    assert java is not None, "java is needed: the daemon runs on it (run.sh installs it)"
    probe = subprocess.run(
        [
            java,
            f"-Dlogback.configurationFile={DAEMON_LOGBACK['json']}",
            "-cp",
            str(jar_dir() / "*"),
            str(LOG_PROBE),
        ],
        env={**os.environ, logs.WORKER_ID_ENV: "host-1a2b3c4d"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [json.loads(line) for line in probe.stderr.splitlines()]
    assert len(lines) == 3, probe.stderr
    assert all(set(line) == DAEMON_KEYS for line in lines)
    assert all(TIME.fullmatch(line["time"]) for line in lines)
    assert {line["worker"] for line in lines} == {"host-1a2b3c4d"}
    assert lines[1]["message"].startswith('quote " backslash \\ tab')
    assert lines[1]["message"].endswith("brace {} percent % end")
    assert lines[0]["exception"] == ""
    assert lines[2]["exception"].startswith('java.lang.RuntimeException: boom "x"\nsecond line\n')


class _LeakyProxy(BaseHTTPRequestHandler):
    """A proxy in front of PostHog that refuses the key and echoes it back, with a secret."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = f"denied: {API_KEY} {AWS_SECRET}".encode()
        self.send_response(401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass


def test_a_shard_process_failing_never_logs_the_secrets(tmp_path: Path) -> None:
    """A shard process whose PostHog answers 401 with the key in the body exits 78; every
    line it wrote is JSON and none holds the API key or the AWS secret."""
    server = HTTPServer(("127.0.0.1", 0), _LeakyProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    properties = tmp_path / "worker.properties"
    values = {**BASE_PROPERTIES, "posthogHost": f"http://127.0.0.1:{server.server_port}"}
    values.pop("posthogApiKey")
    properties.write_text(format_properties(values), encoding="utf-8")
    record = {
        "action": "record",
        "data": "eyJwcm9wZXJ0aWVzIjogeyJldmVudE5hbWUiOiAieCJ9fQ==",
        "partitionKey": "pk",
        "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
        "subSequenceNumber": 0,
        "approximateArrivalTimestamp": 1_700_000_000_000,
    }
    messages = [
        {
            "action": "initialize",
            "shardId": "shardId-000000000001",
            "sequenceNumber": "TRIM_HORIZON",
            "subSequenceNumber": 0,
        },
        {"action": "processRecords", "records": [record], "millisBehindLatest": 0},
    ]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "consumer", "process"],
            cwd=ROOT,
            input="".join(json.dumps(message) + "\n" for message in messages),
            env={
                **os.environ,
                PROPERTIES_ENV: str(properties),
                API_KEY_ENV: API_KEY,
                "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
                logs.LOG_FORMAT_ENV: "json",
                logs.WORKER_ID_ENV: "host-1a2b3c4d",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == ExitStatus.CONFIG, result.stderr
    assert API_KEY not in result.stderr
    assert AWS_SECRET not in result.stderr
    parsed = [json.loads(line) for line in result.stderr.splitlines()]
    metrics = [line for line in parsed if "_aws" in line]
    lines = [line for line in parsed if "_aws" not in line]
    assert len(metrics) == 1, "its last metrics line went out as it stopped"
    assert lines, "it said why it stopped"
    assert {line["worker"] for line in lines} == {"host-1a2b3c4d"}
    assert lines[-1]["level"] == "CRITICAL"
