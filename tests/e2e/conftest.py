"""Real-browser tests: Debian's Chromium driven by Playwright's async API.

Fixtures:

* ``speech_wav`` (session): ``tests/data/speech.wav``, 48 kHz mono 16-bit
  speech made with espeak-ng + sox when missing (skips naming the Debian
  packages when they are not installed).
* ``browser`` (session): one headless ``/usr/bin/chromium`` whose fake
  microphone loops ``speech_wav`` (skips naming ``chromium`` or
  ``playwright`` when missing). ``playwright`` (session) is there too, e.g.
  for :func:`tests.e2e.browser.launch_browser` with a second voice.
* ``new_page`` (function): ``page = await new_page(url_or_html=None)``, see
  :func:`tests.e2e.browser.open_page`; pages are closed after the test.

Event loops: Playwright objects belong to the loop they were made in, and
the browser is made once per session, so the browser fixtures use
``@pytest_asyncio.fixture(scope="session", loop_scope="session")`` and every
async test under ``tests/e2e`` runs in the session loop too: this conftest
marks them ``pytest.mark.asyncio(loop_scope="session")`` (an explicit marker
in a module would have to say the same). Function-scoped async fixtures used
by e2e tests must also say ``loop_scope="session"``. Works with
pytest-asyncio 1.x (1.5 here). The alternative, Playwright's sync API in a
thread, would make every helper blocking; the async API lets a test drive the
browser and an ``sfu.Server`` in one loop.

Browser tests also need the test process to be in its own network namespace
(tests/conftest.py): Chromium otherwise gathers candidates on the machine's
real interface and sends to it. They skip, saying why, when it is not.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from pytest_asyncio import is_async_test

from tests.conftest import NETWORK_ISOLATION
from tests.data.generate import SPEECH_WAV, MissingTool, make_speech_wav
from tests.e2e.browser import CHROMIUM, launch_browser, open_page

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, Playwright

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    session_loop = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if HERE not in Path(item.path).resolve().parents:
            continue
        item.add_marker(pytest.mark.e2e)
        if isinstance(item, pytest.Function) and is_async_test(item):
            # First, so it is the closest asyncio marker (pytest-asyncio's auto
            # mode already added a plain one).
            item.add_marker(session_loop, append=False)


@pytest.fixture(scope="session")
def speech_wav() -> Path:
    """A 48 kHz mono 16-bit speech WAV (tests/data/speech.wav, generated once)."""
    try:
        return make_speech_wav(SPEECH_WAV)
    except MissingTool as exc:
        pytest.skip(f"needs Debian packages {' '.join(exc.packages)}: {exc}")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def playwright() -> AsyncIterator[Playwright]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("needs the playwright Python package (pip install -e '.[test]')")
    async with async_playwright() as pw:
        yield pw


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(playwright: Playwright, speech_wav: Path) -> AsyncIterator[Browser]:
    """Headless Debian Chromium with the test flags; its microphone plays ``speech_wav``."""
    if not Path(CHROMIUM).exists() and shutil.which(CHROMIUM) is None:
        pytest.skip(f"needs Debian package chromium ({CHROMIUM} not found)")
    if not NETWORK_ISOLATION.isolated:
        pytest.skip(
            "Chromium would use non-loopback interfaces: the test process is not in "
            f"its own network namespace ({NETWORK_ISOLATION.reason})"
        )
    browser = await launch_browser(playwright, speech_wav)
    try:
        yield browser
    finally:
        await browser.close()


@pytest_asyncio.fixture(loop_scope="session")
async def new_page(browser: Browser) -> AsyncIterator[Callable[..., Awaitable[Page]]]:
    """``await new_page(url_or_html=None)``: a page with ``window.sfuTest``, closed after the test."""
    pages: list[Page] = []

    async def make(url_or_html: str | None = None) -> Page:
        page = await open_page(browser, url_or_html)
        pages.append(page)
        return page

    yield make
    for page in pages:
        if not page.is_closed():
            await page.close()
