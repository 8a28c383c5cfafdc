"""Log lines: one format for the daemon and every shard process of a worker.

``LOG_FORMAT`` chooses: ``auto`` (the default) writes JSON lines when stderr is not a
terminal (ECS awslogs, CloudWatch Logs Insights) and text on a terminal; ``json`` and
``text`` force one. The launcher resolves it once and hands the result to the daemon
(its logback file) and, through the environment, to the shard processes, so a worker's
log stream holds one format. ``LOG_LEVEL`` sets the level (default INFO).

A JSON line has the keys the daemon's logback pattern writes (``consumer/logback-json.xml``):
``time`` (UTC, milliseconds), ``level``, ``logger``, ``worker``, ``message``, and
``exception`` when there is one; a shard process's lines add ``shard`` and ``pid``.
Both always go to stderr: stdout is the KCL protocol. Log calls pass counts,
positions and reasons, never payloads; and as a last line of defence every line has
the worker's secrets (the API key, the AWS secret key and session token) replaced by
``[redacted]`` before it is written, tracebacks included, since an exception's text
is not ours to control.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import TextIO

LOG_FORMAT_ENV = "LOG_FORMAT"
LOG_LEVEL_ENV = "LOG_LEVEL"
# The worker's KCL workerId, set by the launcher for the daemon's logback file and the
# shard processes (outside the KINESIS_POSTHOG_ prefix, which is for settings).
WORKER_ID_ENV = "KCL_WORKER_ID"
FORMATS = ("auto", "json", "text")
# Libraries that log request details at INFO; their warnings still show.
QUIET_LOGGERS = ("botocore", "boto3", "urllib3")
UNKNOWN = "-"
REDACTED = "[redacted]"
# Environment variables holding secrets the AWS SDKs and we read.
AWS_SECRET_ENVS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# Shorter values are not secrets worth the name (the emulators' dummy key is "local"),
# and redacting them would garble ordinary words.
MIN_SECRET_LENGTH = 8

_shard = UNKNOWN
_worker = UNKNOWN
_secrets: set[str] = set()


def add_secrets(*values: str | None) -> None:
    """Never write these values in a log line (a key read from a file, for example)."""
    _secrets.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)


def redact(text: str) -> str:
    """``text`` with every known secret replaced by :data:`REDACTED`."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def set_worker(worker_id: str) -> None:
    """Name this process's worker in every later line (the launcher learns it late)."""
    global _worker  # noqa: PLW0603 - one worker per process
    _worker = worker_id


def set_shard(shard_id: str) -> None:
    """Name this process's shard in every later line (a shard process has one shard)."""
    global _shard  # noqa: PLW0603 - one shard per process, set once at initialize
    _shard = shard_id


def resolve_format(environ: Mapping[str, str], stream: TextIO) -> str:
    """``json`` or ``text``: what ``LOG_FORMAT`` asks for, ``auto`` by the terminal."""
    wanted = environ.get(LOG_FORMAT_ENV, "auto").strip().lower() or "auto"
    if wanted not in FORMATS:
        wanted = "auto"  # logging must work before any setting is validated
    if wanted == "auto":
        return "text" if stream.isatty() else "json"
    return wanted


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the daemon's keys plus ``shard`` and ``pid``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (newlines in it escaped)."""
        line: dict[str, object] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "worker": _worker,
            "shard": _shard,
            "pid": record.process,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The daemon's text layout (``consumer/logback.xml``), with the shard after the worker."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as text, its traceback (if any) on the following lines."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        text = (
            f"{stamp}.{int(record.msecs):03d} {record.levelname:<5} {record.name} "
            f"[{_worker} {_shard}]: {record.getMessage()}"
        )
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


def _utc(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created * 1000) % 1000:03d}Z"


def configure(
    environ: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
    secret_envs: tuple[str, ...] = (),
) -> str:
    """Send every log line to stderr in the chosen format; return the format.

    The values of ``secret_envs`` and of the AWS SDKs' secret variables are redacted.
    """
    environ = os.environ if environ is None else environ
    stream = sys.stderr if stream is None else stream
    add_secrets(*(environ.get(name) for name in (*secret_envs, *AWS_SECRET_ENVS)))
    chosen = resolve_format(environ, stream)
    set_worker(environ.get(WORKER_ID_ENV, UNKNOWN))
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = environ.get(LOG_LEVEL_ENV, "INFO").upper()
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return chosen
