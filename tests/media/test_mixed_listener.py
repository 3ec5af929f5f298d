"""Mixed listeners: the room mix as one RTP stream, over a real aiortc peer.

Two aiortc speakers play 440 Hz and 1000 Hz. A listener joining with
``mixed=True`` gets one stream (the mixer's SSRC, continuous sequence
numbers and timestamps) whose decoded payloads hold both tones; a speaker
joining with ``mixed=True`` hears the other one only (mix-minus); a WHEP
client asks for the mix with ``?mix=1``. A client offering fewer receiving
lines than the room has slots gets the mix without asking.
"""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RtcpPacket, RtcpSrPacket

import sfu
from sfu.signaling.aiohttp import add_whip_whep

from ..clients import (
    Client,
    ToneTrack,
    _record_received,
    _record_sent,
    close_peer,
    join,
    make_offer,
    start_speaking,
    wait_for,
)
from ..conftest import client_configuration
from .mixing import assert_tones, decode_payloads


async def join_mixed(
    room: sfu.Room, identity: str, *, lines: int = 1, frequency: float | None = None
) -> Client:
    """An aiortc client offering ``lines`` audio lines (the first sendrecv when
    it speaks ``frequency``), joined with ``mixed=True``."""
    pc = RTCPeerConnection(client_configuration())
    client = Client(pc=pc, identity=identity)
    if frequency is not None:
        client.track = ToneTrack(frequency)
        pc.addTransceiver(client.track, direction="sendrecv")
    for _ in range(lines - (frequency is not None)):
        pc.addTransceiver("audio", direction="recvonly")
    offer = await make_offer(pc)
    if frequency is not None:
        client.participant = await room.add_speaker(offer, identity, mixed=True)
    else:
        client.participant = await room.add_listener(offer, identity, mixed=True)
    _record_received(client)
    await pc.setRemoteDescription(RTCSessionDescription(client.participant.answer, "answer"))
    if frequency is not None:
        _record_sent(client)
    return client


def assert_one_continuous_stream(client: Client, ssrc: int) -> None:
    packets = client.packets(0)
    assert packets, "nothing received"
    assert {p.ssrc for p in packets} == {ssrc}
    for before, after in zip(packets, packets[1:]):
        assert (after.sequence - before.sequence) & 0xFFFF == 1, "sequence gap"
        assert (after.timestamp - before.timestamp) & 0xFFFFFFFF == 960, "timestamp step"


async def test_mixed_listener_and_mixed_speaker() -> None:
    async with sfu.Server() as server:
        room = server.room("mixed")
        a = await join(room, "alice", speaker=True, frequency=440)
        listener = await join_mixed(room, "lis", lines=3)
        b = await join_mixed(room, "bob", frequency=1000)
        clients = [a, listener, b]
        try:
            assert listener.participant is not None and b.participant is not None
            assert f"a=ssrc:{room.mixer.ssrc} " in (listener.participant.answer or "")
            # One line carries the mix; the other two are not used.
            assert listener.participant.answer.count("a=sendonly") == 1
            assert listener.participant.answer.count("a=inactive") == 2
            await wait_for(lambda: len(listener.packets(0)) >= 150, 20, "3 s of mix")
            await wait_for(lambda: len(b.packets(0)) >= 150, 10, "3 s of mix-minus")
            assert listener.packets(1) == [] and listener.packets(2) == []
            assert_one_continuous_stream(listener, room.mixer.ssrc)
            assert_one_continuous_stream(b, room.mixer.ssrc_for(b.participant.number))
            # The mix carries the loudest contributor as CSRC and an RFC 6464 level.
            assert {p.csrc[0] for p in listener.packets(0)[-50:]} <= {a.csrc, b.csrc}
            assert any(p.audio_level is not None for p in listener.packets(0))
            stats = listener.participant.stats()
            assert stats["slots"][0]["packets_sent"] >= 150
            # The server's totals count what the mixer sent to mixed listeners too.
            received_from_mixer = len(listener.packets(0)) + len(b.packets(0))
            mixer_sent = server.stats()["packets_out"] - room.router.fanout.sent
            assert mixer_sent >= received_from_mixer
            # Decode what was received, from when both were on stage.
            assert_tones(
                decode_payloads([p.payload for p in listener.packets(0)][50:]), [440, 1000]
            )
            # Bob never hears himself; Alice he does.
            assert_tones(
                decode_payloads([p.payload for p in b.packets(0)][50:]), [440], absent=[1000]
            )
            assert a.total_received() > 0 and all(b.csrc in p.csrc for p in a.packets(0)[-10:]), (
                "slot listeners are not affected"
            )
        finally:
            await asyncio.gather(*(c.close() for c in clients))
        await wait_for(lambda: not room.mixer.running, 5, "the mixer to stop with its consumers")


async def test_clients_with_fewer_lines_than_slots_get_the_mix_unasked() -> None:
    """Alice takes slot 0 and is quiet; Bob talks in slot 1. With slots, a
    one-line listener would hear only slot 0 (Alice), and a one-line speaker
    holding slot 0 (Carol) would hear nobody: each gets the mix instead."""
    async with sfu.Server() as server:
        room = server.room("few", slots=3)
        alice = await join(room, "alice", speaker=True, frequency=440, loud=False, slots=3)
        bob = await join(room, "bob", speaker=True, frequency=1000, slots=3)
        carol = await join(room, "carol", speaker=True, frequency=700, slots=1)
        one_line = await join(room, "one-line", speaker=False, slots=1)
        two_lines = await join(room, "two-lines", speaker=False, slots=2, mixed=False)
        clients = [alice, bob, carol, one_line, two_lines]
        try:
            members = {c.identity: c.participant for c in clients}
            assert {name for name, p in members.items() if p is not None and p.mixed} == {
                "carol",
                "one-line",
            }, "fewer lines than slots: the mix; as many, or mixed=False: slots"
            assert one_line.participant is not None and carol.participant is not None
            assert f"a=ssrc:{room.mixer.ssrc} " in (one_line.participant.answer or "")
            await wait_for(lambda: len(one_line.packets(0)) >= 150, 20, "3 s of mix")
            await wait_for(lambda: len(carol.packets(0)) >= 150, 20, "3 s of mix-minus")
            assert_one_continuous_stream(one_line, room.mixer.ssrc)
            heard = decode_payloads([p.payload for p in one_line.packets(0)][50:])
            assert_tones(heard, [1000, 700])
            # Carol hears Bob, not herself.
            heard = decode_payloads([p.payload for p in carol.packets(0)][50:])
            assert_tones(heard, [1000], absent=[700])
            # Slot clients are as before: two lines, the first two slots.
            assert two_lines.total_received() > 0
            assert two_lines.packets(0)[-1].ssrc == room.router.slots[0].ssrc
        finally:
            await asyncio.gather(*(c.close() for c in clients))


@pytest.mark.parametrize("query", ["?mix=1", ""])
async def test_whep_with_mix_query(query: str) -> None:
    """Asked for (``?mix=1``), or unasked: one line in a 3-slot room gets the mix."""
    async with sfu.Server() as server:
        room = server.room("whep")
        app = web.Application()
        add_whip_whep(app, server)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        a = await join(room, "alice", speaker=True, frequency=440)
        b = await join(room, "bob", speaker=True, frequency=1000)
        pc = RTCPeerConnection(client_configuration())
        viewer = Client(pc=pc, identity="whep")
        try:
            pc.addTransceiver("audio", direction="recvonly")
            offer = await make_offer(pc)
            url = f"http://127.0.0.1:{port}/rooms/whep/whep{query}"
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    url, data=offer, headers={"Content-Type": "application/sdp"}
                ) as response:
                    assert response.status == 201
                    answer = await response.text()
            assert f"a=ssrc:{room.mixer.ssrc} " in answer
            _record_received(viewer)
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await wait_for(lambda: len(viewer.packets(0)) >= 150, 20, "3 s of mix over WHEP")
            assert_tones(decode_payloads([p.payload for p in viewer.packets(0)][50:]), [440, 1000])
        finally:
            await asyncio.gather(a.close(), b.close(), close_peer(pc))
            await runner.cleanup()


async def test_promoted_mixed_listener_switches_to_mix_minus() -> None:
    async with sfu.Server() as server:
        room = server.room("promote")
        a = await join(room, "alice", speaker=True, frequency=440)
        fan = await join_mixed(room, "fan")
        try:
            assert fan.participant is not None
            await wait_for(lambda: len(fan.packets(0)) >= 25, 10, "the room mix")
            await room.promote("fan")
            await start_speaking(fan, frequency=660)
            own = room.mixer.ssrc_for(fan.participant.number)
            assert f"a=ssrc:{own} " in fan.participant.answer

            def minus() -> list[bytes]:
                return [p.payload for p in fan.packets(0) if p.ssrc == own]

            await wait_for(lambda: len(minus()) >= 150, 20, "3 s of mix-minus after promotion")
            assert_tones(decode_payloads(minus()[50:]), [440], absent=[660])
            # The fan's voice does reach the room (Alice hears it through her slots).
            await wait_for(
                lambda: any(fan.csrc in p.csrc for i in range(3) for p in a.packets(i)),
                10,
                "the fan on one of Alice's slots",
            )
        finally:
            await asyncio.gather(a.close(), fan.close())


async def test_a_mixed_listeners_reports_give_its_stats_a_round_trip() -> None:
    """The server sends a mixed listener sender reports for the mix, and its
    receiver reports about the mix SSRC fill the stats of its one stream, as
    they do for slot streams (round-trip time included)."""
    async with sfu.Server() as server:
        room = server.room("mixed")
        speaker = await join(room, "alice", speaker=True, frequency=440)
        listener = await join_mixed(room, "lis")
        clients = [speaker, listener]
        try:
            participant = listener.participant
            assert participant is not None
            await wait_for(
                lambda: (
                    bool(participant.stats()["slots"])
                    and participant.stats()["slots"][0]["round_trip_time"] is not None
                ),
                15,
                "a receiver report answering a sender report for the mix",
            )
            slot = participant.stats()["slots"][0]
            assert slot["packets_sent"] > 0
            round_trip_time = slot["round_trip_time"]
            assert round_trip_time is not None and 0 <= round_trip_time < 1.0
        finally:
            await asyncio.gather(*(c.close() for c in clients))


@pytest.mark.parametrize("change", ["promote", "demote"])
async def test_a_role_change_before_connecting_keeps_the_stream_the_answer_announced(
    change: str,
) -> None:
    """Promoted (or demoted) between its answer and its DTLS handshake, a mixed
    member still gets the stream its answer named until it renegotiates:
    another SSRC would be one its client was never told of."""
    async with sfu.Server() as server:
        room = server.room("mixed")
        alice = await join(room, "alice", speaker=True, frequency=440)
        if change == "promote":
            member = await join(room, "bob", speaker=False, slots=1)
            await room.promote("bob")
        else:
            member = await join(room, "bob", speaker=True, frequency=1000, slots=1)
            await room.demote("bob")
        clients = [alice, member]
        try:
            assert member.participant is not None and member.participant.mixed
            announced = {
                int(ssrc) for ssrc in re.findall(r"a=ssrc:(\d+) ", member.participant.answer or "")
            }
            await wait_for(lambda: len(member.packets(0)) >= 25, 20, "the mix")
            assert {p.ssrc for p in member.packets(0)} == announced
        finally:
            await asyncio.gather(*(c.close() for c in clients))


@pytest.mark.parametrize("change", ["nothing", "the level extension id"])
async def test_renegotiating_a_mixed_member_keeps_its_stream_and_counts(change: str) -> None:
    """A renegotiation that keeps what it receives (same role) keeps its mix
    stream; its per-stream counts and its sender reports' packet count go on
    (RFC 3550 6.4.1: cumulative per SSRC), also when it is registered again
    (another level extension id)."""
    async with sfu.Server() as server:
        room = server.room("mixed")
        alice = await join(room, "alice", speaker=True, frequency=440)
        member = await join_mixed(room, "lis")
        clients = [alice, member]
        try:
            participant = member.participant
            assert participant is not None
            await wait_for(lambda: len(member.packets(0)) >= 50, 20, "the mix")
            ssrc = room.mixer.receiver_ssrc(participant)
            before = participant.stats()["slots"][0]["packets_sent"]
            offer = await make_offer(member.pc)
            if change != "nothing":
                moved = re.sub(
                    r"a=extmap:\d+ (urn:ietf:params:rtp-hdrext:ssrc-audio-level)",
                    r"a=extmap:9 \1",
                    offer,
                )
                assert moved != offer
                offer = moved
            answer = await participant.renegotiate(offer)
            if change == "nothing":
                await member.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            assert room.mixer.receiver_ssrc(participant) == ssrc
            assert participant.stats()["slots"][0]["packets_sent"] >= before
            loop = asyncio.get_running_loop()
            # (Registered again on a stream made again: its first frame comes first.)
            await wait_for(
                lambda: room.mixer.sender_report(participant, loop.time(), 0.0) is not None,
                1,
                "a sender report",
            )
            reported = room.mixer.sender_report(participant, loop.time(), 0.0)
            report, _ = RtcpPacket.parse(reported or b"")
            assert isinstance(report, RtcpSrPacket) and report.sender_info.packet_count >= before
        finally:
            await asyncio.gather(*(c.close() for c in clients))


async def test_a_refused_mixed_join_leaves_no_mix_minus_stream_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The answer names a mix-minus SSRC before the session is registered;
    a join refused there (the server closing) must not keep that SSRC."""
    async with sfu.Server() as server:
        room = server.room("mixed")
        pc = RTCPeerConnection(client_configuration())
        try:
            pc.addTransceiver(ToneTrack(440), direction="sendrecv")
            offer = await make_offer(pc)

            def closing(session: object) -> None:
                raise sfu.errors.ServerClosed("the server is closed")

            monkeypatch.setattr(server, "_register", closing)
            with pytest.raises(sfu.errors.ServerClosed):
                await room.add_speaker(offer, "alice")
            assert room.mixer._mix_streams.minus_ssrcs == {}
        finally:
            await close_peer(pc)


async def test_the_mix_sender_report_maps_its_ntp_time_to_the_rtp_clock() -> None:
    """RFC 3550 6.4.1: an SR's RTP timestamp is the stream's clock at the SR's
    NTP time. Taken just after a frame went out, it is that frame's timestamp
    (as the listener received it) plus the time since the frame was due, not
    the next frame's, 20 ms ahead."""
    async with sfu.Server() as server:
        room = server.room("mixed")
        speaker = await join(room, "alice", speaker=True, frequency=440)
        listener = await join_mixed(room, "lis")
        clients = [speaker, listener]
        loop = asyncio.get_running_loop()
        taken: list[tuple[bytes, float, float, bytes]] = []

        def report_after(payload: bytes, due: float) -> None:
            assert listener.participant is not None
            now = loop.time()
            report = room.mixer.sender_report(listener.participant, now, time.time())
            if report is not None:
                taken.append((payload, due, now, report))

        frames = 0

        def frame_sent(packet: bytes, samples: int, due: float) -> None:
            # Called as the room mix's frame goes out; the report is taken once
            # that frame is done (the mixer's next step is 20 ms away).
            nonlocal frames
            frames += 1
            if frames > 50 and frames % 10 == 0:
                loop.call_soon(report_after, packet, due)

        output = room.mixer.add_output(frame_sent)
        try:
            await wait_for(lambda: len(taken) >= 5, 20, "reports after frames")
            await asyncio.sleep(0.2)  # the listener has those frames by now
            received = listener.packets(0)
            for payload, due, now, report in taken:
                sr, _ = RtcpPacket.parse(report)
                assert isinstance(sr, RtcpSrPacket)
                # (A steady tone's frames repeat: the first one since it was due.)
                frame = next(p for p in received if p.payload == payload and p.arrival > due - 0.01)
                expected = frame.timestamp + int((now - due) * 48000)
                ahead = (sr.sender_info.rtp_timestamp - expected + (1 << 31)) % (1 << 32) - (
                    1 << 31
                )
                assert abs(ahead) <= 48, f"the SR's RTP clock is {ahead / 48:.1f} ms off"
        finally:
            output.close()
            await asyncio.gather(*(c.close() for c in clients))
