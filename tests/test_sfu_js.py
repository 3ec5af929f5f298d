"""sfu.js's connection logic under Node, with stand-ins for the browser APIs
(tests/js/fake_browser.mjs): the orders of events a real browser makes rare
(a reply and a close racing an answer being applied) are made to happen.
The browser tests (tests/e2e) drive the same file against a real server."""

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


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_sfu_js(scenario: str, tmp_path: Path) -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("needs Node.js (Debian package nodejs) to run sfu.js outside a browser")
    module = tmp_path / "sfu.mjs"  # Node reads a .js file without package.json as CommonJS
    shutil.copyfile(SFU_JS, module)
    done = subprocess.run(
        [node, str(ROOT / "tests" / "js" / scenario)],
        env={"SFU_JS": module.as_uri(), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
