"""The modules every record goes through, compiled to C by mypyc, and whether they are.

``setup.py`` compiles :data:`COMPILED` when the package is installed (``./run.sh setup``,
the Docker image): the same source, run without the interpreter's overhead (README,
"The compiled hot path"). Where the compile fails (no C compiler, no Python headers) the
install goes on without them, and the modules run as Python, alike but slower.

A compiled module is a file beside its source (``mapping.cpython-311-...so`` next to
``mapping.py``) that Python imports in its place, so a source edited after the install
would not run. So each build first removes every compiled file of the package, and
writes :data:`MANIFEST`: the SHA-256 of each source it compiled. :func:`stale` compares
the sources with it; ``run.sh`` installs again whenever :func:`stamp` changes, the test
suite refuses to run stale code, and a worker says in its start-up log which it runs
(:func:`describe`).

Run by ``setup.py`` and ``run.sh`` as a file (``python consumer/hot_path.py --stamp``):
it imports nothing of the package.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import sys
from pathlib import Path

# The record -> event path (and the values it builds), each a module of this package.
# Not the protocol loop or the processor: they call amazon-kclpy's untyped classes.
COMPILED = (
    "record",
    "paths",
    "timestamps",
    "event_ids",
    "capture_rules",
    "decoding",
    "mapping",
    "batching",
)
# mypyc's shared library for them, inside the package: consumer/compiled__mypyc....so.
GROUP_NAME = "consumer.compiled"
# What a build compiled: "<sha256 of the source> <module>" per line, beside the files.
MANIFEST = "compiled.sha256"
# The files of the repository that decide what a build makes (besides COMPILED's sources).
_BUILD_FILES = ("pyproject.toml", "setup.py", "consumer/hot_path.py")

_PACKAGE = Path(__file__).resolve().parent


def sources(package: Path = _PACKAGE) -> list[Path]:
    """The source files that are compiled."""
    return [package / f"{name}.py" for name in COMPILED]


def digests(package: Path = _PACKAGE) -> dict[str, str]:
    """The SHA-256 of each compiled module's source, as it is now (what a build records)."""
    return {path.stem: hashlib.sha256(path.read_bytes()).hexdigest() for path in sources(package)}


def write_manifest(target: Path, compiled: dict[str, str]) -> None:
    """Record what a build compiled (``compiled``: :func:`digests` when it started)."""
    lines = "".join(f"{digest} {name}\n" for name, digest in sorted(compiled.items()))
    (target / MANIFEST).write_text(lines, encoding="utf-8")


def built_files(package: Path = _PACKAGE) -> list[Path]:
    """Every compiled file in the package (those of :data:`COMPILED`, its library, leftovers)."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return sorted(path for path in package.iterdir() if path.name.endswith(suffixes))


def _module_of(path: Path) -> str:
    return path.name.split(".", 1)[0]


def compiled(package: Path = _PACKAGE) -> list[str]:
    """The modules of :data:`COMPILED` that have a compiled file (and so are imported from it)."""
    present = {_module_of(path) for path in built_files(package)}
    return [name for name in COMPILED if name in present]


def stale(package: Path = _PACKAGE) -> list[str]:
    """Compiled files that do not match the source: their module's edits do not run.

    A compiled module whose source differs from what the build recorded (or with no
    record), and any compiled file of a module that is not compiled any more.
    """
    recorded: dict[str, str] = {}
    manifest = package / MANIFEST
    if manifest.exists():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            digest, _, name = line.partition(" ")
            recorded[name] = digest
    now = digests(package)
    library = GROUP_NAME.rpartition(".")[2] + "__mypyc"
    out = []
    for path in built_files(package):
        name = _module_of(path)
        if name != library and (name not in now or recorded.get(name) != now[name]):
            out.append(name)
    return out


def describe(package: Path = _PACKAGE) -> str:
    """One line for the start-up log and the benchmark: which build runs."""
    done, old = compiled(package), stale(package)
    if old:
        return (
            f"hot path: compiled, but {', '.join(old)} changed since (the old code runs; "
            "./run.sh setup compiles it again)"
        )
    if len(done) == len(COMPILED):
        return f"hot path: compiled by mypyc ({len(done)} modules)"
    if not done:
        return (
            "hot path: interpreted (no C compiler or Python headers at install: "
            "more CPU per record)"
        )
    return f"hot path: partly compiled ({', '.join(done)}), the rest interpreted"


def stamp(root: Path = _PACKAGE.parent) -> str:
    """What an install is made from: changes when a compiled source or the build does."""
    digest = hashlib.sha256()
    for path in [*(root / name for name in _BUILD_FILES), *sources(root / _PACKAGE.name)]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def main(argv: list[str]) -> int:
    """For run.sh and the Docker build, which run this file before anything is installed.

    ``--stamp``: the install stamp. ``--describe``: which build is installed.
    ``--current``: exit 1 if a compiled file is stale. ``--require-compiled``: exit 1
    unless every module is compiled and current.
    """
    command = argv[0] if len(argv) == 1 else ""
    if command in ("--stamp", "--describe"):
        sys.stdout.write((stamp() if command == "--stamp" else describe()) + "\n")
        return 0
    if command == "--current":
        return 1 if stale() else 0
    if command == "--require-compiled":
        # The Docker build: an image that would run interpreted is not built.
        line = describe()
        sys.stderr.write(line + "\n")
        return 0 if line.startswith("hot path: compiled by mypyc") else 1
    sys.stderr.write("usage: hot_path.py --stamp | --describe | --current | --require-compiled\n")
    return 64  # ExitStatus.USAGE (consumer/exits.py)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
