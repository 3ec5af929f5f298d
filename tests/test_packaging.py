"""The build: compiled extensions really load, and each has its Python twin.

``./dev test`` (``make test``) runs the suite twice: once as built (every Cython module must
have loaded; a silent fallback to the pure-Python twin would hide a broken
build), once with ``SFU_NO_EXTENSIONS=1`` (every selector must pick the twin).
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sfu"

NO_EXTENSIONS = os.environ.get("SFU_NO_EXTENSIONS", "") not in ("", "0")


def _accelerated() -> list[str]:
    """Selector names (``relay`` for ``sfu/_relay.pyx``): the required ones and any .pyx."""
    found = {path.stem.removeprefix("_") for path in PACKAGE.glob("_*.pyx")}
    return sorted(found | {"audio_level", "detector", "mix", "relay"})


@pytest.mark.parametrize("name", _accelerated())
def test_extension_loaded_unless_disabled(name: str) -> None:
    selector = importlib.import_module(f"sfu.{name}")
    if NO_EXTENSIONS:
        assert selector.EXTENSION_LOADED is False, (
            f"SFU_NO_EXTENSIONS is set but sfu.{name} picked the compiled sfu._{name}"
        )
        return
    try:
        importlib.import_module(f"sfu._{name}")
    except ImportError as exc:
        pytest.fail(
            f"the compiled sfu._{name} does not import ({exc}): rebuild with "
            "`make build` (or pip install -e .) and read the compiler output, "
            "or set SFU_NO_EXTENSIONS=1 to test the pure-Python twin on purpose"
        )
    assert selector.EXTENSION_LOADED is True, f"sfu.{name} fell back to sfu._{name}_py"


@pytest.mark.parametrize("name", _accelerated())
def test_every_extension_has_source_twin_and_selector(name: str) -> None:
    assert (PACKAGE / f"_{name}.pyx").is_file()
    assert (PACKAGE / f"_{name}_py.py").is_file(), "the pure-Python reference"
    assert (PACKAGE / f"{name}.py").is_file(), "the selector exporting EXTENSION_LOADED"


def test_twin_is_what_the_selector_exports() -> None:
    """The twin and the compiled module expose the same public names."""
    for name in _accelerated():
        selector = importlib.import_module(f"sfu.{name}")
        twin = importlib.import_module(f"sfu._{name}_py")
        exported = [n for n in getattr(selector, "__all__", []) if n != "EXTENSION_LOADED"]
        assert exported, f"sfu.{name} has no __all__"
        missing = [n for n in exported if not hasattr(twin, n)]
        assert not missing, f"sfu._{name}_py lacks {missing}"
        if not NO_EXTENSIONS:
            compiled = importlib.import_module(f"sfu._{name}")
            missing = [n for n in exported if not hasattr(compiled, n)]
            assert not missing, f"sfu._{name} lacks {missing}"


def test_makefile_build_requirements_match_pyproject() -> None:
    """make installs the build requirements itself (pip --no-build-isolation)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = sorted(pyproject["build-system"]["requires"])
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^BUILD_REQUIRES\s*:?=\s*(.+)$", makefile, re.MULTILINE)
    assert match, "BUILD_REQUIRES not found in the Makefile"
    assert sorted(re.findall(r"'([^']+)'", match.group(1))) == wanted


def test_package_data_is_declared() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]
    assert {"py.typed", "*.pyx"} <= set(data["*"])
    assert "static/*" in data["sfu.signaling"]
    assert (PACKAGE / "py.typed").is_file()
