"""`pip install .` installs only what a worker runs; the local tooling stays in the repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from consumer import hot_path
from consumer.__main__ import main
from local import harness

ROOT = Path(__file__).resolve().parents[1]
# What the wheel is built from: the product and, beside it, what must stay out of it.
SOURCE_TREE = ("pyproject.toml", "setup.py", "README.md", "consumer", "local", "tests", "scripts")


def build_wheel(tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, bytes]:
    """Build the wheel from a copy of the tree (a stale build/ in the repository could leak
    into a wheel built in place) and return the files it holds, by name."""
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".*", "*.so")
    source.mkdir()
    for name in SOURCE_TREE:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path / "wheel"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index"),
            *("--no-build-isolation", "--wheel-dir", str(out), str(source)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("kinesis_posthog-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_wheel_holds_the_product_and_nothing_else(tmp_path: Path) -> None:
    files = build_wheel(tmp_path)
    product = {name for name in files if ".dist-info/" not in name}
    assert {
        "consumer/__main__.py",
        "consumer/processor.py",
        "consumer/logback.xml",
        "consumer/logback-json.xml",
        "consumer/py.typed",
    } <= product
    assert all(name.startswith("consumer/") for name in product), sorted(product)
    assert not [name for name in files if "local" in name.split("/") or name.endswith(".js")]
    entry_points = [name for name in files if name.endswith(".dist-info/entry_points.txt")]
    assert entry_points, files
    # Nothing installed may need the tooling that is not installed with it.
    imports_local = re.compile(rb"^\s*(from|import) local\b", re.MULTILINE)
    assert not [name for name in product if imports_local.search(files[name])]
    # The hot path compiled (consumer/hot_path.py), with its sources beside it.
    compiled = {name.split(".")[0] for name in product if name.endswith(".so")}
    assert compiled == {
        *(f"consumer/{module}" for module in hot_path.COMPILED),
        hot_path.GROUP_NAME.replace(".", "/") + "__mypyc",
    }
    assert {f"consumer/{module}.py" for module in hot_path.COMPILED} <= product
    # With the record of what was compiled, from these sources (hot_path.stale reads it).
    recorded = files[f"consumer/{hot_path.MANIFEST}"].decode().splitlines()
    assert recorded == [f"{digest} {name}" for name, digest in sorted(hot_path.digests().items())]


def test_without_a_c_compiler_the_wheel_runs_interpreted(tmp_path: Path) -> None:
    """No C compiler: the package builds anyway, without compiled modules (slower, alike)."""
    files = build_wheel(tmp_path, env={"CC": "false"})
    assert not [name for name in files if name.endswith(".so")]
    assert f"consumer/{hot_path.MANIFEST}" not in files
    assert {f"consumer/{module}.py" for module in hot_path.COMPILED} <= set(files)


@pytest.mark.parametrize("command", ["local", "standin", "demo"])
def test_the_product_cli_has_no_local_commands(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_local_cli_and_its_stand_in_start_from_any_directory(tmp_path: Path) -> None:
    """`python -m local` resolves from the repository root, wherever it is started."""
    result = subprocess.run(
        [sys.executable, "-m", "local", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "demo" in result.stdout
    assert "standin" in result.stdout
    # The harness starts the stand-in as its own process, from any working directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(elsewhere)
        standin = harness.StandIn(Path("standin.log"))
        try:
            assert standin.stats()["events"] == 0
        finally:
            standin.close()
    assert (elsewhere / "standin.log").exists()
