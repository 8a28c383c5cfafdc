"""Start the local AWS emulators the KCL daemon can run against (no Docker needed).

* Kinesis: kinesis-mock (npm ``kinesis-local``, the engine LocalStack runs), kept on
  loopback by ``loopback.js``.
* DynamoDB (the KCL lease table): ``moto_server``.

Both are real HTTP servers in their own processes; see
``../shared/reference/local-emulators.md`` for why this pair and no other.

Started with ``record_calls=True`` (the test session), both also record which API
actions they serve (:mod:`local.api_calls`): :meth:`Emulators.api_calls`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from local.api_calls import Recorded, Recording, kinesis_env, moto_env

REPO_ROOT = Path(__file__).resolve().parents[1]
KINESIS_LOCAL_ENV = "KINESIS_LOCAL_DIR"
DEFAULT_KINESIS_LOCAL = REPO_ROOT / ".local" / "node_modules" / "kinesis-local"
STARTUP_TIMEOUT_SECONDS = 60.0
# Dummy credentials: the emulators accept any; boto3 and the SDK need something.
LOCAL_ENV = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class Emulators:
    """Where the running emulators listen, and where they record calls (if they do)."""

    kinesis_endpoint: str
    dynamodb_endpoint: str
    recording: Recording | None = None

    def api_calls(self) -> set[str]:
        """The actions called so far, as IAM names them (``kinesis:GetRecords``)."""
        return {call.name for call in self.recorded().calls}

    def recorded(self) -> Recorded:
        """Every distinct call so far: action, resource, and which SDK made it."""
        if self.recording is None:
            raise RuntimeError("the emulators were started without record_calls=True")
        return self.recording.read()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    """Block until ``port`` accepts connections; fail if ``process`` dies first."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode} during start-up")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on port {port} within {STARTUP_TIMEOUT_SECONDS:g}s")


def kinesis_local_dir() -> Path:
    """Where ``npm install kinesis-local`` put the emulator (run.sh does that)."""
    path = Path(os.environ.get(KINESIS_LOCAL_ENV, DEFAULT_KINESIS_LOCAL))
    if not (path / "main.js").exists():
        raise RuntimeError(f"kinesis-mock not found in {path}; run `./run.sh setup` first")
    return path


def start_kinesis(
    port: int, log_file: Path, *, record_calls: bool = False
) -> subprocess.Popen[bytes]:
    """Start kinesis-mock with plain HTTP on ``port`` (its TLS port is another free port).

    ``record_calls``: log every request's action into ``log_file`` (:mod:`local.api_calls`).
    """
    package = kinesis_local_dir()
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH; kinesis-mock needs Node.js 18+")
    env = {
        **os.environ,
        "KINESIS_MOCK_CERT_PATH": str(package / "server.json"),
        "KINESIS_MOCK_PLAIN_PORT": str(port),
        "KINESIS_MOCK_TLS_PORT": str(free_port()),
        "CREATE_STREAM_DURATION": "200ms",
        "DELETE_STREAM_DURATION": "200ms",
        "UPDATE_SHARD_COUNT_DURATION": "200ms",
        "LOG_LEVEL": "WARN",
        **(kinesis_env() if record_calls else {}),
    }
    preload = Path(__file__).with_name("loopback.js")
    with log_file.open("ab") as sink:
        process = subprocess.Popen(
            [node, "-r", str(preload), str(package / "main.js")],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(port, process, "kinesis-mock")
    return process


def start_dynamodb(
    port: int, log_file: Path, *, recording: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start moto's server (DynamoDB for the lease table) on loopback ``port``.

    ``recording``: append every request there as a JSON line (:mod:`local.api_calls`).
    """
    moto = Path(sys.executable).with_name("moto_server")
    command = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
    env = {**os.environ, **(moto_env(recording) if recording else {})}
    with log_file.open("ab") as sink:
        process = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(port, process, "moto_server")
    return process


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate ``process`` (then kill it if it lingers)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


@contextlib.contextmanager
def running(log_dir: Path, *, record_calls: bool = False) -> Iterator[Emulators]:
    """Run both emulators for the duration of the ``with`` block.

    ``record_calls``: record which actions they serve (:meth:`Emulators.api_calls`). Off
    by default: the record grows by about 1.5 KB a request, which a long-running local
    default does not need.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    kinesis_port, dynamo_port = free_port(), free_port()
    kinesis_log = log_dir / "kinesis-mock.log"
    recording = Recording(kinesis_log, log_dir / "moto-recording.jsonl") if record_calls else None
    if recording is not None:
        # A recording starts empty: the log directory may be reused, and logs are appended.
        kinesis_log.unlink(missing_ok=True)
        recording.dynamodb_recording.unlink(missing_ok=True)
    kinesis = start_kinesis(kinesis_port, kinesis_log, record_calls=record_calls)
    try:
        dynamo = start_dynamodb(
            dynamo_port,
            log_dir / "moto.log",
            recording=recording.dynamodb_recording if recording else None,
        )
        try:
            yield Emulators(
                f"http://127.0.0.1:{kinesis_port}", f"http://127.0.0.1:{dynamo_port}", recording
            )
        finally:
            stop(dynamo)
    finally:
        stop(kinesis)
