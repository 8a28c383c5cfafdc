"""The compiled hot path (consumer/hot_path.py): built where it can be, never stale, and
the same code as its source, which is also tested as it runs where it is not compiled."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from consumer import hot_path

ROOT = Path(__file__).resolve().parents[1]
# The tests of the compiled modules, which the interpreted package must pass too.
MODULE_TESTS = [
    f"tests/test_{name}.py"
    for name in hot_path.COMPILED
    if (ROOT / f"tests/test_{name}.py").exists()
]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
# Where a process imports the mapper from, and which build it says it runs.
PROBE = (
    "import consumer.mapping as m, consumer.hot_path as h; print(m.__file__); print(h.describe())"
)


def c_compiler() -> str | None:
    """The C compiler setuptools would call, if there is one."""
    return shutil.which(os.environ.get("CC", "cc"))


@pytest.mark.skipif(c_compiler() is None, reason="no C compiler: the package runs interpreted")
def test_every_hot_module_runs_compiled() -> None:
    """Where a C compiler is, the install compiled every module the records go through."""
    assert hot_path.compiled() == list(hot_path.COMPILED)
    for name in hot_path.COMPILED:
        module = importlib.import_module(f"consumer.{name}")
        assert isinstance(module.__loader__, importlib.machinery.ExtensionFileLoader), name
    assert hot_path.describe() == f"hot path: compiled by mypyc ({len(hot_path.COMPILED)} modules)"


def fake_package(tmp_path: Path, *, built: tuple[str, ...]) -> Path:
    """A package folder with every compiled module's source, and a built file for ``built``."""
    package = tmp_path / "consumer"
    package.mkdir()
    for name in hot_path.COMPILED:
        (package / f"{name}.py").write_text("", encoding="utf-8")
    for name in built:
        (package / f"{name}{SUFFIX}").write_bytes(b"")
    return package


def test_a_source_changed_after_compiling_is_named(tmp_path: Path) -> None:
    """An edit after the build would not run: the module is named, with the way out."""
    package = fake_package(tmp_path, built=hot_path.COMPILED)
    assert hot_path.stale(package) == []
    source = package / "mapping.py"
    later = (package / f"mapping{SUFFIX}").stat().st_mtime + 1
    os.utime(source, (later, later))
    assert hot_path.stale(package) == ["mapping"]
    assert hot_path.describe(package) == (
        "hot path: compiled, but mapping changed since (the old code runs; "
        "./run.sh setup rebuilds it)"
    )


@pytest.mark.parametrize(
    ("built", "said"),
    [
        ((), "hot path: interpreted"),  # no C compiler at install
        (("paths",), "hot path: partly compiled (paths)"),  # a hand-made build
    ],
)
def test_the_build_that_runs_is_said(tmp_path: Path, built: tuple[str, ...], said: str) -> None:
    assert hot_path.describe(fake_package(tmp_path, built=built)).startswith(said)


def test_run_sh_rebuilds_when_a_compiled_source_changes() -> None:
    """run.sh's install stamp covers every compiled source (the list it is given)."""
    listed = subprocess.run(
        [sys.executable, "consumer/hot_path.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert listed == [str(path) for path in hot_path.sources()]
    assert all(path.exists() for path in hot_path.sources())
    assert "consumer/hot_path.py)" in (ROOT / "run.sh").read_text(encoding="utf-8")


def test_the_interpreted_package_passes_the_hot_paths_tests(tmp_path: Path) -> None:
    """The same source, not compiled (an install without a C compiler), passes its tests.

    Those marked ``interpreted`` (they replace a function compiled code calls directly)
    run here only. A copy of the repository without the compiled files, so that nothing
    of the installed build is imported.
    """
    ignore = shutil.ignore_patterns(f"*{SUFFIX}", "*.so", "__pycache__", ".hypothesis")
    for name in ("consumer", "local", "tests"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert probe[0] == str(tmp_path / "consumer" / "mapping.py")
    assert probe[1].startswith("hot path: interpreted")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *MODULE_TESTS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "skipped" not in summary, summary
