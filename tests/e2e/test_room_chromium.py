"""A room in real Chromium: one speaker tab, two listener tabs, through sfu.Server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from playwright.async_api import Page

import sfu
from tests.e2e.browser import BrowserPeer, assert_loopback_candidates

NewPage = Callable[..., Awaitable[Page]]


async def test_chromium_speaker_heard_by_two_chromium_listeners(new_page: NewPage) -> None:
    async with sfu.Server() as server:
        room = server.room("browser-room")
        speaker_page, *listener_pages = [await new_page() for _ in range(3)]
        speaker = await BrowserPeer.create(speaker_page, speak=True, receive=2)
        offer = await speaker.offer()
        alice = await room.add_speaker(offer, identity="alice")
        assert_loopback_candidates([alice.answer])
        await speaker.apply_answer(alice.answer)

        listeners = []
        for index, page in enumerate(listener_pages):
            peer = await BrowserPeer.create(page, receive=3)
            member = await room.add_listener(await peer.offer(), identity=f"listener-{index}")
            await peer.apply_answer(member.answer)
            listeners.append(peer)
        await asyncio.gather(
            speaker.wait_connected(), *(peer.wait_connected() for peer in listeners)
        )

        for peer in listeners:
            streams = await peer.wait_for_audio(min_packets=50, timeout=20)
            heard = [s for s in streams if s.packets_received >= 50]
            assert len(heard) == 1, "one speaker fills exactly one slot"
            # The decoded level dips to 0 between words: sample it for a while.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            level = 0.0
            while loop.time() < deadline and level <= 0:
                level = max(s.audio_level for s in await peer.stats())
                await asyncio.sleep(0.1)
            assert level > 0, "the listener's audio is silent"
            # The slot's packets name the speaker as their contributing source.
            slot = next(s for s in await peer.stats() if s.packets_received >= 50)
            assert [c["source"] for c in slot.contributing_sources] == [alice.csrc]
        # The speaker does not hear itself.
        assert all(s.packets_received == 0 for s in await speaker.stats())
        assert alice.stats()["inbound"]["audio_level"] is not None
        for peer in [speaker, *listeners]:
            await peer.close()
