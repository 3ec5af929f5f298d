"""Roles and moderation on real aiortc peers: the server enforces every rule."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time

import pytest
from aiortc import RTCSessionDescription
from aiortc.rtp import RtpPacket

import sfu
from sfu import auth

from .clients import Client, close_peer, join, make_offer, start_speaking, wait_for

SECRET = secrets.token_urlsafe(32)


def heard_from(client: Client, csrc: int, slots: int = 3) -> int:
    return sum(1 for slot in range(slots) for p in client.packets(slot) if csrc in p.csrc)


def slot_packets_sent(client: Client) -> int:
    assert client.participant is not None
    return sum(slot["packets_sent"] for slot in client.participant.stats()["slots"])


async def drain(events: sfu.EventStream, wanted: type, timeout: float = 5) -> sfu.RoomEvent:
    deadline = time.monotonic() + timeout
    while True:
        event = await events.next(max(0.01, deadline - time.monotonic()))
        if isinstance(event, wanted):
            return event


async def test_raise_hand_promote_and_the_new_speaker_is_heard() -> None:
    async with sfu.Server() as server:
        room = server.room("stage")
        events = room.events()
        hand_events = room.events()
        mod = await join(room, "mod", speaker=True, loud=False)
        bob = await join(room, "bob", speaker=False)
        carol = await join(room, "carol", speaker=False)
        clients = [mod, bob, carol]
        try:
            assert bob.participant is not None
            await bob.participant.wait_connected(10)
            session = bob.participant.session
            bob.participant.raise_hand()
            assert room.hands == ["bob"]
            assert isinstance(await drain(events, sfu.HandRaised), sfu.HandRaised)
            with pytest.raises(sfu.NotAllowed):
                await room.promote("bob", by="carol")  # carol is no moderator
            await room.promote("mod", role="moderator")
            await room.promote("bob", by="mod")
            changed = await drain(events, sfu.RoleChanged)
            assert isinstance(changed, sfu.RoleChanged)
            while changed.identity != "bob":  # type: ignore[attr-defined]
                changed = await drain(events, sfu.RoleChanged)
            assert changed.role == "speaker" and changed.renegotiate and changed.by == "mod"  # type: ignore[attr-defined]
            assert room.hands == [] and isinstance(bob.participant, sfu.Speaker)
            lowered = await drain(hand_events, sfu.HandLowered)
            assert lowered == sfu.HandLowered("stage", "bob", "mod"), "the answered hand goes down"

            await start_speaking(bob)
            await wait_for(lambda: heard_from(carol, bob.csrc) >= 20, 10, "bob heard by carol")
            assert heard_from(mod, bob.csrc) > 0
            assert (
                bob.participant.session is session
                and session is not None
                and session.state == "connected"
            )
            assert heard_from(bob, bob.csrc) == 0, "a speaker never hears itself"

            # A hand raised by someone who then leaves goes down too.
            assert carol.participant is not None
            carol.participant.raise_hand()
            assert room.hands == ["carol"]
            await carol.close()
            lowered = await drain(hand_events, sfu.HandLowered, timeout=10)
            assert lowered == sfu.HandLowered("stage", "carol", None)
            assert room.hands == []
        finally:
            await asyncio.gather(*(c.close() for c in clients))


async def test_mute_and_demote_silence_within_one_packet() -> None:
    async with sfu.Server() as server:
        room = server.room("mute")
        alice = await join(room, "alice", speaker=True)
        bob = await join(room, "bob", speaker=False)
        try:
            await wait_for(lambda: len(bob.packets(0)) >= 10, 10, "alice heard")
            await room.mute("alice")
            # From the mute on, the server forwards nothing more of alice's.
            frozen = slot_packets_sent(bob)
            await asyncio.sleep(0.5)
            assert slot_packets_sent(bob) == frozen
            assert alice.participant is not None and alice.participant.muted
            assert room.router.detector.holders().count(alice.participant.number) == 0, (
                "muted speakers do not rank"
            )

            # A self-unmute cannot undo a moderator's mute (muted by herself
            # too first: unmuting what was not self-muted changes nothing anyway).
            alice.participant.set_self_muted(True)
            alice.participant.set_self_muted(False)
            assert alice.participant.muted and alice.participant.moderator_muted
            await asyncio.sleep(0.3)
            assert slot_packets_sent(bob) == frozen

            await room.unmute("alice")
            await wait_for(lambda: slot_packets_sent(bob) > frozen + 10, 5, "alice heard again")

            await room.demote("alice")
            frozen = slot_packets_sent(bob)
            dropped = alice.participant.rtp_dropped
            await asyncio.sleep(0.5)
            assert slot_packets_sent(bob) == frozen
            assert alice.participant.rtp_dropped > dropped, (
                "her client still sends; the server drops it"
            )
            assert (
                isinstance(alice.participant, sfu.Listener) and alice.participant.role == "listener"
            )
        finally:
            await asyncio.gather(alice.close(), bob.close())


async def test_listener_that_sends_rtp_anyway_is_never_heard() -> None:
    """A listener's client that pushes Opus through its SRTP context anyway
    reaches nobody, also while a speaker of the room is heard (whose slot
    its packets could otherwise pass for the speaker's)."""
    async with sfu.Server() as server:
        room = server.room("sneaky")
        alice = await join(room, "alice", speaker=True)
        sneaky = await join(room, "sneaky", speaker=False)
        honest = await join(room, "honest", speaker=False)
        try:
            assert sneaky.participant is not None and alice.participant is not None
            await sneaky.participant.wait_connected(10)
            await wait_for(lambda: len(honest.packets(0)) >= 10, 10, "alice heard")
            await sneaky.wait_connected(10)
            # A modified client: push RTP through its own SRTP context anyway,
            # with the room's Opus payload type.
            transport = sneaky.pc.getTransceivers()[0].sender.transport
            forged = b"\xfc" + b"x" * 60
            for sequence in range(100):
                packet = RtpPacket(
                    payload_type=alice.participant.negotiation.payload_type,
                    sequence_number=sequence,
                    timestamp=960 * sequence,
                    ssrc=1234,
                )
                packet.payload = forged
                await transport._send_rtp(packet.serialize())
                await asyncio.sleep(0.002)
            await wait_for(
                lambda: sneaky.participant is not None and sneaky.participant.rtp_dropped >= 100,
                5,
                "drops",
            )
            heard = len(honest.packets(0))
            await wait_for(lambda: len(honest.packets(0)) >= heard + 10, 5, "alice still heard")
            for receiver in (honest, alice):
                payloads = [p.payload for slot in range(3) for p in receiver.packets(slot)]
                assert forged not in payloads, f"{receiver.identity} heard the listener"
            assert server.drops["rtp from a participant that may not send"] >= 100
        finally:
            await asyncio.gather(alice.close(), sneaky.close(), honest.close())


async def test_a_self_muted_speaker_is_not_forwarded_until_it_unmutes() -> None:
    """A member's own mute is kept by the server, not left to its client: what
    its client still sends is not forwarded from the mute on."""
    async with sfu.Server() as server:
        room = server.room("self-mute")
        alice = await join(room, "alice", speaker=True)
        bob = await join(room, "bob", speaker=False)
        try:
            assert alice.participant is not None
            await wait_for(lambda: len(bob.packets(0)) >= 10, 10, "alice heard")
            alice.participant.set_self_muted(True)
            frozen = slot_packets_sent(bob)
            sending = len(alice.sent)
            await wait_for(lambda: len(alice.sent) >= sending + 25, 5, "alice's client sending")
            assert slot_packets_sent(bob) == frozen, "a self-muted speaker was forwarded"
            alice.participant.set_self_muted(False)
            await wait_for(lambda: slot_packets_sent(bob) > frozen + 10, 5, "alice heard again")
        finally:
            await asyncio.gather(alice.close(), bob.close())


async def test_remove_closes_the_session_and_a_ban_keeps_the_token_out() -> None:
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("strict", private=True)
        events = room.events()
        token = auth.issue_token(SECRET, room="strict", identity="troll", role="listener")
        troll_pc = await join_with_token(room, token)
        try:
            participant = troll_pc.participant
            assert participant is not None
            await participant.wait_connected(10)
            await room.remove("troll", "spamming", ban=True)
            removed = await drain(events, sfu.ParticipantRemoved)
            assert removed.reason == "spamming" and removed.banned  # type: ignore[attr-defined]
            left = await drain(events, sfu.ParticipantLeft)
            assert left.reason == "removed: spamming"  # type: ignore[attr-defined]
            assert (
                participant.closed
                and participant.session is not None
                and participant.session.state == "closed"
            )
            assert list(server.sessions()) == []
            # The client is told at the DTLS level (close_notify) and its connection ends.
            await wait_for(
                lambda: troll_pc.pc.connectionState in ("closed", "failed"),
                10,
                "client disconnected",
            )
            with pytest.raises(sfu.NotAllowed, match="may not rejoin"):
                await join_with_token(room, token)
            fresh = auth.issue_token(SECRET, room="strict", identity="troll")
            with pytest.raises(sfu.NotAllowed, match="may not rejoin"):
                await join_with_token(room, fresh)
        finally:
            await troll_pc.close()


async def join_with_token(
    room: sfu.Room, token: str, *, speaker: bool = False, role: auth.Role | None = None
) -> Client:
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from .clients import ToneTrack, _record_received, _record_sent, make_offer

    pc = RTCPeerConnection(sfu_configuration())
    track = ToneTrack() if speaker else None
    if track is not None:
        pc.addTransceiver(track, direction="sendrecv")
    for _ in range(2 if speaker else 3):
        pc.addTransceiver("audio", direction="recvonly")
    try:
        participant = await room.join(await make_offer(pc), token=token, role=role)
    except BaseException:
        await close_peer(pc)
        raise
    client = Client(pc=pc, identity=participant.identity, participant=participant, track=track)
    _record_received(client)
    await pc.setRemoteDescription(RTCSessionDescription(participant.answer, "answer"))
    if track is not None:
        _record_sent(client)
    return client


def sfu_configuration():  # type: ignore[no-untyped-def]
    from aiortc import RTCConfiguration

    return RTCConfiguration(iceServers=[])


async def test_private_room_tokens_roles_and_capacity() -> None:
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("vip", private=True, max_speakers=1, max_listeners=1)
        with pytest.raises(sfu.NotAllowed, match="private"):
            await join(room, "nobody", speaker=False)
        wrong_room = auth.issue_token(SECRET, room="elsewhere", identity="x")
        with pytest.raises(sfu.NotAllowed, match="for room 'elsewhere'"):
            await join_with_token(room, wrong_room)
        listener_token = auth.issue_token(SECRET, room="vip", identity="lee", role="listener")
        from aiortc import RTCPeerConnection

        from .clients import make_offer

        pc = RTCPeerConnection(sfu_configuration())
        pc.addTransceiver("audio", direction="sendrecv")
        offer = await make_offer(pc)
        await close_peer(pc)
        with pytest.raises(sfu.NotAllowed, match="does not grant"):
            await room.add_speaker(offer, token=listener_token)
        assert room.participants == {} and list(server.sessions()) == []

        lee = await join_with_token(room, listener_token)
        other = auth.issue_token(SECRET, room="vip", identity="max", role="listener")
        with pytest.raises(sfu.RoomFull, match="at most 1 listener$"):
            await join_with_token(room, other)
        assert set(room.participants) == {"lee"}
        with pytest.raises(sfu.NotAllowed):
            await room.promote("lee", by="lee")
        await lee.close()


async def test_two_rooms_on_one_server_are_isolated() -> None:
    async with sfu.Server() as server:
        red, blue = server.room("red"), server.room("blue")
        # Both clients send with one fixed SSRC (as OBS 30.0's WHIP output did).
        red_speaker = await join(red, "r-speaker", speaker=True, frequency=300, ssrc=5002)
        blue_speaker = await join(blue, "b-speaker", speaker=True, frequency=900, ssrc=5002)
        red_listener = await join(red, "r-listener", speaker=False)
        blue_listener = await join(blue, "b-listener", speaker=False)
        clients = [red_speaker, blue_speaker, red_listener, blue_listener]
        try:
            await wait_for(
                lambda: len(red_listener.packets(0)) >= 50 and len(blue_listener.packets(0)) >= 50,
                15,
                "audio in both rooms",
            )
            assert heard_from(red_listener, blue_speaker.csrc) == 0
            assert heard_from(blue_listener, red_speaker.csrc) == 0
            assert heard_from(red_listener, red_speaker.csrc) >= 50
            red_ssrcs = {p.ssrc for s in range(3) for p in red_listener.packets(s)}
            blue_ssrcs = {p.ssrc for s in range(3) for p in blue_listener.packets(s)}
            assert not red_ssrcs & blue_ssrcs
            for listener, other in ((red_listener, blue_speaker), (blue_listener, red_speaker)):
                payloads = {p.payload for s in range(3) for p in listener.packets(s)}
                assert not payloads & set(other.sent_payloads), "the other room's audio"
            assert red_speaker.total_received() == 0 and blue_speaker.total_received() == 0
        finally:
            await asyncio.gather(*(c.close() for c in clients))


async def test_moderators_decisions_survive_a_reconnect() -> None:
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("sticky")
        events = room.events()
        speaker_token = auth.issue_token(SECRET, room="sticky", identity="sam", role="speaker")
        listener_token = auth.issue_token(SECRET, room="sticky", identity="lou", role="listener")
        sam = await join_with_token(room, speaker_token, speaker=True)
        lou = await join_with_token(room, listener_token)
        await asyncio.gather(room["sam"].wait_connected(10), room["lou"].wait_connected(10))
        await room.demote("sam")
        await room.promote("lou")
        await room.mute("lou")
        for client in (sam, lou):
            await client.close()
        await wait_for(lambda: not room.participants, 5, "both gone")

        # Sam's speaker token does not bring back what a moderator took away.
        sam_again = await join_with_token(room, speaker_token, speaker=True)
        assert room["sam"].role == "listener" and not room["sam"].can_publish
        # Lou comes back as the speaker she was made, still muted, and is asked
        # for a sending line (her client offered as a listener).
        rejoin_events = room.events()
        lou_again = await join_with_token(room, listener_token)
        participant = room["lou"]
        assert participant.role == "speaker" and participant.muted and participant.moderator_muted
        # Everyone is told again that she is muted (their rosters start her unmuted).
        announced = await drain(rejoin_events, sfu.MuteChanged)
        assert announced == sfu.MuteChanged("sticky", "lou", True, None, True, False)
        asked = await drain(events, sfu.RoleChanged, timeout=5)
        while not (asked.identity == "lou" and asked.by is None):  # type: ignore[attr-defined]
            asked = await drain(events, sfu.RoleChanged, timeout=5)
        assert asked.renegotiate  # type: ignore[attr-defined]
        participant.set_self_muted(False)
        assert participant.muted, "a self-unmute does not lift the moderator's mute"
        muted = await drain(events, sfu.MuteChanged)
        assert muted.muted and muted.moderator_muted and not muted.self_muted  # type: ignore[attr-defined]
        await asyncio.gather(sam_again.close(), lou_again.close())


async def test_a_room_forgets_the_oldest_decision_about_someone_gone_past_its_bound(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Decisions are kept per identity for the room's life, but not without
    bound: past MAX_DECISIONS the oldest about an identity no longer in the
    room goes (it comes back as its token says); members present keep theirs."""
    monkeypatch.setattr(sfu.rejoin, "MAX_DECISIONS", 2)
    caplog.set_level(logging.INFO, logger="sfu.rejoin")
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("bounded")

        def token(identity: str) -> str:
            return auth.issue_token(SECRET, room="bounded", identity=identity, role="speaker")

        async def demoted(identity: str) -> Client:
            client = await join_with_token(room, token(identity), speaker=True)
            await asyncio.gather(room[identity].wait_connected(10), client.wait_connected(10))
            await room.demote(identity)
            return client

        stays = await demoted("stays")  # decided first, and still in the room
        for identity in ("ann", "ben"):
            await (await demoted(identity)).close()
            await wait_for(lambda who=identity: room.get(who) is None, 5, f"{identity} gone")  # type: ignore[misc]
        assert "forgot what moderators decided about 1 identities not in it (the first: 'ann')" in (
            caplog.text
        )
        assert room._decisions.get("ann") is None and len(room._decisions) == 2

        ann = await join_with_token(room, token("ann"), speaker=True)
        ben = await join_with_token(room, token("ben"), speaker=True)
        assert room["ann"].role == "speaker", "ann's demotion was forgotten: her token stands"
        assert room["ben"].role == "listener", "ben's demotion, more recent, is kept"
        await stays.close()
        await wait_for(lambda: room.get("stays") is None, 5, "stays gone")
        stays = await join_with_token(room, token("stays"), speaker=True)
        assert room["stays"].role == "listener", "a member present is never forgotten"
        await asyncio.gather(ann.close(), ben.close(), stays.close())


def test_decisions_come_back_to_the_bound_once_members_present_past_it_leave(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sfu.rejoin, "MAX_DECISIONS", 2)
    present = {"a", "b", "c", "d"}
    decisions = sfu.rejoin.Decisions("hall", present.__contains__)
    for identity in sorted(present):
        decisions.of(identity)["moderator_muted"] = True
    assert len(decisions) == 4, "members present keep their decisions past the bound"
    present.clear()  # all four left
    decisions.of("e")["moderator_muted"] = True
    assert len(decisions) == 2
    assert [decisions.get(i) is not None for i in "abcde"] == [False, False, False, True, True]


async def test_a_promoted_member_joining_to_listen_is_not_put_back_on_the_stage() -> None:
    """Asking for the listener role (what sfu.js does without a microphone)
    keeps a promotion from an earlier visit from applying: nobody is asked
    for a sending line they did not offer."""
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("sticky")
        listener_token = auth.issue_token(SECRET, room="sticky", identity="lou", role="listener")
        lou = await join_with_token(room, listener_token)
        await room.promote("lou")
        await room["lou"].close()
        await lou.close()
        events = room.events()
        again = await join_with_token(room, listener_token, role="listener")
        assert room["lou"].role == "listener" and not room["lou"].can_publish
        joined = await drain(events, sfu.ParticipantJoined)
        assert joined.role == "listener"  # type: ignore[attr-defined]
        with pytest.raises(asyncio.TimeoutError):
            await drain(events, sfu.RoleChanged, timeout=0.5)
        await again.close()


async def test_demoting_a_promoted_listener_that_never_took_the_stage_asks_for_no_offer() -> None:
    """Promoted, a listener's client never renegotiated (it has no sending
    line: nothing to drop); demoted again, it is not asked for an offer.
    Promoted once more, its offer with a sending line is a speaker's at once."""
    async with sfu.Server() as server:
        room = server.room("stage")
        events = room.events(accept=lambda e: isinstance(e, sfu.RoleChanged))
        bob = await join(room, "bob", speaker=False)
        carol = await join(room, "carol", speaker=False)
        try:
            assert bob.participant is not None
            await bob.participant.wait_connected(10)
            await room.promote("bob")
            await room.demote("bob")
            await room.promote("bob")
            changes = []
            for _ in range(3):
                event = await events.next(2)
                assert isinstance(event, sfu.RoleChanged) and event.identity == "bob"
                changes.append((event.role, event.renegotiate))
            assert changes == [("speaker", True), ("listener", False), ("speaker", True)]
            await start_speaking(bob)
            assert bob.participant.publisher is not None, "answered as a speaker's"
            await wait_for(lambda: heard_from(carol, bob.csrc) >= 20, 10, "bob heard")
            with pytest.raises(asyncio.TimeoutError):
                await events.next(0.2)  # nothing more is asked of it
        finally:
            await asyncio.gather(bob.close(), carol.close())


async def test_a_moderator_is_never_shut_out_by_a_full_stage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A moderator on a full stage drops and its seat is given away: back
    within MODERATOR_REJOIN_GRACE it is on the stage again, past max_speakers
    (others are still refused). Back later, it joins the audience (past a
    full max_listeners too) and keeps moderating: it frees a seat and takes
    the stage back with promote(itself, role="moderator"), and is heard."""
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("club", max_speakers=2, max_listeners=1)

        def token(identity: str, role: str) -> str:
            return auth.issue_token(SECRET, room="club", identity=identity, role=role)  # type: ignore[arg-type]

        mod = await join_with_token(room, token("mod", "moderator"), speaker=True)
        sam = await join_with_token(room, token("sam", "speaker"), speaker=True)
        lee = await join_with_token(room, token("lee", "listener"))
        clients = [mod, sam, lee]
        try:
            await asyncio.gather(*(c.wait_connected() for c in clients))
            await mod.close()  # its connection drops: the client goes
            await wait_for(lambda: "mod" not in room.participants, 5, "mod gone")
            await room.promote("lee")  # the seat it left is given away: the stage is full
            with pytest.raises(sfu.RoomFull):
                await join_with_token(room, token("sue", "speaker"), speaker=True)

            mod = await join_with_token(room, token("mod", "moderator"), speaker=True)
            clients.append(mod)
            back = room["mod"]
            assert (back.role, back.can_publish, back.is_moderator) == ("moderator", True, True)
            assert len(room.speakers) == 3, "back on the stage, past max_speakers"
            await wait_for(lambda: heard_from(lee, mod.csrc) >= 20, 10, "mod heard again")

            # Gone longer than the grace: the stage is full, so the audience,
            # although max_listeners is reached (lou), still a moderator.
            monkeypatch.setattr(sfu.room, "MODERATOR_REJOIN_GRACE", 0.05)
            lou = await join_with_token(room, token("lou", "listener"))
            clients.append(lou)
            await mod.close()
            await wait_for(lambda: "mod" not in room.participants, 5, "mod gone again")
            await asyncio.sleep(0.1)
            mod = await join_with_token(room, token("mod", "moderator"), speaker=True)
            clients.append(mod)
            seated = room["mod"]
            assert (seated.role, seated.can_publish, seated.is_moderator) == (
                "listener",
                False,
                True,
            )
            assert len(room.listeners) == 2 and len(room.speakers) == 2
            await mod.wait_connected()
            await room.demote("sam", by="mod")  # it moderates from the audience
            events = room.events(accept=lambda e: isinstance(e, sfu.RoleChanged))
            await room.promote("mod", role="moderator", by="mod")  # the freed seat
            changed = await events.next(2)
            assert isinstance(changed, sfu.RoleChanged) and changed.renegotiate
            offer = await make_offer(mod.pc)
            answer = await seated.renegotiate(offer)
            await mod.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            assert seated.role == "moderator" and seated.publisher is not None
            heard = heard_from(lee, mod.csrc)
            await wait_for(lambda: heard_from(lee, mod.csrc) >= heard + 20, 10, "on stage")
        finally:
            await asyncio.gather(*(c.close() for c in clients))


class OldPath:
    """A client's media socket and SRTP sender, kept past its connection's end.

    A modified client removed from a room can go on using the socket it was
    let in on: the same 5-tuple. The socket is a duplicate of aiortc's (the
    same bound port, alive after aiortc closes its own), read here: what the
    server still sends there is seen whatever aiortc's state.
    """

    def __init__(self, client: Client) -> None:
        transport = client.pc.getTransceivers()[0].sender.transport
        pair = next(iter(transport.transport._connection._nominated.values()))
        own = pair.protocol.transport.get_extra_info("socket")
        self.socket = socket.socket(fileno=os.dup(own.fileno()))
        self.server = pair.remote_candidate.host, pair.remote_candidate.port
        self.srtp = transport._tx_srtp
        # Past what it sent: its SRTP sender takes no index twice.
        self.sequence = client.sent[-1][1] + 1000 if client.sent else 0

    def srtp_received(self) -> int:
        """SRTP/SRTCP datagrams (RFC 7983: first byte 128..191) now waiting on the socket."""
        count = 0
        self.socket.setblocking(False)
        while True:
            try:
                data = self.socket.recv(2048)
            except BlockingIOError:
                return count
            count += 127 < data[0] < 192

    def send_voice(self, ssrc: int, packets: int) -> None:
        for _ in range(packets):
            packet = RtpPacket(
                payload_type=96,  # aiortc's Opus
                sequence_number=self.sequence & 0xFFFF,
                timestamp=(960 * self.sequence) & 0xFFFFFFFF,
                ssrc=ssrc,
            )
            packet.payload = b"\xfc" + secrets.token_bytes(60)
            self.socket.sendto(self.srtp.protect(packet.serialize()), self.server)
            self.sequence += 1

    def close(self) -> None:
        self.socket.close()


async def test_a_removed_member_neither_hears_nor_is_heard_on_its_old_path() -> None:
    """Removed, a speaker that keeps sending SRTP from the socket it was let
    in on (its keys still good) reaches nobody, and nothing of the room's
    audio reaches the sockets of removed listeners, slot or mix."""
    async with sfu.Server() as server:
        room = server.room("after")
        alice = await join(room, "alice", speaker=True, frequency=440)
        mallory = await join(room, "mallory", speaker=True, frequency=880)
        eve = await join(room, "eve", speaker=False)
        mixed_eve = await join(room, "eve-mixed", speaker=False, slots=1)
        bob = await join(room, "bob", speaker=False)
        clients = [alice, mallory, eve, mixed_eve, bob]
        paths: list[OldPath] = []
        try:
            await wait_for(
                lambda: (
                    heard_from(bob, mallory.csrc) >= 20
                    and len(eve.packets(0)) >= 20
                    and mixed_eve.total_received() >= 20
                ),
                15,
                "everyone hears the speakers",
            )
            ssrc = mallory.sent_ssrc
            assert ssrc is not None
            paths = [OldPath(client) for client in (mallory, eve, mixed_eve)]
            assert mallory.participant is not None
            number = mallory.participant.number
            for member in ("mallory", "eve", "eve-mixed"):
                await room.remove(member, "trolling")
            assert number not in room.router.detector.holders(), "its slot is not freed"
            await asyncio.sleep(0.2)  # what was on its way has arrived
            for path in paths:
                path.srtp_received()
            heard = heard_from(bob, mallory.csrc)
            bob_before = len(bob.packets(0))
            for _ in range(25):
                paths[0].send_voice(ssrc, 2)
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            assert heard_from(bob, mallory.csrc) == heard, "the removed speaker was heard"
            assert len(bob.packets(0)) > bob_before, "alice is still heard"
            assert server.drops["srtp from unchecked address"] >= 50
            assert [path.srtp_received() for path in paths[1:]] == [0, 0], (
                "room audio reached a removed listener's socket"
            )
        finally:
            for path in paths:
                path.close()
            await asyncio.gather(*(client.close() for client in clients))


def go_silent(client: Client) -> None:
    """Nothing more leaves the client's ICE sockets (no checks, RTP or RTCP):
    a client that vanished, as the server sees it."""
    transport = client.pc.getTransceivers()[0].sender.transport
    for protocol in transport.transport._connection._protocols:

        async def send_data(data: bytes, addr: tuple[str, int]) -> None:
            return None

        protocol.send_data = send_data  # type: ignore[method-assign]
        protocol.send_stun = lambda message, addr: None  # type: ignore[method-assign]


async def test_a_member_whose_consent_expired_gets_nothing_when_its_client_comes_back() -> None:
    """A speaker and a listener go silent until their consent expires: their
    sessions close. When their clients send again on the same 5-tuple (SRTP
    with keys still good), the speaker is heard by nobody and nothing of the
    room reaches either socket: consent, once lost, is not regained."""
    async with sfu.Server(consent_timeout=2.0) as server:
        room = server.room("lapse")
        alice = await join(room, "alice", speaker=True, frequency=440)
        mallory = await join(room, "mallory", speaker=True, frequency=880)
        eve = await join(room, "eve", speaker=False)
        bob = await join(room, "bob", speaker=False)
        clients = [alice, mallory, eve, bob]
        paths: list[OldPath] = []
        try:
            await wait_for(
                lambda: heard_from(bob, mallory.csrc) >= 20 and len(eve.packets(0)) >= 20,
                15,
                "everyone hears the speakers",
            )
            ssrc = mallory.sent_ssrc
            assert ssrc is not None and mallory.participant and eve.participant
            paths = [OldPath(client) for client in (mallory, eve)]
            for client in (mallory, eve):
                go_silent(client)
            await wait_for(
                lambda: mallory.participant.closed and eve.participant.closed,  # type: ignore[union-attr]
                8,
                "consent expires",
            )
            assert "consent" in (eve.participant.close_reason or "")
            await asyncio.sleep(0.2)  # what was on its way has arrived
            for path in paths:
                path.srtp_received()
            heard = heard_from(bob, mallory.csrc)
            bob_before = len(bob.packets(0))
            for _ in range(25):
                paths[0].send_voice(ssrc, 2)
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            assert heard_from(bob, mallory.csrc) == heard, "a lapsed speaker was heard"
            assert len(bob.packets(0)) > bob_before, "alice is still heard"
            assert [path.srtp_received() for path in paths] == [0, 0], (
                "room audio reached a lapsed member's socket"
            )
        finally:
            for path in paths:
                path.close()
            await asyncio.gather(*(client.close() for client in clients))


async def test_a_moderator_stepped_down_to_speaker_keeps_the_stage_and_is_still_heard() -> None:
    """``demote(role="speaker")`` takes only the ``moderate`` grant: the
    member stays on the stage, heard, asked for no new offer; it may no
    longer moderate. The grant stays gone when it rejoins, and nothing else
    is decided for it: its moderator's token brings it back a speaker, a
    listener's token a listener. ``promote(role="moderator")`` gives the
    grant again."""

    async def role_changes(events: sfu.EventStream, seconds: float) -> list[sfu.RoomEvent]:
        seen: list[sfu.RoomEvent] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = await events.next(left)
            except asyncio.TimeoutError:
                break
            if isinstance(event, sfu.RoleChanged):
                seen.append(event)
        return seen

    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("panel")
        events = room.events()
        mod_token = auth.issue_token(SECRET, room="panel", identity="mia", role="moderator")
        listener_token = auth.issue_token(SECRET, room="panel", identity="mia", role="listener")
        mia = await join_with_token(room, mod_token, speaker=True)
        lou = await join(room, "lou", speaker=False)
        try:
            member = room["mia"]
            await member.wait_connected(10)
            await wait_for(lambda: heard_from(lou, member.csrc) >= 10, 10, "mia heard")
            # Not a role demote() steps down to; nothing changed.
            with pytest.raises(sfu.InvalidSetting, match="'listener' or 'speaker'"):
                await room.demote("mia", role="moderator")
            assert member.is_moderator

            assert await room.demote("mia", role="speaker", by="mia") is member
            assert member.role == "speaker" and not member.is_moderator and member.can_publish
            changed = await drain(events, sfu.RoleChanged)
            assert changed == sfu.RoleChanged(
                "panel", "mia", "speaker", "mia", renegotiate=False, moderates=False
            )
            heard = heard_from(lou, member.csrc)
            await wait_for(lambda: heard_from(lou, member.csrc) > heard + 10, 5, "still heard")
            with pytest.raises(sfu.NotAllowed):
                await room.mute("lou", by="mia")
            # A speaker has no grant to take: nothing changes, nothing is told.
            assert await room.demote("mia", role="speaker") is member
            assert member.role == "speaker"
            assert await role_changes(events, 0.3) == []

            await mia.close()
            await wait_for(lambda: "mia" not in room.participants, 5, "mia gone")
            mia = await join_with_token(room, listener_token)
            assert room["mia"].role == "listener" and not room["mia"].can_publish
            await room["mia"].close("left")  # as the signaling's `leave` does
            await mia.close()
            mia = await join_with_token(room, mod_token, speaker=True)
            back = room["mia"]
            assert back.role == "speaker" and not back.is_moderator and back.can_publish

            await room.promote("mia", role="moderator")
            assert back.role == "moderator" and back.is_moderator
        finally:
            await asyncio.gather(mia.close(), lou.close())


async def test_a_moderator_seated_in_the_audience_is_not_stepped_down_to_speaker() -> None:
    """Stepping down to speaker keeps a moderator on the stage; one in the
    audience (a listener holding ``moderate``) is refused, unchanged, and
    ``demote()`` to listener takes its grant."""
    async with sfu.Server(token_secret=SECRET) as server:
        room = server.room("panel")
        token = auth.issue_token(SECRET, room="panel", identity="mod", role="moderator")
        mod = await join_with_token(room, token, role="listener")
        try:
            member = room["mod"]
            assert member.role == "listener" and member.is_moderator
            with pytest.raises(sfu.InvalidSetting, match="moderates without speaking"):
                await room.demote("mod", role="speaker")
            assert member.role == "listener" and member.is_moderator
            await room.demote("mod")
            assert not member.is_moderator
        finally:
            await mod.close()
