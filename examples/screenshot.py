"""Take docs/screenshot.png: the demo page of a moderator in a live room.

Starts the demo app in-process, opens one headless Chromium (Debian's
``/usr/bin/chromium``, driven by Playwright) with a moderator, three speakers
and a few listeners as tabs, lets one speaker talk (the others are muted),
raises a listener's hand and photographs the moderator's tab.

Chromium gathers ICE candidates on every interface it sees, so run it in a
network namespace that has only loopback::

    unshare -rn sh -c 'ip link set lo up && python examples/screenshot.py'
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import secrets
import socket
import sys
from pathlib import Path

from aiohttp import web

import sfu

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "tests" / "data" / "speech.wav"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    f"--use-file-for-fake-audio-capture={SPEECH}",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]


def load_demo() -> object:
    spec = importlib.util.spec_from_file_location(
        "demo_server", ROOT / "examples" / "demo_server.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def main(output: Path) -> None:
    from playwright.async_api import async_playwright

    demo = load_demo()
    secret = secrets.token_urlsafe(32)
    async with sfu.Server("127.0.0.1", 0, token_secret=secret) as server:
        runner = web.AppRunner(demo.make_app(server), shutdown_timeout=1)  # type: ignore[attr-defined]
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/?room=Friday%20town%20hall"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path="/usr/bin/chromium", headless=True, args=ARGS
            )
            pages = {}

            async def join(name: str, role: str) -> None:
                page = await browser.new_page(viewport={"width": 1280, "height": 820})
                await page.goto(url)
                await page.fill("#name-input", name)
                await page.check(f"input[name=role][value={role}]")
                await page.click("#join-button")
                await page.wait_for_selector("#connection-state[data-state=live]", timeout=15000)
                pages[name] = page

            await join("Maya Chen", "moderator")
            for name in ("Priya Natarajan", "Jonas Berg", "Leo Martin"):
                await join(name, "speaker")
            for name in ("Alex Kim", "Sam Okafor", "Noor Haddad", "Tom Weber", "Ines Duarte"):
                await join(name, "listener")
            for name in ("Maya Chen", "Jonas Berg", "Leo Martin"):
                await pages[name].click("#mic-button")
            await pages["Noor Haddad"].click("#hand-button")
            maya = pages["Maya Chen"]
            await maya.wait_for_selector('#hands li[data-identity="Noor Haddad"]')
            await maya.wait_for_selector(
                '.person[data-identity="Priya Natarajan"][data-speaking="true"]', timeout=15000
            )
            # A card's menu holds the moderator's controls.
            await maya.click('.person[data-identity="Leo Martin"] .menu-button')
            await asyncio.sleep(0.3)
            await maya.screenshot(path=str(output))
            print(f"wrote {output}")
            await browser.close()
        await server.close()
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "screenshot.png")
    args = parser.parse_args()
    names = [name for _, name in socket.if_nameindex()]
    if names != ["lo"]:
        sys.exit(
            f"run this in a network namespace with only loopback (interfaces: {names}); see --help"
        )
    asyncio.run(main(args.output))
