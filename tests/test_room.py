"""Rooms over one UDP port, end to end with real aiortc peers on loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest
from aiohttp import web

import sfu
from sfu.media import router as router_module
from sfu.media.ogg import LAST_PAGE, parse_pages
from sfu.media.router import Publisher
from sfu.signaling.aiohttp import live_stream_handler

from .clients import Client, join, wait_for
from .sites import start_site

T = TypeVar("T")


def assert_contiguous_copy(received: list[bytes], sent: list[bytes]) -> None:
    """``received`` is a run of ``sent``, byte for byte, in order, with nothing lost."""
    assert received, "nothing was received"
    start = sent.index(received[0])
    assert received == sent[start : start + len(received)]


async def close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(client.close() for client in clients))


async def test_one_speaker_twenty_listeners_byte_identical() -> None:
    async with sfu.Server() as server:
        room = server.room("town-hall")
        events = room.events()
        started = time.monotonic()
        speaker = await join(room, "alice", speaker=True)
        listeners = await asyncio.gather(
            *(join(room, f"listener-{i}", speaker=False) for i in range(20))
        )
        clients = [speaker, *listeners]
        try:
            await wait_for(
                lambda: all(len(c.packets(0)) >= 50 for c in listeners),
                20,
                "50 packets at every listener",
            )
            assert speaker.track is not None
            speaker.track.loud = False
            await asyncio.sleep(0.1)
            sent = speaker.sent_payloads
            for listener in listeners:
                packets = listener.packets(0)
                assert {p.csrc for p in packets} == {(speaker.csrc,)}
                assert_contiguous_copy([p.payload for p in packets], sent)
                # Slots the speaker is not in stay silent.
                assert listener.packets(1) == [] and listener.packets(2) == []
                assert listener.participant is not None
                stats = listener.participant.stats()
                assert stats["slots"][0]["packets_sent"] >= 50
                # The join's own time, recorded (not a speed target: bench/ has those).
                join_time = stats["join_time"]
                assert join_time is not None and 0 < join_time < time.monotonic() - started
            # The speaker never hears itself.
            assert speaker.total_received() == 0
            kinds = []
            while True:
                event = await events.next(timeout=1)
                kinds.append(type(event).__name__)
                if kinds.count("ParticipantConnected") == 21:
                    break
            assert kinds.count("ParticipantJoined") == 21
        finally:
            await close_all(clients)
        await wait_for(lambda: not room.participants, 10, "participants to leave")
    assert server.closed
    assert list(server.sessions()) == []


async def test_four_speakers_take_turns_with_three_slots() -> None:
    async with sfu.Server() as server:
        room = server.room("panel", slots=3)
        speakers = [
            await join(room, name, speaker=True, frequency=300 + 200 * i, loud=False)
            for i, name in enumerate(["ann", "ben", "cat", "dan"])
        ]
        listener = await join(room, "lis", speaker=False)
        clients = [*speakers, listener]
        try:
            await wait_for(lambda: all(s.sent for s in speakers), 10, "all speakers sending")
            # Each speaker talks alone for 1.4 s (the slot map's hold is 1 s), in turn.
            order = [3, 0, 1, 2, 3]
            for turn in order:
                for index, client in enumerate(speakers):
                    assert client.track is not None
                    client.track.loud = index == turn
                await asyncio.sleep(1.4)
            csrcs = {client.identity: client.csrc for client in speakers}
            heard = {csrc for slot in range(3) for p in listener.packets(slot) for csrc in p.csrc}
            assert heard == set(csrcs.values()), "every speaker must have been carried by some slot"
            for slot in range(3):
                packets = listener.packets(slot)
                assert packets, f"slot {slot} carried nothing"
                assert len({p.ssrc for p in packets}) == 1, "a slot is one stream with one SSRC"
                for before, after in zip(packets, packets[1:], strict=False):
                    assert (after.sequence - before.sequence) & 0xFFFF == 1, (
                        "sequence gap in a slot stream"
                    )
                    assert 0 < (after.timestamp - before.timestamp) & 0xFFFFFFFF < 1 << 31, (
                        "timestamp went back"
                    )
                    if after.csrc != before.csrc:
                        assert after.marker, "a new speaker in a slot starts with the marker bit"
                        # Time advanced across the switch as it did on the wall clock
                        # (within a loop stall's worth: server and clients share one loop).
                        elapsed = ((after.timestamp - before.timestamp) & 0xFFFFFFFF) / 48000
                        assert elapsed >= after.arrival - before.arrival - 0.3
            # Dan was the last to talk while all three slots were held: he must have replaced someone.
            dan = csrcs["dan"]
            assert any(dan in p.csrc for slot in range(3) for p in listener.packets(slot)[-10:])
            for client in speakers:
                for slot in range(3):
                    assert all(client.csrc not in p.csrc for p in client.packets(slot)), (
                        "a speaker heard itself"
                    )
        finally:
            await close_all(clients)


async def test_rtcp_reports_flow_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router_module, "SENDER_REPORT_INTERVAL", 1.0)
    async with sfu.Server() as server:
        room = server.room("rtcp")
        speaker = await join(room, "alice", speaker=True)
        listener = await join(room, "bob", speaker=False)
        try:
            assert listener.participant is not None
            participant = listener.participant

            await participant.wait_connected(10)

            def listener_reported_rtt() -> bool:
                slot = participant.stats()["slots"][0]
                return slot["round_trip_time"] is not None

            await wait_for(
                listener_reported_rtt, 15, "a receiver report answering our sender report"
            )
            slot = participant.stats()["slots"][0]
            round_trip_time = slot["round_trip_time"]
            assert round_trip_time is not None and 0 <= round_trip_time < 1.0
            assert slot["fraction_lost"] == 0.0

            # The speaker's client got our receiver reports: aiortc turns them into remote-inbound stats.
            async def remote_inbound() -> list[object]:
                report = await speaker.pc.getStats()
                return [s for s in report.values() if s.type == "remote-inbound-rtp"]

            deadline = asyncio.get_running_loop().time() + 10
            while not await remote_inbound():
                assert asyncio.get_running_loop().time() < deadline, (
                    "the speaker never got a receiver report"
                )
                await asyncio.sleep(0.2)
            assert speaker.participant is not None
            inbound = speaker.participant.stats()["inbound"]
            assert inbound["packets_received"] > 0 and inbound["audio_level"] is not None
        finally:
            await close_all([speaker, listener])


async def test_invalid_offer_leaves_no_state() -> None:
    async with sfu.Server() as server:
        room = server.room("strict")
        with pytest.raises(sfu.InvalidOffer):
            await room.add_listener("v=0\r\nthis is not sdp", identity="x")
        with pytest.raises(sfu.InvalidOffer):
            await room.add_speaker("", identity="y")
        assert room.participants == {}
        assert list(server.sessions()) == []


async def test_duplicate_identity_and_closed_room() -> None:
    async with sfu.Server() as server:
        room = server.room("dup")
        first = await join(room, "same", speaker=False)
        try:
            with pytest.raises(sfu.DuplicateIdentity):
                await join(room, "same", speaker=False)
            assert len(list(server.sessions())) == 1
            events = room.events()
            await room.close("done for today")
            assert first.participant is not None and first.participant.closed
            assert first.participant.close_reason == "room closed: done for today"
            seen = [event async for event in events]
            assert (
                isinstance(seen[-1], sfu.events.RoomClosed) and seen[-1].reason == "done for today"
            )
            assert any(isinstance(e, sfu.ParticipantLeft) and e.identity == "same" for e in seen)
            with pytest.raises(sfu.RoomClosed):
                await join(room, "late", speaker=False)
            assert list(server.sessions()) == []
        finally:
            await first.close()


async def test_server_close_is_idempotent_and_leaves_nothing() -> None:
    server = sfu.Server()
    await server.start()
    room = server.room("bye")
    client = await join(room, "zed", speaker=False)
    try:
        assert client.participant is not None
        await client.participant.wait_connected(10)
        port = server.port
        tasks_before = {t for t in asyncio.all_tasks() if t.get_name().startswith("sfu-")}
        assert tasks_before
        await server.close()
        await server.close()
        assert client.participant.closed
        assert list(server.sessions()) == []
        assert not [
            t for t in asyncio.all_tasks() if t.get_name().startswith("sfu-") and not t.done()
        ]
        with pytest.raises(sfu.ServerClosed):
            server.room("again")
        # The port is free again.
        again = sfu.Server(port=port)
        await again.start()
        await again.close()
    finally:
        await client.close()


async def test_a_failing_mixer_ends_its_outputs_and_the_room_is_told(tmp_path: Path) -> None:
    """The mixing task raises (forced: a payload that is not bytes handed to
    its tap, the mixer's input boundary, as from a buggy Router): a
    recording's file is finished, a live HTTP stream ends, a mixed member is
    closed (its client joins again), the room emits MixerFailed; the
    forwarding goes on, and a new recording starts the mixer again."""
    async with sfu.Server() as server:
        room = server.room("show")
        app = web.Application()
        app.router.add_get("/rooms/{room}/live.ogg", live_stream_handler(server))
        runner, port = await start_site(app)
        alice = await join(room, "alice", speaker=True, frequency=440)
        bob = await join(room, "bob", speaker=False)
        mixed = await join(room, "mia", speaker=False, slots=1, mixed=True)
        clients = [alice, bob, mixed]
        events = room.events()
        try:
            recording = await room.record(tmp_path / "show.opus")
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/rooms/show/live.ogg") as live:
                    assert live.status == 200
                    await wait_for(lambda: len(mixed.packets(0)) >= 25, 10, "the mix reaches mia")
                    mixer = room.mixer
                    bad = Publisher(number=10**6, payload_type=111, audio_level_id=1, ssrc=7)
                    for sequence in range(4):
                        mixer._tap(bad, [0xF8, 0xFF, 0xFE], 0, sequence, 960 * sequence, 0, 0.0)  # type: ignore[arg-type]
                    failed = await drain(events, sfu.MixerFailed)
                    assert "TypeError" in failed.error
                    streamed = await asyncio.wait_for(live.read(), 5)  # the stream ends
            assert list(parse_pages(streamed))[-1].header_type & LAST_PAGE
            assert not recording.recording, "the recording was not finished"
            assert list(parse_pages(recording.path.read_bytes()))[-1].header_type & LAST_PAGE
            assert mixed.participant is not None and mixed.participant.closed
            assert "mix" in (mixed.participant.close_reason or "")
            assert not mixer.running
            # The slots are not the mixer's: bob still hears alice.
            heard = len(bob.packets(0))
            await wait_for(lambda: len(bob.packets(0)) >= heard + 25, 5, "alice still forwarded")
            again = await room.record(tmp_path / "again.opus")
            assert mixer.running, "a new consumer starts it again"
            await wait_for(lambda: again.packets >= 10, 5, "the new recording")
            await again.stop()
        finally:
            await close_all(clients)
            await runner.cleanup()


async def drain(events: sfu.EventStream, wanted: type[T], timeout: float = 5) -> T:
    """The next event of type ``wanted``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        event = await events.next(max(0.01, deadline - loop.time()))
        if isinstance(event, wanted):
            return event
