"""The compiled hot path (consumer/hot_path.py): built where it can be, never stale, and
the same code as its source, which is also tested as it runs where it is not compiled."""

from __future__ import annotations

import base64
import gzip
import importlib
import importlib.machinery
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer import config, hot_path, wiring
from consumer.capture_rules import DOUBLE_OVERFLOW_INT
from consumer.errors import RecordError
from consumer.mapping import Mapper
from consumer.record import KinesisRecord
from tests.hostile import Raw, hostile_text, raw_numbers, to_json
from tests.support import BASE_PROPERTIES

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


def can_compile() -> bool:
    """Whether setuptools could compile an extension here: a C compiler and Python's headers."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return compiler is not None and headers.exists()


@pytest.mark.skipif(
    not can_compile(), reason="no C compiler or headers: the package runs interpreted"
)
def test_every_hot_module_runs_compiled() -> None:
    """Where it can be compiled, the install compiled every module the records go through."""
    assert hot_path.compiled() == list(hot_path.COMPILED)
    assert hot_path.stale() == []
    for name in hot_path.COMPILED:
        module = importlib.import_module(f"consumer.{name}")
        assert isinstance(module.__loader__, importlib.machinery.ExtensionFileLoader), name
    assert hot_path.describe() == f"hot path: compiled by mypyc ({len(hot_path.COMPILED)} modules)"


def fake_package(tmp_path: Path, *, built: tuple[str, ...]) -> Path:
    """A package folder with every compiled module's source, ``built`` compiled as a build does."""
    package = tmp_path / "consumer"
    package.mkdir()
    for name in hot_path.COMPILED:
        (package / f"{name}.py").write_text(f"# {name}\n", encoding="utf-8")
    for name in built:
        (package / f"{name}{SUFFIX}").write_bytes(b"")
    if built:
        (package / f"compiled__mypyc{SUFFIX}").write_bytes(b"")
        digests = hot_path.digests(package)
        hot_path.write_manifest(package, {name: digests[name] for name in built})
    return package


@pytest.mark.parametrize(
    ("change", "stale"),
    [
        (lambda p: (p / "mapping.py").write_text("# edited\n"), ["mapping"]),  # an edit
        (lambda p: (p / "mapping.py").touch(), []),  # touched, the same text: current
        (lambda p: os.utime(p / "mapping.py", (0, 0)), []),  # an old mtime: current
        (lambda p: (p / hot_path.MANIFEST).unlink(), list(hot_path.COMPILED)),  # no record
        (lambda p: (p / f"gone{SUFFIX}").write_bytes(b""), ["gone"]),  # a module not compiled now
    ],
)
def test_compiled_files_that_do_not_match_their_source_are_named(
    tmp_path: Path, change: Callable[[Path], object], stale: list[str]
) -> None:
    """By the sources' content against what the build recorded, not by file times."""
    package = fake_package(tmp_path, built=hot_path.COMPILED)
    assert hot_path.stale(package) == []
    change(package)
    assert sorted(hot_path.stale(package)) == sorted(stale)


def test_a_stale_build_is_said_with_the_way_out(tmp_path: Path) -> None:
    package = fake_package(tmp_path, built=hot_path.COMPILED)
    (package / "mapping.py").write_text("# edited\n", encoding="utf-8")
    assert hot_path.describe(package) == (
        "hot path: compiled, but mapping changed since (the old code runs; "
        "./run.sh setup compiles it again)"
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


def repository_copy(tmp_path: Path) -> Path:
    """What run.sh's set-up reads, in a folder of its own."""
    root = tmp_path / "repo"
    (root / "consumer").mkdir(parents=True)
    for name in ("run.sh", "pyproject.toml", "setup.py", "consumer/hot_path.py"):
        shutil.copy2(ROOT / name, root / name)
    for path in [*hot_path.sources(), ROOT / "consumer" / "processor.py"]:
        shutil.copy2(path, root / "consumer" / path.name)
    return root


def run_setup(root: Path) -> list[str]:
    """``run.sh setup`` (production profile) with a venv whose pip only notes its calls.

    And a ``java`` that does nothing, so that set-up never turns to apt for one.
    """
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    python = bin_dir / "python"
    if not python.exists():
        python.symlink_to(sys.executable)
    calls = root / "pip-calls"
    for name, script in (("pip", f'echo "$*" >> {calls}'), ("java", "exit 0")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
        (bin_dir / name).chmod(0o755)
    result = subprocess.run(
        ["bash", str(root / "run.sh"), "setup"],
        env={**os.environ, "RUN_SH_SETUP": "production", "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    made = calls.read_text(encoding="utf-8").splitlines() if calls.exists() else []
    calls.unlink(missing_ok=True)
    installs = [call for call in made if "-e" in call.split()]
    # After an install, run.sh says which build it made (this pip compiles nothing).
    said = "run.sh: hot path: " in result.stderr
    assert said == bool(installs), result.stderr
    return installs


def test_run_sh_installs_again_when_a_compiled_source_changes(tmp_path: Path) -> None:
    """The install stamp covers the compiled sources and the build, not the other modules."""
    root = repository_copy(tmp_path)
    assert run_setup(root) == [f"install -q -e {root}"]  # nothing installed yet
    assert run_setup(root) == []  # the same sources: nothing to do
    (root / "consumer" / "processor.py").write_text("# not compiled\n", encoding="utf-8")
    assert run_setup(root) == []
    for changed in ("consumer/mapping.py", "consumer/hot_path.py", "setup.py", "pyproject.toml"):
        with (root / changed).open("a", encoding="utf-8") as source:
            source.write("\n# edited\n")
        assert run_setup(root) == [f"install -q -e {root}"], changed


def test_run_sh_installs_again_when_a_compiled_file_is_stale(tmp_path: Path) -> None:
    """Compiled files that do not match their source (a hand-made install) are rebuilt."""
    root = repository_copy(tmp_path)
    assert run_setup(root)
    (root / "consumer" / f"mapping{SUFFIX}").write_bytes(b"")  # compiled, never recorded
    assert run_setup(root) == [f"install -q -e {root}"]


def test_an_in_place_build_leaves_no_compiled_file_behind_when_it_fails(tmp_path: Path) -> None:
    """No C compiler: the build succeeds, and no older compiled file (a module not compiled
    any more, a previous build's) or record of one is left to run in the source's place."""
    root = interpreted_copy(tmp_path)
    for name in ("setup.py", "README.md"):
        shutil.copy2(ROOT / name, root / name)
    package = root / "consumer"
    for name in ("gone", "mapping"):
        (package / f"{name}{SUFFIX}").write_bytes(b"")
    hot_path.write_manifest(package, hot_path.digests(package))
    result = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=root,
        env={**os.environ, "CC": "false"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "kinesis-posthog: not compiling the hot path (CompileError" in result.stderr
    assert hot_path.built_files(package) == []
    assert not (package / hot_path.MANIFEST).exists()
    assert hot_path.describe(package).startswith("hot path: interpreted")


@pytest.mark.parametrize(
    ("argument", "status", "stream"),
    [
        ("--stamp", 0, r"^[0-9a-f]{16}\n$"),  # run.sh's install stamp
        ("--describe", 0, r"^hot path: "),  # which build is installed
        ("--nonsense", 64, ""),  # usage
    ],
)
def test_the_command_line_run_sh_uses(argument: str, status: int, stream: str) -> None:
    result = subprocess.run(
        [sys.executable, "consumer/hot_path.py", argument],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == status, result.stderr
    assert re.search(stream, result.stdout), result.stdout


def test_require_compiled_refuses_an_interpreted_build(tmp_path: Path) -> None:
    """The Docker build's check: an image that would run interpreted is not built."""
    root = repository_copy(tmp_path)
    result = subprocess.run(
        [sys.executable, "consumer/hot_path.py", "--require-compiled"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "hot path: interpreted" in result.stderr


def interpreted_copy(tmp_path: Path) -> Path:
    """The repository's package, tests and tooling without the compiled files: run in it
    (the working directory first on ``sys.path``), the package is the interpreted one."""
    root = tmp_path / "interpreted"
    ignore = shutil.ignore_patterns(
        f"*{SUFFIX}", "*.so", hot_path.MANIFEST, "__pycache__", ".hypothesis"
    )
    for name in ("consumer", "local", "tests"):
        shutil.copytree(ROOT / name, root / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_interpreted_package_passes_the_hot_paths_tests(tmp_path: Path) -> None:
    """The same source, not compiled (an install without a C compiler), passes its tests.

    Those marked ``interpreted`` (they replace a function compiled code calls directly)
    run here only. A copy of the repository without the compiled files, so that nothing
    of the installed build is imported.
    """
    interpreted = interpreted_copy(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=interpreted, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert probe[0] == str(interpreted / "consumer" / "mapping.py")
    assert probe[1].startswith("hot path: interpreted")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *MODULE_TESTS],
        cwd=interpreted,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "skipped" not in summary, summary


# --- Both builds, record by record --------------------------------------------------------

# Settings that read a record every way: the benchmark's (nested keys, a mapped distinct id,
# an event time), with includeAllProperties, and with a distinct id key and a fallback.
DIFFERENTIAL_SETTINGS = [
    {
        "additionalPropertyMappings": "properties.userId:distinct_id, properties.foo:foo",
        "timestampKey": "meta.ts",
    },
    {"includeAllProperties": "true", "timestampKey": "meta.ts"},
    {
        "distinctIdKey": "properties.userId",
        "missingDistinctId": "fixed",
        "fallbackDistinctId": "anon",
        "additionalPropertyMappings": "junk:junk",
        "eventKey": "junk.0",
    },
]
# Nesting around every limit: capture's 125, the fast reading's 256 brackets, the 512 a
# record may nest, and where Python's json gives up (near 1000, less the caller's stack,
# which compiled functions do not add to).
DEPTHS = [124, 126, 255, 257, 511, 512, 513, 700, *range(960, 1001, 5), 1023, 1025, 3000]
WHERE = ["junk", "properties.eventName", "properties.userId", "meta.ts", "properties.foo"]


def nested_at(where: str, depth: int, kind: str) -> str:
    """A record with a ``depth``-deep array (or object) at the dotted path ``where``."""
    opening, closing = ("[", "]") if kind == "[" else ('{"k":', "}")
    value = opening * depth + "1" + closing * depth
    document: dict[str, Any] = {"properties": {"eventName": "e", "userId": "u"}, "meta": {}}
    *parents, leaf = where.split(".")
    node = document
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = Raw(value)
    return to_json(document, ascii_only=True)


def fixed_corpus() -> list[dict[str, Any]]:
    """Deep nesting everywhere, and hostile numbers and text at every place a rule reads."""
    texts = [nested_at(w, d, k) for w in WHERE for d in DEPTHS for k in "[{"]
    texts += ["[" * 600 + "]" * 600, "{" * 2000, '"' + "[" * 900 + '"']  # top level, broken
    odd = [*RAW_NUMBER_EDGES, '"\\ud800"', '"\\u0000"', '" "', '""', "null", "[]", "{}"]
    texts += [
        f'{{"properties":{{"eventName":{v},"userId":{v},"foo":{v}}},"meta":{{"ts":{v}}},"junk":[{v}]}}'
        for v in odd
    ]
    return [
        {"settings": i, "data": base64.b64encode(t.encode()).decode(), "key": "pk", "arrival": 0}
        for t in texts
        for i in range(len(DIFFERENTIAL_SETTINGS))
    ]


RAW_NUMBER_EDGES = [
    "1e400", "-1e400", "1e-400", "-0", "1e-05", "9.9e-5", "1e16", "18446744073709551616",
    "-9223372036854775809", str(DOUBLE_OVERFLOW_INT), str(DOUBLE_OVERFLOW_INT - 1),
    "9" * 4300, "9" * 4301, "1700000000", "1700000000123", "253402300799999", "2.5e-300",
]  # fmt: skip


def map_cases(cases: list[dict[str, Any]]) -> list[list[Any]]:
    """Each case's outcome as this process's package maps it: the event's bytes, or the
    refusal's reason and detail (what a dead letter records)."""
    rules = [
        wiring.mapping_rules(config.from_mapping({**BASE_PROPERTIES, **overrides}))
        for overrides in DIFFERENTIAL_SETTINGS
    ]
    mappers = [Mapper(r, "shardId-000000000001") for r in rules]
    out: list[list[Any]] = []
    for case in cases:
        record = KinesisRecord(
            base64.b64decode(case["data"]), case["key"], "4959033827", 0, case["arrival"]
        )
        try:
            event = mappers[case["settings"]].map(record)
        except RecordError as exc:
            out.append(["refused", exc.reason, exc.detail])
        else:
            out.append(["event", event.uuid, event.payload.decode("utf-8", "surrogateescape")])
    return out


def interpreted_outcomes(root: Path, cases: list[dict[str, Any]]) -> list[list[Any]]:
    """:func:`map_cases` in a process of the interpreted copy ``root``."""
    result = subprocess.run(
        [sys.executable, "-c", DIFFERENTIAL_MAIN],
        cwd=root,
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes: list[list[Any]] = json.loads(result.stdout)
    return outcomes


DIFFERENTIAL_MAIN = (
    "import json, sys, consumer.hot_path as h; "
    "assert not h.compiled(), h.describe(); "
    "from tests.test_hot_path import map_cases; "
    "print(json.dumps(map_cases(json.load(sys.stdin))))"
)


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return interpreted_copy(tmp_path_factory.mktemp("differential"))


@pytest.mark.skipif(not can_compile(), reason="no C compiler or headers: one build only")
def test_both_builds_map_hostile_records_alike(interpreted: Path) -> None:
    """The same event bytes, or the same reason and detail, record by record.

    Deep nesting is where they once parted: json's decoder stops near Python's recursion
    limit, less the caller's stack, and compiled functions take no Python frames, so the
    compiled build read 4-5 levels deeper. decoding.MAX_RECORD_DEPTH decides first now.
    """
    cases = fixed_corpus()
    compiled = map_cases(cases)
    assert {outcome[1] for outcome in compiled if outcome[0] == "refused"} >= {"too_deep"}
    for case, mine, theirs in zip(
        cases, compiled, interpreted_outcomes(interpreted, cases), strict=True
    ):
        assert mine == theirs, (base64.b64decode(case["data"])[:200], case["settings"])


hostile_documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | hostile_text
    | raw_numbers.map(Raw)
    # around the 512 levels a record may nest, and where json gives up
    | st.integers(min_value=500, max_value=1100).map(lambda n: Raw("[" * n + "]" * n)),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(hostile_text, children, max_size=3)
    ),
    max_leaves=10,
).map(lambda junk: {"properties": {"eventName": "e", "userId": junk, "foo": junk}, "junk": junk})


@pytest.mark.skipif(not can_compile(), reason="no C compiler or headers: one build only")
@hypothesis.settings(max_examples=4, deadline=None)
@given(
    documents=st.lists(
        st.tuples(hostile_documents, st.integers(0, len(DIFFERENTIAL_SETTINGS) - 1), st.booleans()),
        min_size=50,
        max_size=50,
    )
)
def test_both_builds_map_arbitrary_records_alike(
    interpreted: Path, documents: list[tuple[Any, int, bool]]
) -> None:
    """Hostile JSON, plain or gzipped, under each setting: the same outcome from both builds."""
    cases = []
    for document, settings, gzipped in documents:
        data = to_json(document, ascii_only=True).encode()
        data = gzip.compress(data, mtime=0) if gzipped else data
        cases.append(
            {
                "settings": settings,
                "data": base64.b64encode(data).decode(),
                "key": " ",
                "arrival": 1,
            }
        )
    assert map_cases(cases) == interpreted_outcomes(interpreted, cases)
