"""The project's own checks run with the suite: ruff (broad rule set) and mypy --strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "consumer", "local", "tests", "scripts"],  # lint
        ["ruff", "format", "--check", "consumer", "local", "tests", "scripts"],  # formatting
        ["mypy"],  # strict typing, files from pyproject.toml
    ],
)
def test_tool_passes(command: list[str]) -> None:
    """Each tool exits 0 on the whole tree."""
    tool = Path(sys.executable).with_name(command[0])
    result = subprocess.run(
        [str(tool), *command[1:]], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
