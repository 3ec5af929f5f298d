"""A browser's WHIP client on another origin than the endpoint (the usual
case: the broadcaster's page, the SFU's host), in real Chromium: its
``fetch`` of the offer is sent only after a CORS preflight the endpoint
answers, and it reads the answer and the Location (RFC 9725 §4.2)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from playwright.async_api import Page

import sfu
from sfu.signaling.aiohttp import add_whip_whep
from tests.clients import join, wait_for
from tests.e2e.browser import BrowserPeer
from tests.sites import start_site

NewPage = Callable[..., Awaitable[Page]]
PAGE = "<!doctype html><html><head><meta charset='utf-8'><title>a WHIP page</title></head></html>"

# The page's own WHIP client: POST the offer, read the answer and Location;
# DELETE the Location to leave. Errors come back as {"error": ...}.
FETCH_JS = r"""
async ([method, url, token, body]) => {
  try {
    const headers = {"Authorization": "Bearer " + token};
    if (body !== null) headers["Content-Type"] = "application/sdp";
    const r = await fetch(url, {method, headers, body, mode: "cors"});
    return {status: r.status, location: r.headers.get("Location"), body: await r.text()};
  } catch (e) {
    return {error: String(e)};
  }
}
"""


async def serve_page(_: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def test_a_browser_page_of_another_origin_publishes_with_whip(new_page: NewPage) -> None:
    # No token_secret (the room needs none for the aiortc listener): the
    # page's Authorization header is ignored, yet makes the preflight needed.
    async with sfu.Server(host="127.0.0.1") as server:
        app = web.Application()
        add_whip_whep(app, server)
        runner, port = await start_site(app)
        page_runner = None
        try:
            room = server.room("hall")
            listener = await join(room, "aiortc-listener", speaker=False)
            # The page from a site of its own: another origin (port), and a
            # real loopback one (Chromium lets only those reach loopback).
            pages = web.Application()
            pages.router.add_get("/", serve_page)
            page_runner, page_port = await start_site(pages)
            page = await new_page(f"http://127.0.0.1:{page_port}/")
            peer = await BrowserPeer.create(page, speak=True)
            token = "a-token-for-another-server"
            endpoint = f"http://127.0.0.1:{port}/rooms/hall/whip"
            posted = await page.evaluate(FETCH_JS, ["POST", endpoint, token, await peer.offer()])
            assert "error" not in posted, f"the page's POST was refused by CORS: {posted}"
            assert posted["status"] == 201, posted
            assert posted["location"], "the page cannot read the Location"
            await peer.apply_answer(posted["body"])
            await peer.wait_connected()
            await wait_for(
                lambda: len(listener.packets(0)) >= 50, 15, "the browser heard by the listener"
            )
            session = f"http://127.0.0.1:{port}{posted['location']}"
            deleted = await page.evaluate(FETCH_JS, ["DELETE", session, token, None])
            assert deleted.get("status") == 200, deleted
            assert [m.identity for m in room.participants.values()] == ["aiortc-listener"]
            await peer.close()
            await listener.close()
        finally:
            await runner.cleanup()
            if page_runner is not None:
                await page_runner.cleanup()
