"""What the PostHog stand-in remembers, shared by its request threads.

Accepted events and their JSON text as sent (also appended to the record file, if any,
and reloaded from it on start), the answers' counters, the request log, and the
settings of ``POST /_control`` (see :mod:`local.standin`).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any


class State:
    """Everything the stand-in holds, behind one lock; the handlers' threads share it."""

    def __init__(self, api_key: str, record_file: Path | None) -> None:
        """Serve project ``api_key``; reload the events ``record_file`` holds, if any."""
        self.api_key = api_key
        self.lock = threading.Lock()
        self.record_file = record_file
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        if record_file is not None and record_file.exists():
            for line in record_file.read_text(encoding="utf-8").splitlines():
                if line:
                    event, raw = read_record(line)
                    self.events.append(event)
                    self.raw.append(raw)
        self.statuses: Counter[int] = Counter()
        self.dropped: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.control: dict[str, Any] = {}

    def accept(self, events: list[dict[str, Any]], raw: list[str]) -> None:
        """Keep accepted events and their text as sent (and record them, if asked)."""
        with self.lock:
            self.events.extend(events)
            self.raw.extend(raw)
            if self.record_file is not None:
                with self.record_file.open("a", encoding="utf-8") as sink:
                    sink.writelines(json.dumps({"raw": text}) + "\n" for text in raw)

    def drop(self, reason: str, count: int) -> None:
        """Count ``count`` events answered 200 and then dropped, for ``reason``."""
        with self.lock:
            self.dropped[reason] += count

    def setting(self, name: str) -> Any:
        """One setting of the last ``POST /_control``, or None."""
        with self.lock:
            return self.control.get(name)

    def next_override(self) -> tuple[int | None, str | None]:
        """The injected (status, Retry-After) for the next capture request, using one up."""
        with self.lock:
            control = self.control
            status = control.get("status")
            if status is None:
                return None, None
            remaining = control.get("remaining")
            if remaining is not None:
                if remaining <= 0:
                    return None, None
                control["remaining"] = remaining - 1
            return int(status), control.get("retry_after")

    def reset(self) -> None:
        """Forget everything: events, counters, the request log and the settings."""
        with self.lock:
            self.events.clear()
            self.raw.clear()
            self.statuses.clear()
            self.dropped.clear()
            self.requests.clear()
            self.control = {}


def read_record(line: str) -> tuple[dict[str, Any], str]:
    """One record-file line -> (event, its text as sent)."""
    entry = json.loads(line)
    # Current format: {"raw": <the event's JSON text as sent>}. An accepted event always
    # has an "event" key, so a line of the earlier format (the parsed event) never
    # looks like this; for those the text is rebuilt, which is the best that can be done.
    if isinstance(entry, dict) and set(entry) == {"raw"} and isinstance(entry["raw"], str):
        return json.loads(entry["raw"]), entry["raw"]
    return entry, json.dumps(entry)
