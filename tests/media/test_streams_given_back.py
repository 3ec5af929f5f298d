"""A stream given back to a receiver after a while without it, over real aiortc peers.

A client that renegotiates fewer receiving lines than before, and later as
many again, gets its slot streams back on the same SSRCs; a mixed member
whose role changes there and back gets its mix stream back. Those streams
went on meanwhile, for others. Both libsrtp ends, the server's and the
client's, still hold the index of the last packet the client got on each
SSRC, and guess a packet's index from it: a sequence number more than 2**15
ahead reads as old, and every packet is refused for as long again (up to
~11 minutes). The client here is aiortc, whose pylibsrtp does what a
browser's libsrtp does.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from aiortc import RTCSessionDescription

import sfu
from sfu.media import router as router_module
from sfu.media.opus import FRAME_SAMPLES, SILENCE_MONO
from sfu.media.router import Publisher

from ..clients import Client, join, make_offer, wait_for
from .test_mixed_listener import join_mixed

#: Packets a stream goes on without the receiver: past 2**15, and not a
#: multiple of 2**16 (a whole turn of the sequence numbers reads as none).
AWAY = 34_000
#: Where the slot's numbering starts: a value the Router may pick (it starts
#: each slot below 2**15), near enough to 2**15 that the client's index is past
#: it before it leaves; libsrtp only guesses from an index past 2**15.
FIRST_SEQUENCE = 32_700


def speaker_packet(ssrc: int, index: int, payload: bytes) -> bytes:
    """Opus RTP as a speaker's client sends it, its RFC 6464 level in extension id 1."""
    header = struct.pack(
        "!BBHII", 0x90, 111, index & 0xFFFF, index * FRAME_SAMPLES & 0xFFFFFFFF, ssrc
    )
    return header + bytes([0xBE, 0xDE, 0, 1, 0x10, 0x80 | 20, 0, 0]) + payload


async def renegotiate_lines(client: Client, lines: int) -> None:
    """The client receives on its first ``lines`` lines, the others inactive."""
    assert client.participant is not None
    for index, transceiver in enumerate(client.pc.getTransceivers()):
        transceiver.direction = "recvonly" if index < lines else "inactive"
    answer = await client.participant.renegotiate(await make_offer(client.pc))
    await client.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))


async def test_a_slot_given_back_after_a_while_is_heard_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two lines, one, two again: the second slot, which went on for 34,000
    packets meanwhile, reaches the client from its first packet on, and its
    counts go on from where they were (RFC 3550 6.4.1)."""
    # Those 34,000 packets (11 minutes of a voice) go in within a moment: the
    # speakers' packet rate cap (a flood's) is lifted for this test.
    monkeypatch.setattr(router_module, "PACKET_RATE", 1e12)
    monkeypatch.setattr(router_module, "PACKET_BURST", 1e18)
    async with sfu.Server() as server:
        room = server.room("lines", slots=2)
        router = room.router
        router.slots[1].last_sequence = router.slots[1].holder_last_sequence = FIRST_SEQUENCE
        listener = await join(room, "lis", speaker=False, slots=2)
        try:
            participant = listener.participant
            assert participant is not None
            await participant.wait_connected(10)
            await listener.wait_connected(10)
            loop = asyncio.get_running_loop()
            # Two speakers, straight into the room's Router: one holds slot 0,
            # the other slot 1 (holders never move between slots).
            first = Publisher(number=10_001, payload_type=111, audio_level_id=1)
            second = Publisher(number=10_002, payload_type=111, audio_level_id=1)
            router.add_publisher(first)
            router.add_publisher(second)
            sent = 0

            def talk(publisher: Publisher, count: int, payload: bytes) -> None:
                nonlocal sent
                for _ in range(count):
                    packet = speaker_packet(publisher.number, sent, payload)
                    router.forward(publisher, packet, loop.time())
                    sent += 1

            talk(first, 1, SILENCE_MONO)
            talk(second, 200, SILENCE_MONO + b"before")
            await wait_for(lambda: len(listener.packets(1)) >= 200, 10, "slot 1 heard")
            assert {p.ssrc for p in listener.packets(1)} == {router.slots[1].ssrc}
            counted = participant.stats()["slots"][1]["packets_sent"]

            await renegotiate_lines(listener, 1)
            assert participant.slot_count == 1
            # Slot 1 goes on for the room, without this client.
            for _ in range(AWAY // 1000):
                talk(second, 1000, SILENCE_MONO)
                await asyncio.sleep(0)

            await renegotiate_lines(listener, 2)
            assert participant.slot_count == 2
            heard_before = len(listener.packets(1))
            dropped_before = router.fanout.dropped
            talk(second, 100, SILENCE_MONO + b"after")

            def after() -> list[bytes]:
                return [
                    p.payload
                    for p in listener.packets(1)[heard_before:]
                    if p.payload.endswith(b"after")
                ]

            await wait_for(lambda: len(after()) == 100, 10, "slot 1 heard again")
            assert router.fanout.dropped == dropped_before, "the server protected every packet"
            assert participant.stats()["slots"][1]["packets_sent"] >= counted + 100
        finally:
            await listener.close()


async def test_a_mix_given_back_after_a_while_is_heard_at_once() -> None:
    """A mixed listener is promoted (its mix now leaves its own voice out),
    then demoted after the room mix went on for 34,000 frames without it:
    the room mix reaches it again from its first frame on."""
    async with sfu.Server() as server:
        room = server.room("mix")
        mixer = room.mixer
        # Someone else consumes the room mix all along (a recording would).
        output = mixer.add_output(lambda packet, samples, now: None)
        room_mix = mixer._streams[-1]
        # A numbering the mixer may pick (any 16 bits), past 2**15 before the
        # member leaves the room mix.
        room_mix.sequence = FIRST_SEQUENCE
        member = await join_mixed(room, "fan")
        try:
            participant = member.participant
            assert participant is not None
            await wait_for(lambda: len(member.packets(0)) >= 150, 20, "the room mix")
            assert {p.ssrc for p in member.packets(0)} == {mixer.ssrc}

            await room.promote("fan")
            transceiver = member.pc.getTransceivers()[0]
            transceiver.direction = "sendrecv"  # (nothing to send: its mix is silence)
            answer = await participant.renegotiate(await make_offer(member.pc))
            await member.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            assert mixer.receiver_ssrc(participant) != mixer.ssrc
            # The room mix goes on without it for 34,000 frames: its numbering
            # moves on as their encoding would (~10 s of it here), then a few
            # real frames.
            room_mix.sequence = (room_mix.sequence + AWAY) & 0xFFFF
            room_mix.timestamp = (room_mix.timestamp + AWAY * FRAME_SAMPLES) & 0xFFFFFFFF
            await asyncio.sleep(0.2)

            await room.demote("fan")
            transceiver.direction = "recvonly"
            answer = await participant.renegotiate(await make_offer(member.pc))
            await member.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            assert mixer.receiver_ssrc(participant) == mixer.ssrc
            heard = len(member.packets(0))
            dropped = mixer.packets_out_dropped

            def room_mix_again() -> int:
                return sum(p.ssrc == mixer.ssrc for p in member.packets(0)[heard:])

            await wait_for(lambda: room_mix_again() >= 50, 10, "the room mix again")
            assert mixer.packets_out_dropped == dropped, "the server protected every frame"
        finally:
            output.close()
            await member.close()
