"""A join storm: 200 aiortc listeners at once, all hear the speaker, roster events
stay batched and name only the first ``roster_listeners`` (100) of them."""

from __future__ import annotations

import asyncio
import logging
import time

import sfu

from .clients import join, wait_for

LISTENERS = 200
logger = logging.getLogger(__name__)


async def test_two_hundred_listeners_join_at_once() -> None:
    async with sfu.Server() as server:
        room = server.room("celebrity", roster_interval=0.5)
        speaker = await join(room, "celebrity", speaker=True)
        member_view = room.events()  # what one member's signaling connection would relay
        started = time.monotonic()
        listeners = await asyncio.wait_for(
            asyncio.gather(
                *(
                    join(room, f"fan-{i}", speaker=False, slots=1, mixed=False)
                    for i in range(LISTENERS)
                )
            ),
            60,
        )
        clients = [speaker, *listeners]
        try:
            await wait_for(
                lambda: all(c.packets(0) for c in listeners), 90, "audio at every listener"
            )
            storm = time.monotonic() - started
            await asyncio.sleep(room.policy.roster_interval * 2)  # let the last batch out
            roster_events = 0
            joined: list[str] = []
            size = 0
            while True:
                try:
                    event = await member_view.next(0.05)
                except TimeoutError:
                    break
                if isinstance(event, sfu.RosterChanged):
                    roster_events += 1
                    joined += [i for i, _ in event.joined if i.startswith("fan-")]
                    size = event.size
            named = room.policy.roster_listeners
            assert named is not None and named < LISTENERS
            # The first to come, each in exactly one batch; the others a count.
            first = [i for i in room.participants if i.startswith("fan-")][:named]
            assert len(joined) == named and set(joined) == set(first), joined
            assert size == LISTENERS + 1
            # One batch per interval at most, however many joined.
            assert roster_events <= storm / room.policy.roster_interval + 2
            assert roster_events < LISTENERS / 10
            assert all(c.packets(0)[0].csrc == (speaker.csrc,) for c in listeners)
            logger.info(
                "join storm: %d listeners in %.1f s, %d roster events per member (vs %d unbatched)",
                LISTENERS,
                storm,
                roster_events,
                LISTENERS,
            )
        finally:
            await asyncio.gather(*(c.close() for c in clients))
