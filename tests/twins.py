"""One suite, two implementations: the compiled modules and their Python twins.

``SFU_NO_EXTENSIONS=1`` runs only the Python twins (and the compiled-only
tests skip, saying so); otherwise every twin test runs on both. A test that
reaches neither is marked ``compiled_and_python_alike`` and runs in the
compiled run only (:mod:`tests.alike`), and so is the ``python`` case of
:func:`implementations`: it names the twin itself, so both runs would run
it alike (a test that also reaches what SFU_NO_EXTENSIONS selects, a
``Router`` say, fails the guard: give it parameters of its own).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

NO_EXTENSIONS = os.environ.get("SFU_NO_EXTENSIONS", "") not in ("", "0")
SKIP_COMPILED = "SFU_NO_EXTENSIONS is set: the compiled module is not tested"


def compiled(name: str) -> ModuleType:
    """The compiled ``sfu.<name>``; skips the test when extensions are off."""
    if NO_EXTENSIONS:
        pytest.skip(SKIP_COMPILED)
    return importlib.import_module(f"sfu.{name}")


#: The Python twin named by a test is the same module in both runs (tests/alike.py).
ALIKE = pytest.mark.compiled_and_python_alike


def implementations(python: ModuleType, name: str) -> list[object]:
    """``pytest.param`` for the Python twin, and for the compiled ``sfu.<name>`` unless disabled."""
    params: list[object] = [pytest.param(python, id="python", marks=ALIKE)]
    if not NO_EXTENSIONS:
        params.append(pytest.param(name, id="cython"))
    return params


def resolve(param: ModuleType | str) -> ModuleType:
    return compiled(param) if isinstance(param, str) else param
