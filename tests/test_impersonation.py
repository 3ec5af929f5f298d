"""A member cannot pass its voice, or its reports, off as another member's.

Receivers tell who is talking by the CSRC of each slot packet, mapped to an
identity through the CSRCs that ``active_speakers`` events name (``sfu.js``
does exactly this for its speaking rings, and a moderator acts on them).
That CSRC is the room's name for the member's voice
(:attr:`sfu.Participant.csrc`), not its client's SSRC: whatever SSRC a client
sends with, its voice is named as its own.
"""

from __future__ import annotations

import asyncio

import sfu

from .clients import Client, join, wait_for


async def alice_mallory_and_bob(room: sfu.Room) -> tuple[Client, Client, Client, int]:
    """Two speakers and a listener; returns once the server has seen Alice's
    SSRC, with that SSRC."""
    alice = await join(room, "alice", speaker=True, frequency=440)
    mallory = await join(room, "mallory", speaker=True, frequency=880)
    bob = await join(room, "bob", speaker=False)
    try:
        await wait_for(lambda: alice.sent_ssrc is not None, 15, "alice sending")
        alice_ssrc = alice.sent_ssrc
        assert alice_ssrc is not None and alice.participant is not None
        seated = alice.participant
        await wait_for(
            lambda: seated.publisher is not None and seated.publisher.ssrc == alice_ssrc,
            15,
            "alice heard",
        )
    except BaseException:
        await asyncio.gather(alice.close(), mallory.close(), bob.close())
        raise
    return alice, mallory, bob, alice_ssrc


def heard_under(listener: Client, csrc: int, payloads: set[bytes]) -> int:
    """How many of ``payloads`` reached ``listener`` named ``csrc``, in any slot."""
    return sum(
        1
        for slot in range(3)
        for packet in listener.packets(slot)
        if packet.csrc == (csrc,) and packet.payload in payloads
    )


async def test_a_speaker_sending_with_another_speakers_ssrc_is_heard_as_itself() -> None:
    async with sfu.Server() as server:
        room = server.room("impostor")
        alice, mallory, bob, alice_ssrc = await alice_mallory_and_bob(room)
        try:
            await wait_for(lambda: mallory.sent_ssrc is not None, 15, "mallory sending")
            # Mallory's client (modified) now sends under Alice's SSRC, which it
            # may have learnt from Alice's offer relayed or a packet capture.
            mallory.pc.getTransceivers()[0].sender._ssrc = alice_ssrc
            await wait_for(
                lambda: sum(1 for ssrc, *_ in mallory.sent if ssrc == alice_ssrc) >= 100,
                15,
                "mallory sending under alice's SSRC",
            )
            await asyncio.sleep(0.3)  # what was sent is delivered
            mallory_payloads = {p for s, _, _, p in mallory.sent if s == alice_ssrc}
            mallory_payloads -= set(alice.sent_payloads)  # (identical silence frames, if any)
            assert heard_under(bob, alice.csrc, mallory_payloads) == 0, (
                "mallory's packets reached bob named as alice's"
            )
            assert heard_under(bob, mallory.csrc, mallory_payloads) >= 50, (
                "mallory is heard, as herself"
            )
            # What the members are told maps each CSRC to its own member.
            named = {info.csrc: info.identity for info in room.stage() if info is not None}
            assert named == {alice.csrc: "alice", mallory.csrc: "mallory"}
        finally:
            await asyncio.gather(alice.close(), mallory.close(), bob.close())


async def test_a_demoted_members_ssrc_taken_meanwhile_does_not_silence_it_when_back() -> None:
    """Demoted, a speaker's client may go on sending with its SSRC (it has not
    renegotiated yet) and be promoted back, while someone else sends with
    that SSRC: both are heard, each named as itself."""
    async with sfu.Server() as server:
        room = server.room("seat")
        alice, mallory, bob, alice_ssrc = await alice_mallory_and_bob(room)
        try:
            await room.demote("alice")
            mallory.pc.getTransceivers()[0].sender._ssrc = alice_ssrc
            await wait_for(
                lambda: sum(1 for ssrc, *_ in mallory.sent if ssrc == alice_ssrc) >= 20,
                15,
                "mallory sending under alice's SSRC",
            )
            await room.promote("alice")
            promoted_at = len(alice.sent)

            def heard() -> int:
                return heard_under(bob, alice.csrc, set(alice.sent_payloads[promoted_at:]))

            await wait_for(lambda: heard() >= 25, 15, "alice, promoted back, heard")
        finally:
            await asyncio.gather(alice.close(), mallory.close(), bob.close())


async def test_speakers_whose_clients_all_send_with_one_fixed_ssrc_are_each_heard_and_named() -> (
    None
):
    """OBS 30.0's WHIP output sent every stream with SSRC 5002, in its offer and
    its packets: two such publishers in one room are both heard, each under
    the CSRC the members are told is theirs."""
    async with sfu.Server() as server:
        room = server.room("studio")
        first = await join(room, "first", speaker=True, frequency=440, ssrc=5002)
        second = await join(room, "second", speaker=True, frequency=880, ssrc=5002)
        bob = await join(room, "bob", speaker=False)
        try:
            await wait_for(
                lambda: len(first.sent) >= 50 and len(second.sent) >= 50, 15, "both sending"
            )
            assert {ssrc for ssrc, *_ in first.sent + second.sent} == {5002}
            await wait_for(
                lambda: all(
                    heard_under(bob, client.csrc, set(client.sent_payloads)) >= 50
                    for client in (first, second)
                ),
                15,
                "both publishers heard, each named as itself",
            )
            assert first.csrc != second.csrc
            assert heard_under(bob, first.csrc, set(second.sent_payloads)) == 0
            named = {info.csrc: info.identity for info in room.stage() if info is not None}
            assert named == {first.csrc: "first", second.csrc: "second"}
            assert room.router.packets_dropped == 0
        finally:
            await asyncio.gather(first.close(), second.close(), bob.close())


async def test_rtcp_naming_other_members_streams_changes_nothing_for_them() -> None:
    """A member's RTCP about SSRCs that are not its own (a sender report as
    the speaker, a BYE, PLI and NACK for the speaker's and the slots' SSRCs,
    receiver reports as another listener) is not acted on for anyone else:
    the speaker's reports keep its own timing, the other listener's slot
    statistics stay its own, and the speaker is heard throughout."""
    from aiortc.rtp import (
        RtcpByePacket,
        RtcpPsfbPacket,
        RtcpReceiverInfo,
        RtcpRrPacket,
        RtcpRtpfbPacket,
        RtcpSenderInfo,
        RtcpSrPacket,
    )

    async with sfu.Server() as server:
        room = server.room("reports")
        alice = await join(room, "alice", speaker=True, frequency=440)
        bob = await join(room, "bob", speaker=False)
        mallory = await join(room, "mallory", speaker=False)
        try:
            assert alice.participant is not None and bob.participant is not None
            seated, listener = alice.participant, bob.participant
            await wait_for(lambda: len(bob.packets(0)) >= 25, 15, "alice heard")
            await mallory.wait_connected()
            alice_ssrc = alice.sent_ssrc
            assert alice_ssrc is not None and seated.publisher is not None
            statistics = seated.publisher.statistics
            forged_ntp = 0x1234567800000000
            packets: list[object] = [
                RtcpSrPacket(
                    ssrc=alice_ssrc,
                    sender_info=RtcpSenderInfo(
                        ntp_timestamp=forged_ntp, rtp_timestamp=0, packet_count=0, octet_count=0
                    ),
                ),
                RtcpByePacket(sources=[alice_ssrc, *room.router.slot_ssrcs]),
                RtcpPsfbPacket(fmt=1, ssrc=alice_ssrc, media_ssrc=alice_ssrc),
                RtcpRtpfbPacket(fmt=1, ssrc=alice_ssrc, media_ssrc=alice_ssrc, lost=[1, 2, 3]),
            ]
            for ssrc in room.router.slot_ssrcs:
                lost = RtcpReceiverInfo(
                    ssrc=ssrc,
                    fraction_lost=255,
                    packets_lost=99999,
                    highest_sequence=0,
                    jitter=10**6,
                    lsr=0,
                    dlsr=0,
                )
                packets.append(RtcpRrPacket(ssrc=alice_ssrc, reports=[lost]))
            transport = mallory.pc.getTransceivers()[0].sender.transport
            heard_before = len(bob.packets(0))
            rounds = 10  # (within a session's SRTCP burst, RTCP_BURST)
            for _ in range(rounds):
                for packet in packets:
                    await transport._send_rtp(bytes(packet))  # type: ignore[call-overload]
                await asyncio.sleep(0.01)
            await wait_for(
                lambda: (
                    mallory.participant is not None
                    and mallory.participant.rtcp_received >= rounds * len(packets)
                ),
                5,
                "mallory's rtcp read",
            )
            # (Alice's own sender reports move it; the forged one must not.)
            assert statistics.last_sr != (forged_ntp >> 16) & 0xFFFFFFFF
            assert all(
                report.get("packets_lost") != 99999 for report in listener._slot_reports.values()
            )
            await wait_for(lambda: len(bob.packets(0)) >= heard_before + 25, 5, "alice heard")
            assert not seated.closed and not listener.closed
        finally:
            await asyncio.gather(alice.close(), bob.close(), mallory.close())
