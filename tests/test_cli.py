"""The README's commands, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCAL_DEFAULT_TIMEOUT = 300


def run_sh(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "run.sh"), *args],
        cwd=ROOT,
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


def test_bad_properties_fail_before_the_daemon(tmp_path: Path) -> None:
    """`./run.sh <file>` with a typo stops at once, naming the key, with EX_CONFIG."""
    bad = tmp_path / "bad.properties"
    bad.write_text((ROOT / "properties" / "app.properties").read_text() + "\nevntKey = x\n")
    result = run_sh(str(bad))
    assert result.returncode == 78
    assert "evntKey" in result.stderr
    assert "did you mean eventKey" in result.stderr


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
    assert '"event": ' in result.stderr  # the sample event is shown
