"""sfu.js's connection logic under Node, with stand-ins for the browser APIs
(tests/js/fake_browser.mjs): the orders of events a real browser makes rare
(a reply and a close racing an answer being applied) are made to happen.
The browser tests (tests/e2e) drive the same file against a real server.

The demo page's words (examples/static/wording.js) are checked the same way
(tests/js/demo/)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py

ROOT = Path(__file__).resolve().parent.parent
SFU_JS = ROOT / "sfu" / "signaling" / "static" / "sfu.js"
SCENARIOS = sorted(
    path.name for path in (ROOT / "tests" / "js").glob("*.mjs") if path.name != "fake_browser.mjs"
)
DEMO_WORDING_JS = ROOT / "examples" / "static" / "wording.js"
DEMO_SCENARIOS = sorted(path.name for path in (ROOT / "tests" / "js" / "demo").glob("*.mjs"))


def node() -> str:
    found = shutil.which("node") or shutil.which("nodejs")
    if found is None:
        pytest.skip("needs Node.js (Debian package nodejs) to run sfu.js outside a browser")
    return found


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_sfu_js(scenario: str, tmp_path: Path) -> None:
    module = tmp_path / "sfu.mjs"  # Node reads a .js file without package.json as CommonJS
    shutil.copyfile(SFU_JS, module)
    done = subprocess.run(
        [node(), str(ROOT / "tests" / "js" / scenario)],
        env={"SFU_JS": module.as_uri(), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("scenario", DEMO_SCENARIOS)
def test_demo_wording_js(scenario: str, tmp_path: Path) -> None:
    module = tmp_path / "wording.mjs"  # as above
    shutil.copyfile(DEMO_WORDING_JS, module)
    done = subprocess.run(
        [node(), str(ROOT / "tests" / "js" / "demo" / scenario)],
        env={"DEMO_WORDING_JS": module.as_uri(), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
