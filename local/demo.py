"""The embedded local default (``./run.sh``): the whole pipeline on this machine.

Starts the emulators and the capture stand-in, creates a demo stream with sample
records (nested keys, as the seed app's README shows them), runs one worker exactly
as ``./run.sh <properties>`` would, and reports the events PostHog (the stand-in)
accepted. New records keep trickling in until Ctrl+C, which stops everything cleanly.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from consumer.progress import LINE_START
from local import emulators, harness

# The worker's progress lines are echoed to the person.
PROGRESS_MARK = LINE_START

RUN_DIR = emulators.REPO_ROOT / ".local" / "run"
STREAM = "demo-events"
SHARDS = 2
TRICKLE_EVERY_SECONDS = 5.0
TRICKLE_RECORDS = 10
FIRST_EVENT_TIMEOUT_SECONDS = 180.0
EVENT_NAMES = ("page_viewed", "signed_up", "order_placed", "search")


def sample_records(start: int = 0) -> Iterator[tuple[str, bytes]]:
    """Endless sample records shaped like the seed app's example (nested keys)."""
    rng = random.Random(start)  # noqa: S311 - demo data
    for number in itertools.count(start):
        user = f"user-{rng.randrange(50)}"
        record = {
            "properties": {
                "eventName": EVENT_NAMES[number % len(EVENT_NAMES)],
                "userId": user,
                "foo": f"bar-{number}",
            },
            "context": {"page": {"path": f"/p/{number % 7}"}, "number": number},
        }
        yield user, json.dumps(record).encode()


def demo_properties(
    run_dir: Path, endpoints: emulators.Emulators, standin: harness.StandIn
) -> Path:
    """The properties a user would write for this setup."""
    return harness.write_properties(
        run_dir / "local.properties",
        {
            "applicationName": f"kinesis-posthog-demo-{int(time.time())}",
            "streamName": STREAM,
            "regionName": emulators.LOCAL_ENV["AWS_REGION"],
            "kinesisEndpoint": endpoints.kinesis_endpoint,
            "dynamoDBEndpoint": endpoints.dynamodb_endpoint,
            **harness.FAST_KCL,
            "eventKey": "properties.eventName",
            "additionalPropertyMappings": "properties.userId:distinct_id, properties.foo:foo, context.page.path:path",
            "posthogHost": standin.url,
            "posthogApiKey": standin.api_key,
            "deadLetter": f"file:{run_dir / 'dead-letter.jsonl'}",
            "checkpointIntervalSeconds": "2",
        },
    )


def run_demo(*, records: int, until_delivered: bool = False) -> int:
    """Run the local default until Ctrl+C (or, with ``until_delivered``, until all arrived)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    for old_log in RUN_DIR.glob("*.log"):
        old_log.unlink()
    say(f"logs in {RUN_DIR}")
    started = time.monotonic()
    with emulators.running(RUN_DIR) as endpoints:
        standin = harness.StandIn(RUN_DIR / "standin.log")
        worker: harness.Worker | None = None
        try:
            say(
                f"emulators up: Kinesis {endpoints.kinesis_endpoint}, DynamoDB {endpoints.dynamodb_endpoint}"
            )
            kinesis = harness.kinesis_client(endpoints.kinesis_endpoint)
            harness.create_stream(kinesis, STREAM, SHARDS)
            source = sample_records()
            put = harness.put_records(kinesis, STREAM, itertools.islice(source, records))
            say(
                f"stream {STREAM} ({SHARDS} shards) holds {put} sample records; PostHog stand-in at {standin.url}"
            )
            properties = demo_properties(RUN_DIR, endpoints, standin)
            worker = harness.Worker.start(properties, RUN_DIR / "worker.log")
            say("KCL worker starting (a fresh lease table takes ~30 s before the first record)")
            return _watch(
                worker, standin, kinesis, source, put, started, until_delivered=until_delivered
            )
        except KeyboardInterrupt:
            say(
                "Ctrl+C: stopping the worker (it checkpoints what PostHog accepted), then the emulators"
            )
            return 0
        finally:
            if worker is not None:
                status = worker.stop()
                say(f"worker stopped (exit status {status})")
            standin.close()


def _watch(  # noqa: PLR0913, PLR0917 - the demo's moving parts
    worker: harness.Worker,
    standin: harness.StandIn,
    kinesis: object,
    source: Iterator[tuple[str, bytes]],
    put: int,
    started: float,
    *,
    until_delivered: bool,
) -> int:
    shown = 0
    log_offset = 0
    next_trickle = time.monotonic() + TRICKLE_EVERY_SECONDS
    while True:
        progress, log_offset = _progress_lines(RUN_DIR / "worker.log", log_offset)
        for line in progress:
            say(line)
        if worker.process.poll() is not None:
            say(
                f"the worker exited with status {worker.process.returncode}; see {RUN_DIR / 'worker.log'}"
            )
            return 1
        delivered = standin.stats()["events"]
        if delivered and not shown:
            say(f"first events arrived {time.monotonic() - started:.1f}s after start; one of them:")
            print(json.dumps(standin.events()[0], indent=2), file=sys.stderr)  # noqa: T201 - for the person
            say("Ctrl+C stops everything" if not until_delivered else "waiting for the rest")
        if delivered != shown:
            say(f"PostHog stand-in accepted {delivered} of {put} events")
            shown = delivered
        if until_delivered and delivered >= put:
            time.sleep(1.0)  # the worker logs its progress line just after PostHog's answer
            for line in _progress_lines(RUN_DIR / "worker.log", log_offset)[0]:
                say(line)
            return 0
        if not shown and time.monotonic() - started > FIRST_EVENT_TIMEOUT_SECONDS:
            say(f"no event after {FIRST_EVENT_TIMEOUT_SECONDS:g}s; see {RUN_DIR / 'worker.log'}")
            return 1
        if not until_delivered and shown and time.monotonic() >= next_trickle:
            put += harness.put_records(kinesis, STREAM, itertools.islice(source, TRICKLE_RECORDS))
            next_trickle = time.monotonic() + TRICKLE_EVERY_SECONDS
        time.sleep(1.0)


def _progress_lines(log: Path, offset: int) -> tuple[list[str], int]:
    """The worker's progress lines (consumer/progress.py) written since ``offset``."""
    try:
        with log.open("rb") as file:
            file.seek(offset)
            chunk = file.read()
    except OSError:
        return [], offset
    complete = chunk[: chunk.rfind(b"\n") + 1]
    found = []
    for raw in complete.decode(errors="replace").splitlines():
        if PROGRESS_MARK in raw:
            text = raw
            with contextlib.suppress(ValueError):
                text = json.loads(raw)["message"]  # a JSON log line
            found.append(text[text.find(PROGRESS_MARK) :])
    return found, offset + len(complete)


def say(message: str) -> None:
    """Talk to the person at the terminal (stderr; this is not a shard process)."""
    print(f"[local] {message}", file=sys.stderr, flush=True)  # noqa: T201 - for the person
