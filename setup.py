"""Build the optional Cython accelerators (every ``sfu/**/*.pyx``).

Metadata lives in pyproject.toml; this file only declares the extensions.

Each compiled module has a pure-Python twin (``sfu/_relay_py.py`` beside
``sfu/_relay.pyx``, ...) and a selector module that falls back to it, so the
package still installs and works when:

* ``SFU_NO_EXTENSIONS`` is set (to anything but ``""``/``0``) at build time:
  nothing is compiled;
* Cython or a C compiler is missing, or a module fails to compile: a warning
  is printed and that module is skipped.

A silent fallback would hide a broken build, so ``tests/test_packaging.py``
fails when an extension did not load and ``SFU_NO_EXTENSIONS`` is unset.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:  # setuptools vendors these names for distutils-less Pythons (3.12+)
    from setuptools.errors import CCompilerError, CompileError, ExecError, PlatformError
except ImportError:  # pragma: no cover - setuptools < 59
    from distutils.errors import CCompilerError, CompileError  # type: ignore
    from distutils.errors import DistutilsExecError as ExecError  # type: ignore
    from distutils.errors import DistutilsPlatformError as PlatformError  # type: ignore

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD_ERRORS = (CCompilerError, CompileError, ExecError, PlatformError, OSError, ValueError)


def _no_extensions() -> bool:
    return os.environ.get("SFU_NO_EXTENSIONS", "") not in ("", "0")


def _warn(message: str) -> None:
    bar = "*" * 75
    print(
        f"\n{bar}\nWARNING (sfu): {message}\n"
        "Installing the pure-Python implementations instead.\n"
        f"{bar}\n",
        file=sys.stderr,
    )


class OptionalBuildExt(build_ext):
    """``build_ext`` that skips (with a loud warning) what does not compile."""

    def run(self) -> None:
        try:
            super().run()
        except BUILD_ERRORS as exc:  # e.g. no C compiler at all
            _warn(f"cannot build the C extensions: {exc}")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except BUILD_ERRORS as exc:
            _warn(f"cannot build {ext.name}: {exc}")


def extensions() -> list[Any]:
    if _no_extensions():
        print("sfu: SFU_NO_EXTENSIONS is set, building no C extension", file=sys.stderr)
        return []
    sources = sorted(
        os.path.relpath(path, HERE)
        for path in glob.glob(os.path.join(HERE, "sfu", "**", "*.pyx"), recursive=True)
    )
    if not sources:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _warn("Cython is not installed")
        return []

    include_dirs: list[str] = []
    try:  # only needed by a .pyx that cimports numpy
        import numpy

        include_dirs.append(numpy.get_include())
    except ImportError:
        pass

    modules = [
        Extension(
            path[: -len(".pyx")].replace(os.sep, "."),
            [path],
            include_dirs=include_dirs,
            define_macros=[("_GNU_SOURCE", "1")],  # sendmmsg/recvmmsg in <sys/socket.h>
            extra_compile_args=["-O3"],
        )
        for path in sources
    ]
    compiled = []
    for module in modules:
        # One module at a time, so one broken .pyx does not drop the others.
        try:
            compiled.extend(
                cythonize(
                    [module],
                    # Generated C goes to build/, not beside the sources.
                    build_dir=os.path.join("build", "cython"),
                    compiler_directives={"language_level": "3"},
                    quiet=True,
                )
            )
        except Exception as exc:  # Cython raises CompileError or a bare Exception
            _warn(f"Cython failed on {module.sources[0]}: {exc}")
    return compiled


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
