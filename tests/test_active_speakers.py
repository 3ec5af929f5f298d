"""Active speakers end to end: aiortc speakers take scripted turns; the stage follows."""

from __future__ import annotations

import asyncio
import time

import sfu

from .clients import join, wait_for


async def test_dominant_speaker_and_stage_follow_the_script() -> None:
    async with sfu.Server() as server:
        room = server.room("turns", slots=2)
        events = room.events()
        speakers = [
            await join(room, name, speaker=True, frequency=300 + 250 * i, loud=False)
            for i, name in enumerate(["ann", "ben", "cat"])
        ]
        listener = await join(room, "lis", speaker=False, slots=2)
        clients = [*speakers, listener]
        try:
            await wait_for(lambda: all(s.sent for s in speakers), 10, "all speakers sending")
            await asyncio.sleep(0.5)  # silence first: every speaker's noise floor
            started = time.monotonic()
            script = ["ben", "cat", "ann", "ben"]
            for turn in script:
                for client in speakers:
                    assert client.track is not None
                    client.track.loud = client.identity == turn
                await wait_for(lambda t=turn: room.dominant_speaker == t, 3, f"{turn} dominant")  # type: ignore[misc]
                # The talker leads the ranking and holds a slot.
                assert room.active_speakers()[0][0].identity == turn
                assert turn in {info.identity for info in room.stage() if info is not None}
                await asyncio.sleep(1.2)
                assert room.dominant_speaker == turn, "a steady talker keeps the stage"
            elapsed = time.monotonic() - started
            for client in speakers:
                assert client.track is not None
                client.track.loud = False

            dominants: list[str | None] = []
            stage_events = 0
            while True:
                try:
                    event = await events.next(0.3)
                except TimeoutError:
                    break
                if isinstance(event, sfu.DominantSpeakerChanged):
                    dominants.append(event.identity)
                elif isinstance(event, sfu.ActiveSpeakersChanged):
                    stage_events += 1
                    assert len(event.slots) == 2
            assert [d for d in dominants if d is not None] == script
            # Debounced: a few per second at most, whatever the packet rate.
            assert stage_events <= elapsed / room.policy.stage_interval + 2
            # Each slot carried the right speakers, named by CSRC.
            csrcs = {c.csrc: c.identity for c in speakers}
            carried = {csrcs.get(p.csrc[0]) for slot in range(2) for p in listener.packets(slot)}
            assert {"ann", "ben", "cat"} <= carried
        finally:
            await asyncio.gather(*(c.close() for c in clients))
