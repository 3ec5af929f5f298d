"""Build the load generator's compiled sink, ``bench/_sink.pyx``, in place.

Run: ``python bench/setup_sink.py`` (same as ``build_ext --inplace -q``).
The package's own setup.py does not build it: the sink is not part of sfu.
"""

from __future__ import annotations

import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    os.chdir(HERE)
    if len(sys.argv) == 1:
        sys.argv += ["build_ext", "--inplace", "-q"]
    extension = Extension(
        "_sink",
        ["_sink.pyx"],
        define_macros=[("_GNU_SOURCE", "1")],  # recvmmsg in <sys/socket.h>
        extra_compile_args=["-O3"],
    )
    setup(
        name="sfu-bench-sink",
        ext_modules=cythonize(
            [extension],
            build_dir=os.path.join(HERE, "build", "cython"),
            compiler_directives={"language_level": "3"},
            quiet=True,
        ),
        script_args=sys.argv[1:],
    )


if __name__ == "__main__":
    main()
