"""Headless Chromium plays the room's live Ogg/Opus HTTP stream in an ``<audio>`` element.

The page and the stream come from one aiohttp app on 127.0.0.1; an aiortc
speaker plays a tone into the room. The element must start playing, its
``currentTime`` must advance with the wall clock, and no media error may
occur; so must a second page's, joining the running stream (whose first
response bytes are a burst of the mix's latest seconds). The room's mixer
serves both HTTP clients with one output.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from playwright.async_api import Page

import sfu
from sfu.signaling.aiohttp import live_stream_handler
from tests.clients import join, wait_for

NewPage = Callable[..., Awaitable[Page]]

PAGE = """<!doctype html>
<html><body>
<audio id="live" src="/rooms/hall/live.ogg" autoplay></audio>
<script>
  const audio = document.getElementById("live");
  window.liveErrors = [];
  audio.addEventListener("error", () =>
    window.liveErrors.push(audio.error ? audio.error.code + " " + audio.error.message : "error"));
  audio.play().catch((e) => window.liveErrors.push("play: " + e));
</script>
</body></html>
"""


async def plays_in_real_time(page: Page) -> None:
    """The page's ``<audio>`` starts playing, then its ``currentTime`` advances
    with the wall clock (no stall, no racing ahead: a live source cannot),
    with no media error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while await page.evaluate("document.getElementById('live').currentTime") < 0.5:
        assert loop.time() < deadline, "the <audio> element never started playing"
        await asyncio.sleep(0.1)
    first = await page.evaluate("document.getElementById('live').currentTime")
    started = loop.time()
    await asyncio.sleep(2.0)
    state = await page.evaluate(
        """() => { const a = document.getElementById('live');
           return {time: a.currentTime, paused: a.paused, error: a.error && a.error.code,
                   ready: a.readyState, errors: window.liveErrors}; }"""
    )
    elapsed = loop.time() - started
    assert state["errors"] == [] and state["error"] is None, state
    assert not state["paused"] and state["ready"] >= 2, state
    advanced = state["time"] - first
    assert 0.6 * elapsed <= advanced <= elapsed + 0.5, (advanced, elapsed)


async def test_audio_element_plays_the_live_stream(new_page: NewPage) -> None:
    """The first listener starts the stream; a second one joins it running and
    gets the latest seconds of the mix at once (the burst that fills
    Chromium's first 32 KiB block): it plays them, then the mix, in real time."""
    async with sfu.Server() as server:
        room = server.room("hall")
        speaker = await join(room, "alice", speaker=True, frequency=440)
        app = web.Application()
        app.router.add_get("/rooms/{room}/live.ogg", live_stream_handler(server))

        async def index(request: web.Request) -> web.Response:
            return web.Response(text=PAGE, content_type="text/html")

        app.router.add_get("/", index)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            await wait_for(lambda: len(speaker.sent) > 10, 10, "the speaker to send")
            page = await new_page(f"http://127.0.0.1:{port}/")
            await plays_in_real_time(page)
            assert room.mixer.running and room.mixer.consumers == 1
            late = await new_page(f"http://127.0.0.1:{port}/")
            await plays_in_real_time(late)
            assert room.mixer.consumers == 1, "one mix output, however many listeners"
            await page.close()
            await late.close()
            await wait_for(lambda: not room.mixer.running, 5, "the mixer to stop after the pages")
        finally:
            await speaker.close()
            await runner.cleanup()
