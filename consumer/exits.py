"""Exit statuses, written once: every command and the shard process use these.

The numbers are the BSD ``sysexits.h`` codes, so supervisors and people read them the
usual way. The README's table is checked against this enum by ``tests/test_cli.py``.
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Why a process of ours ended."""

    #: Done, or stopped on request.
    OK = 0
    #: ``health``: a shard is stuck (what container health checks take as unhealthy).
    UNHEALTHY = 1
    #: ``run.sh``: no such command or properties file (EX_USAGE; written in run.sh too).
    USAGE = 64
    #: ``preview``: the record would be dead-lettered (EX_DATAERR).
    RECORD_ERROR = 65
    #: ``run``/``check``: Kinesis, DynamoDB or the dead-letter destination (for ``check``,
    #: also PostHog) cannot be reached or refused us at start-up (EX_UNAVAILABLE).
    UNAVAILABLE = 69
    #: A shard process hit a bug; nothing was checkpointed past it (EX_SOFTWARE).
    UNEXPECTED = 70
    #: A shard process whose daemon is gone; the next lease owner re-reads (EX_TEMPFAIL).
    DAEMON_GONE = 75
    #: A setting is wrong: at start-up, or found late (PostHog refused the key, the host
    #: redirects or is not PostHog, PostHog refuses every event) (EX_CONFIG).
    CONFIG = 78
