"""Moderation of members whose DTLS handshake is not done yet, with real
aiortc peers on loopback: what was decided before the session connected
holds from its first packet."""

from __future__ import annotations

import asyncio

import sfu

from .clients import join, wait_for


async def test_decisions_made_before_the_handshake_hold_from_the_first_packet() -> None:
    async with sfu.Server(host="127.0.0.1") as server:
        room = server.room("r", max_speakers=2)
        events = room.events()
        listener = await join(room, "lou", speaker=False)
        demoted = await join(room, "dee", speaker=True, frequency=300)
        muted = await join(room, "mo", speaker=True, frequency=500)
        removed = await join(room, "rex", speaker=False)
        clients = [listener, demoted, muted, removed]
        try:
            # Before any session connected: DTLS is not done for anyone.
            assert not any(c.participant.connected for c in clients if c.participant)
            await room.demote("dee")
            await room.mute("mo")
            await room.remove("rex", ban=True)
            assert removed.participant is not None and removed.participant.closed
            for client in (listener, demoted, muted):
                assert client.participant is not None
                await client.participant.wait_connected(10)
            await wait_for(lambda: len(demoted.sent) > 50 and len(muted.sent) > 50, 10, "sending")
            await asyncio.sleep(0.3)
            assert listener.total_received() == 0, "a demoted or muted speaker was forwarded"
            assert removed.total_received() == 0
            assert demoted.participant is not None and demoted.participant.rtp_dropped > 0
            # Nobody removed ever connected, and the events are in order.
            seen = []
            while True:
                try:
                    event = await events.next(timeout=0)
                except asyncio.TimeoutError:
                    break
                if isinstance(
                    event,
                    (
                        sfu.events.ParticipantJoined,
                        sfu.events.ParticipantConnected,
                        sfu.events.ParticipantLeft,
                    ),
                ):
                    seen.append((type(event).__name__, event.identity))
            assert ("ParticipantConnected", "rex") not in seen
            assert seen.index(("ParticipantJoined", "rex")) < seen.index(("ParticipantLeft", "rex"))
            assert server.stats()["sessions"] == 3 and server.stats()["participants"] == 3
        finally:
            await asyncio.gather(*(c.close() for c in clients))
