"""Compile the record -> event path with mypyc (consumer/hot_path.py says which modules).

Everything else about the package is in pyproject.toml. Without a working C compiler the
build goes on without the compiled modules: the package then runs as plain Python, the
same code, slower (a worker's start-up log says which it runs).
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
_NO_COMPILER = (CCompilerError, CompileError, ExecError, PlatformError)


def _warn(exc: BaseException) -> None:
    sys.stderr.write(
        f"kinesis-posthog: not compiling the hot path ({type(exc).__name__}: {exc}); "
        "it runs as plain Python, about 20% more CPU per record\n"
    )


class _OptionalBuildExt(build_ext):  # type: ignore[misc]
    """build_ext, but a missing or failing C compiler leaves the modules interpreted.

    All or nothing: a compiled module needs mypyc's shared library, so when any part
    fails, whatever was built is removed and no module is compiled.
    """

    extensions: list[Any]

    def run(self) -> None:
        try:
            super().run()
        except _NO_COMPILER as exc:
            _warn(exc)
            for extension in self.extensions:
                Path(self.get_ext_fullpath(extension.name)).unlink(missing_ok=True)
            self.extensions = []


def _extensions() -> list[Any]:
    return mypycify(
        [f"consumer/{name}.py" for name in _HOT_PATH["COMPILED"]],
        opt_level="3",
        group_name=_HOT_PATH["GROUP_NAME"],
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": _OptionalBuildExt})
