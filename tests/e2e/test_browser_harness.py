"""The browser harness itself: a Chromium-to-Chromium call on loopback, no server.

Page A offers with its fake microphone, page B answers; the SDPs travel
through Python. If these fail, every other browser test would too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from playwright.async_api import Page

from tests.e2e.browser import BrowserPeer, assert_loopback_candidates

pytestmark = pytest.mark.compiled_and_python_alike  # see tests/alike.py

NewPage = Callable[..., Awaitable[Page]]


async def test_listener_offer_has_one_recvonly_line_per_slot(new_page: NewPage) -> None:
    page = await new_page()
    peer = await BrowserPeer.create(page, receive=3)
    offer = await peer.offer()
    # What Chromium itself gathered, before the harness keeps only loopback
    # candidates: in the tests' network namespace, loopback is all there is.
    gathered = await peer.offer(loopback_only=False)
    await peer.close()
    assert_loopback_candidates([gathered])

    sections = offer.split("\r\nm=")[1:]
    assert [s.split(" ", 1)[0] for s in sections] == ["audio"] * 3
    assert all("\r\na=recvonly" in s for s in sections)
    assert "opus/48000/2" in offer
    assert "urn:ietf:params:rtp-hdrext:ssrc-audio-level" in offer
    assert_loopback_candidates([offer])


async def test_chromium_to_chromium_call_carries_speech(new_page: NewPage) -> None:
    page_a, page_b = await new_page(), await new_page()
    speaker = await BrowserPeer.create(page_a, speak=True)
    listener = await BrowserPeer.create(page_b)

    offer = await speaker.offer()
    answer = await listener.answer(offer)
    assert_loopback_candidates([offer, answer])
    await speaker.apply_answer(answer)
    await asyncio.gather(speaker.wait_connected(), listener.wait_connected())

    streams = await listener.wait_for_audio(min_packets=50, timeout=15)
    assert len(streams) == 1
    assert streams[0].playing
    assert await speaker.packets_sent() > 0
    # The instantaneous level dips to 0 between words: look for speech a while.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    levels: list[float] = []
    while loop.time() < deadline and not any(level > 0 for level in levels):
        levels.append((await listener.stats())[0].audio_level)
        await asyncio.sleep(0.1)
    assert any(level > 0 for level in levels), levels
    # RFC 6464 level from the header extension, as the receiver sees it.
    sources = (await listener.stats())[0].synchronization_sources
    assert [s["source"] for s in sources] == [streams[0].ssrc]

    # Every ICE check and every media byte went between loopback addresses.
    for peer in (speaker, listener):
        pairs = await peer.candidate_pairs()
        used = [p for p in pairs if p["requestsSent"] or p["bytesSent"]]
        assert used, pairs
        for pair in used:
            assert (pair["local"] or "").startswith("127."), pair
            assert (pair["remote"] or "").startswith("127."), pair

    await speaker.close()
    await listener.close()
