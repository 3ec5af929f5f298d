"""A speaker cannot make the server multiply a flood of packets.

Every packet a speaker sends is sent on to every receiver of the room: a
client pushing packets far faster than any voice (Opus frames are at least
2.5 ms: at most 400 packets a second) would have the server's egress and
CPU, shared by every room on the port, spent on it times the audience.
"""

from __future__ import annotations

import asyncio
import time

from aiortc.rtp import RtpPacket

import sfu
from sfu.media.router import PACKET_BURST, PACKET_RATE

from .clients import join, wait_for


async def test_a_speaker_flooding_packets_is_not_forwarded_past_a_voices_rate() -> None:
    async with sfu.Server() as server:
        room = server.room("flood")
        mallory = await join(room, "mallory", speaker=True, frequency=440)
        bob = await join(room, "bob", speaker=False)
        try:
            assert bob.participant is not None
            listener = bob.participant
            await wait_for(lambda: len(bob.packets(0)) >= 10, 15, "mallory heard")
            ssrc = mallory.sent_ssrc
            assert ssrc is not None
            transport = mallory.pc.getTransceivers()[0].sender.transport

            def forwarded() -> int:
                return sum(slot["packets_sent"] for slot in listener.stats()["slots"])

            before = forwarded()
            started = time.monotonic()
            flood = 3000  # ~3000 a second: 60 times a 20 ms voice
            for index in range(flood):
                packet = RtpPacket(
                    payload_type=96,  # aiortc's Opus
                    sequence_number=(20000 + index) & 0xFFFF,
                    timestamp=(960 * index) & 0xFFFFFFFF,
                    ssrc=0x5EED,  # a stream of its own: mallory's tone goes on beside it
                )
                packet.payload = b"\xfc" + bytes(80)
                await transport._send_rtp(packet.serialize())
                if index % 30 == 29:
                    await asyncio.sleep(0.01)
            elapsed = time.monotonic() - started
            await asyncio.sleep(0.3)
            sent_on = forwarded() - before
            # Its tone (50/s) and the flood share the speaker's budget.
            allowed = PACKET_BURST + PACKET_RATE * (elapsed + 0.3) + 10
            assert sent_on <= allowed, (
                f"{flood} packets in {elapsed:.2f} s: {sent_on} sent on to bob "
                f"(a voice's rate allows {allowed:.0f})"
            )
            assert room.router.packets_dropped >= flood - allowed
        finally:
            await asyncio.gather(mallory.close(), bob.close())
