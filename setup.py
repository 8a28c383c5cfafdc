"""Compile the record -> event path with mypyc (consumer/hot_path.py says which modules).

Everything else about the package is in pyproject.toml. Without a working C compiler (or
Python's headers) the build goes on without the compiled modules: the package then runs
as plain Python, the same code, slower. run.sh says which build it installed, and a
worker's start-up log says which it runs.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from typing import Any

from mypyc.build import mypycify
from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, PlatformError

_HOT_PATH: dict[str, Any] = runpy.run_path("consumer/hot_path.py")
_PACKAGE = Path("consumer")
_NO_COMPILER = (CCompilerError, CompileError, ExecError, PlatformError)
# The sources as mypyc reads them below: what the manifest records.
_DIGESTS: dict[str, str] = _HOT_PATH["digests"](_PACKAGE)


class _OptionalBuildExt(build_ext):  # type: ignore[misc]
    """build_ext, but a missing or failing C compiler leaves the modules interpreted.

    All or nothing, and never old code: an in-place build (``pip install -e``) first
    removes every compiled file of the package, so a failed build leaves none, and a
    successful one records what it compiled (consumer/hot_path.py, ``MANIFEST``).
    """

    extensions: list[Any]

    def run(self) -> None:
        inplace = bool(self.inplace)  # setuptools turns it off while it builds
        if inplace:
            for path in _HOT_PATH["built_files"](_PACKAGE):
                path.unlink()
            (_PACKAGE / _HOT_PATH["MANIFEST"]).unlink(missing_ok=True)
        try:
            super().run()
        except _NO_COMPILER as exc:
            sys.stderr.write(
                f"kinesis-posthog: not compiling the hot path ({type(exc).__name__}: {exc}); "
                "it runs as plain Python, with more CPU per record\n"
            )
            for extension in self.extensions:
                Path(self.get_ext_fullpath(extension.name)).unlink(missing_ok=True)
            self.extensions = []
            return
        target = _PACKAGE if inplace else Path(self.build_lib) / _PACKAGE
        _HOT_PATH["write_manifest"](target, _DIGESTS)


def _extensions() -> list[Any]:
    return mypycify(
        [str(path) for path in _HOT_PATH["sources"](_PACKAGE)],
        opt_level="3",
        group_name=_HOT_PATH["GROUP_NAME"],
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": _OptionalBuildExt})
