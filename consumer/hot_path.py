"""The modules every record goes through, compiled to C by mypyc, and whether they are.

``setup.py`` compiles :data:`COMPILED` when the package is installed (``./run.sh setup``,
the Docker image): the same source, run without the interpreter's overhead, maps a
record in about 20% less CPU (README, "Performance"). Where no C compiler is found the
install goes on without them, and the modules run as Python, alike but slower.

A compiled module is a file beside its source (``mapping.cpython-311-...so`` next to
``mapping.py``) that Python imports in its place. So a source edited after the install
would not run: :func:`stale` names such modules, ``run.sh`` rebuilds when one of these
sources changes, the test suite refuses to run with a stale one, and a worker says in its
start-up log which it runs (:func:`describe`).

Read by ``setup.py`` and ``run.sh`` as a file: it imports nothing of the package.
"""

from __future__ import annotations

import importlib.machinery
import sys
from pathlib import Path

# The record -> event path (and the values it builds), each a module of this package.
# Not the protocol loop or the processor: they call amazon-kclpy's untyped classes, where
# compiling gains little.
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

_PACKAGE = Path(__file__).resolve().parent


def sources() -> list[Path]:
    """The source files that are compiled."""
    return [_PACKAGE / f"{name}.py" for name in COMPILED]


def _built(name: str, package: Path) -> Path | None:
    """The compiled file of module ``name``, if there is one."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = package / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    return None


def compiled(package: Path = _PACKAGE) -> list[str]:
    """The modules of :data:`COMPILED` that have a compiled file (and so are imported from it)."""
    return [name for name in COMPILED if _built(name, package) is not None]


def stale(package: Path = _PACKAGE) -> list[str]:
    """The compiled modules whose source changed after they were built: their edits do not run."""
    out = []
    for name in COMPILED:
        built = _built(name, package)
        if built is not None and (package / f"{name}.py").stat().st_mtime > built.stat().st_mtime:
            out.append(name)
    return out


def describe(package: Path = _PACKAGE) -> str:
    """One line for the start-up log and the benchmark: which build runs."""
    done, old = compiled(package), stale(package)
    if old:
        return (
            f"hot path: compiled, but {', '.join(old)} changed since (the old code runs; "
            "./run.sh setup rebuilds it)"
        )
    if len(done) == len(COMPILED):
        return f"hot path: compiled by mypyc ({len(done)} modules)"
    if not done:
        return "hot path: interpreted (no C compiler at install: about 20% more CPU per record)"
    return f"hot path: partly compiled ({', '.join(done)}), the rest interpreted"


if __name__ == "__main__":
    # run.sh: the files whose change means a rebuild.
    sys.stdout.write("".join(f"{path}\n" for path in sources()))
