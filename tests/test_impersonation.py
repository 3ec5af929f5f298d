"""A member cannot pass its voice, or its reports, off as another member's.

Receivers tell who is talking by the CSRC of each slot packet (the speaker's
own SSRC), mapped to an identity through the SSRCs that ``active_speakers``
events name (``sfu.js`` does exactly this for its speaking rings, and a
moderator acts on them). A speaker whose client sends with the SSRC another
speaker of the room is using must not be forwarded under it.
"""

from __future__ import annotations

import asyncio

import sfu

from .clients import Client, join, wait_for


async def alice_mallory_and_bob(room: sfu.Room) -> tuple[Client, Client, Client, int]:
    """Two speakers and a listener; returns once the server has seen Alice's
    SSRC (as every member has, in active_speakers), with that SSRC."""
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


async def test_a_speaker_sending_with_another_speakers_ssrc_is_not_forwarded_as_them() -> None:
    async with sfu.Server() as server:
        room = server.room("impostor")
        alice, mallory, bob, alice_ssrc = await alice_mallory_and_bob(room)
        try:
            await wait_for(lambda: mallory.sent_ssrc is not None, 15, "mallory sending")
            # Mallory's client (modified) now sends under Alice's SSRC, which every
            # member learns from the active_speakers events.
            mallory.pc.getTransceivers()[0].sender._ssrc = alice_ssrc
            await wait_for(
                lambda: sum(1 for ssrc, *_ in mallory.sent if ssrc == alice_ssrc) >= 100,
                15,
                "mallory sending under alice's SSRC",
            )
            await asyncio.sleep(0.3)  # what was sent is delivered
            mallory_payloads = {p for s, _, _, p in mallory.sent if s == alice_ssrc}
            alice_payloads = set(alice.sent_payloads)
            mallory_payloads -= alice_payloads  # (identical silence frames, if any)
            under_alice = [
                packet
                for slot in range(3)
                for packet in bob.packets(slot)
                if alice_ssrc in packet.csrc and packet.payload in mallory_payloads
            ]
            assert not under_alice, (
                f"{len(under_alice)} of mallory's packets reached bob named as alice's"
            )
            # The server's own view says the same: no one else holds alice's SSRC.
            holders = [
                info for info in room.stage() if info is not None and info.ssrc == alice_ssrc
            ]
            assert [info.identity for info in holders] in ([], ["alice"])
            assert room.router.packets_dropped >= 100
        finally:
            await asyncio.gather(alice.close(), mallory.close(), bob.close())


async def test_an_ssrc_stays_its_members_while_it_is_off_the_stage() -> None:
    """Demoted, a speaker's client may go on sending with its SSRC (it has not
    renegotiated yet) and be promoted back: taken meanwhile by someone else,
    the SSRC would silence it once back on the stage."""
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
                sent_since = set(alice.sent_payloads[promoted_at:])
                return sum(
                    1 for slot in range(3) for p in bob.packets(slot) if p.payload in sent_since
                )

            await wait_for(lambda: heard() >= 25, 15, "alice, promoted back, heard")
        finally:
            await asyncio.gather(alice.close(), mallory.close(), bob.close())


async def test_the_members_are_told_when_a_slot_holders_ssrc_changes() -> None:
    """Receivers keep what the events said an SSRC was (sfu.js maps CSRCs to
    identities with it). Alice drops (her SSRC is free again) and Mallory,
    on the stage, moves to it: unless told, receivers go on naming Mallory's
    voice Alice's, also once Alice is back from her reconnect."""
    async with sfu.Server() as server:
        room = server.room("told", stage_interval=0.05)
        events = room.events()
        alice = await join(room, "alice", speaker=True, frequency=440)
        mallory = await join(room, "mallory", speaker=True, frequency=880)
        try:
            await wait_for(lambda: alice.sent_ssrc is not None, 15, "alice sending")
            alice_ssrc = alice.sent_ssrc
            assert alice_ssrc is not None

            def on_stage(identity: str, ssrc: int | None = None) -> bool:
                return any(
                    info is not None
                    and info.identity == identity
                    and (ssrc is None or info.ssrc == ssrc)
                    for info in room.stage()
                )

            await wait_for(
                lambda: on_stage("alice", alice_ssrc) and on_stage("mallory"), 15, "both on stage"
            )
            await alice.close()
            await wait_for(lambda: room.get("alice") is None, 40, "alice gone")
            await asyncio.sleep(1.5)  # the stage settles (dominant speaker, holders)
            while True:
                try:
                    await events.next(0)
                except asyncio.TimeoutError:
                    break
            mallory.pc.getTransceivers()[0].sender._ssrc = alice_ssrc
            await wait_for(lambda: on_stage("mallory", alice_ssrc), 15, "mallory on alice's SSRC")
            await asyncio.sleep(0.5)  # stage checks run every 0.25 s
            told: list[sfu.SlotInfo] = []
            while True:
                try:
                    event = await events.next(0)
                except asyncio.TimeoutError:
                    break
                if isinstance(event, sfu.ActiveSpeakersChanged):
                    told = [info for info in event.slots if info is not None]
            assert any(info.identity == "mallory" and info.ssrc == alice_ssrc for info in told), (
                f"the last stage the members were told: {told}"
            )
        finally:
            await asyncio.gather(alice.close(), mallory.close())


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
            for _ in range(20):
                for packet in packets:
                    await transport._send_rtp(bytes(packet))  # type: ignore[call-overload]
                await asyncio.sleep(0.01)
            await wait_for(
                lambda: (
                    mallory.participant is not None
                    and mallory.participant.rtcp_received >= 20 * len(packets)
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
