"""The shared port under bad input: checks, unchecked addresses, garbage, consent."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import Iterator

import aioice
import pytest
from aioice import stun
from aiortc import RTCSessionDescription

import sfu

from ..clients import close_peer, join, wait_for
from ..test_room_lifecycle import FINGERPRINT, LISTENER, PWD, UFRAG, offer
from .test_ice import raw_attributes, signed_request


def answer_credentials(answer: str) -> tuple[str, str]:
    ufrag = re.search(r"a=ice-ufrag:(\S+)", answer)
    pwd = re.search(r"a=ice-pwd:(\S+)", answer)
    assert ufrag and pwd
    return ufrag.group(1), pwd.group(1)


def offer_ufrag(offer: str) -> str:
    match = re.search(r"a=ice-ufrag:(\S+)", offer)
    assert match
    return match.group(1)


def binding_request(
    server_ufrag: str, client_ufrag: str, pwd: str, *, use_candidate: bool = True
) -> bytes:
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{server_ufrag}:{client_ufrag}"
    request.attributes["PRIORITY"] = 1853824767
    request.attributes["ICE-CONTROLLING"] = 1
    if use_candidate:
        request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(pwd.encode())
    return bytes(request)


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    yield sock
    sock.close()


async def recv(sock: socket.socket) -> bytes:
    return await asyncio.get_running_loop().run_in_executor(None, sock.recv, 2048)


async def test_binding_request_answered_only_with_right_credentials(udp: socket.socket) -> None:
    async with sfu.Server() as server:
        room = server.room("ice")
        # A real offer from an aiortc client, so the session exists; we then speak STUN by hand.
        client = await join(room, "raw", speaker=False)
        await close_peer(client.pc)  # its own agent stays quiet from now on
        participant = client.participant
        assert participant is not None
        server_ufrag, pwd = answer_credentials(participant.answer)
        client_ufrag = participant.session.remote_ufrag if participant.session else ""
        target = ("127.0.0.1", server.port)

        udp.sendto(
            binding_request(server_ufrag, client_ufrag, "wrong-password-wrong-password"), target
        )
        udp.sendto(binding_request(server_ufrag, "nope", pwd), target)
        udp.sendto(binding_request("unknown1", client_ufrag, pwd), target)
        udp.sendto(os.urandom(64)[:1] + b"\x01" + os.urandom(40), target)  # STUN-looking garbage
        await wait_for(
            lambda: server.drops["stun bad credentials"] == 2, 2, "two credential failures"
        )
        assert server.drops["stun unknown ufrag"] == 1
        with pytest.raises(TimeoutError):
            udp.settimeout(0.3)
            udp.recv(2048)

        udp.settimeout(2)
        udp.sendto(binding_request(server_ufrag, client_ufrag, pwd), target)
        response = stun.parse_message(await recv(udp))
        assert response.message_class == stun.Class.RESPONSE
        assert response.attributes["XOR-MAPPED-ADDRESS"] == udp.getsockname()
        assert response.check_message_integrity(pwd.encode())
        assert "FINGERPRINT" in response.attributes


async def test_unchecked_addresses_and_garbage_do_not_disturb_a_listener(
    udp: socket.socket,
) -> None:
    async with sfu.Server() as server:
        room = server.room("noisy")
        speaker = await join(room, "alice", speaker=True)
        listener = await join(room, "bob", speaker=False)
        try:
            await wait_for(lambda: len(listener.packets(0)) >= 10, 15, "audio at the listener")
            target = ("127.0.0.1", server.port)
            dtls_hello = bytes([22, 0xFE, 0xFD]) + os.urandom(60)
            rtp = bytes([0x80, 111]) + os.urandom(100)
            rtcp = bytes([0x80, 200]) + os.urandom(30)
            for _ in range(50):
                udp.sendto(dtls_hello, target)
                udp.sendto(rtp, target)
                udp.sendto(rtcp, target)
                udp.sendto(os.urandom(80), target)
                udp.sendto(b"", target)
            await wait_for(
                lambda: server.drops["dtls from unchecked address"] >= 50, 5, "dtls drops"
            )
            await wait_for(
                lambda: server.drops["srtp from unchecked address"] >= 100, 5, "srtp drops"
            )
            before = len(listener.packets(0))
            await asyncio.sleep(0.6)
            assert len(listener.packets(0)) >= before + 20, "the listener stopped receiving"
            assert listener.participant is not None and listener.participant.connected
        finally:
            await asyncio.gather(speaker.close(), listener.close())


async def test_a_check_with_an_unknown_required_attribute_gets_a_420(udp: socket.socket) -> None:
    """RFC 8489 6.3.1.1: an authenticated check the server cannot fully
    understand is answered with a signed 420 naming the attribute, and its
    address is not taken."""
    async with sfu.Server() as server:
        participant = await server.room("strict").add_listener(LISTENER, "dave")
        server_ufrag, pwd = answer_credentials(participant.answer)
        request = signed_request((0x7777, b"?"), username=f"{server_ufrag}:{UFRAG}", pwd=pwd)
        udp.sendto(request, ("127.0.0.1", server.port))
        data = await recv(udp)
        response = stun.parse_message(data)
        assert response.message_class == stun.Class.ERROR
        assert response.transaction_id == request[8:20]
        assert response.attributes["ERROR-CODE"] == (420, "Unknown Attribute")
        assert raw_attributes(data)[0x000A] == b"\x77\x77"
        assert response.check_message_integrity(pwd.encode())
        assert participant.session is not None and participant.session.address is None


async def test_session_without_consent_is_closed(udp: socket.socket) -> None:
    async with sfu.Server(consent_timeout=1.0) as server:
        room = server.room("consent")
        events = room.events()
        client = await join(room, "ghost", speaker=False)
        await close_peer(client.pc)
        participant = client.participant
        assert participant is not None
        server_ufrag, pwd = answer_credentials(participant.answer)
        assert participant.session is not None
        udp.sendto(
            binding_request(server_ufrag, participant.session.remote_ufrag, pwd),
            ("127.0.0.1", server.port),
        )
        await recv(udp)
        await asyncio.wait_for(participant.wait_closed(), 5)
        # Checked, never connected: at consent's timeout (the shorter), told
        # and counted as a handshake that timed out.
        assert participant.close_reason is not None
        assert participant.close_reason.startswith("handshake timed out"), participant.close_reason
        assert server.handshakes_timed_out == 1
        assert list(server.sessions()) == []
        kinds: list[str] = []
        while len(kinds) < 2:
            event = await events.next(1)
            if not isinstance(event, sfu.RosterChanged):
                kinds.append(type(event).__name__)
        assert kinds == ["ParticipantJoined", "ParticipantLeft"]


async def test_a_join_whose_client_never_checks_ends_at_the_handshake_timeout() -> None:
    """A join whose client sends no ICE check (gone, or its UDP blocked) must
    give its seat back after ``handshake_timeout``, as one whose handshake
    stalls does, not after the (longer) consent timeout."""
    async with sfu.Server(handshake_timeout=1.0, consent_timeout=30.0) as server:
        room = server.room("silent", max_listeners=1)
        participant = await room.join(LISTENER, identity="ghost")
        assert participant.session is not None and participant.session.state == "new"
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(participant.wait_closed(), 5)
        assert asyncio.get_running_loop().time() - started < 3
        assert participant.close_reason is not None
        assert "handshake" in participant.close_reason, participant.close_reason
        assert list(server.sessions()) == []
        await room.join(LISTENER, identity="next")  # the seat is free again


async def test_a_join_whose_checks_carry_the_wrong_password_says_so_when_it_times_out(
    udp: socket.socket,
) -> None:
    """Checks that name the session but fail its password (the client applied
    another join's answer, or the SDP was changed on the way) are not "no ICE
    check": the reason says they came, so the operator looks at the
    signaling rather than at firewalls."""
    async with sfu.Server(handshake_timeout=1.0, consent_timeout=30.0) as server:
        room = server.room("mixed-up")
        participant = await room.join(LISTENER, identity="mixed")
        server_ufrag, _ = answer_credentials(participant.answer)
        for _ in range(3):
            udp.sendto(
                binding_request(server_ufrag, UFRAG, "not-the-password-0123"),
                ("127.0.0.1", server.port),
            )
        await wait_for(lambda: server.drops["stun bad credentials"] >= 3, 5, "the checks read")
        await asyncio.wait_for(participant.wait_closed(), 5)
        assert participant.close_reason is not None
        assert "3 ICE checks came with the wrong credentials" in participant.close_reason, (
            participant.close_reason
        )


async def test_forged_rtp_claiming_a_speakers_ssrc_is_dropped(udp: socket.socket) -> None:
    async with sfu.Server() as server:
        room = server.room("forged")
        speaker = await join(room, "alice", speaker=True)
        listener = await join(room, "bob", speaker=False)
        try:
            await wait_for(lambda: len(listener.packets(0)) >= 5, 15, "audio")
            assert speaker.participant is not None and speaker.participant.session is not None
            address = speaker.participant.session.address
            assert address is not None
            # Forge packets *from another port* claiming the speaker's SSRC: never forwarded.
            forged = (
                bytes([0x80, 111, 0, 1, 0, 0, 0, 1])
                + (speaker.sent_ssrc or 0).to_bytes(4, "big")
                + b"x" * 60
            )
            for _ in range(20):
                udp.sendto(forged, ("127.0.0.1", server.port))
            await wait_for(lambda: server.drops["srtp from unchecked address"] >= 20, 5, "drops")
            assert all(p.payload != b"x" * 60 for p in listener.packets(0))
        finally:
            await asyncio.gather(speaker.close(), listener.close())


async def test_one_client_cannot_fill_the_handshake_backlog(udp: socket.socket) -> None:
    """A checked client flooding DTLS datagrams gets its share, not the whole backlog."""
    from sfu.transport.handshakes import MAX_HANDSHAKE_QUEUED_PER_SESSION

    async with sfu.Server() as server:
        room = server.room("flood")
        participant = await room.add_listener(LISTENER, "flooder")
        server_ufrag, pwd = answer_credentials(participant.answer)
        udp.sendto(binding_request(server_ufrag, UFRAG, pwd), ("127.0.0.1", server.port))
        await recv(udp)  # checked: its DTLS is now read
        # Records of a future epoch: DTLS discards them quietly (RFC 6347 section
        # 4.1), so the session lives on while each costs the server a look.
        hello = bytes([22, 0xFE, 0xFD, 0, 2, 0, 0, 0, 0, 0, 0, 0, 4]) + b"junk"
        # As one batch read hands them over (uvloop reads many datagrams per
        # wake-up; the default loop reads one, which a flood cannot outpace).
        address = udp.getsockname()
        for _ in range(200):
            server._datagram_received(hello, address)
        assert len(server.handshakes.backlog) == MAX_HANDSHAKE_QUEUED_PER_SESSION
        over = 200 - MAX_HANDSHAKE_QUEUED_PER_SESSION
        assert server.drops["dtls handshake datagrams over the session's share"] == over
        await wait_for(lambda: not server.handshakes.backlog, 5, "the backlog worked off")
        assert not participant.closed, "quietly discarded records do not end the session"


async def test_a_client_cannot_make_the_server_keep_streams_for_many_ssrcs() -> None:
    """libsrtp keeps a stream per authenticated SSRC: a client gets a bounded number."""
    from aiortc.rtp import RtpPacket

    from sfu.transport.session import MAX_INBOUND_SSRCS

    async with sfu.Server() as server:
        room = server.room("ssrcs")
        client = await join(room, "many", speaker=True, frequency=440)
        try:
            assert client.participant is not None
            await client.participant.wait_connected(10)
            await client.wait_connected(10)
            transport = client.pc.getTransceivers()[0].sender.transport
            for ssrc in range(1000, 1000 + MAX_INBOUND_SSRCS + 20):
                rtp = RtpPacket(payload_type=111, sequence_number=1, timestamp=960, ssrc=ssrc)
                rtp.payload = b"\xfc" + b"x" * 40
                await transport._send_rtp(rtp.serialize())
            await wait_for(
                lambda: server.drops["srtp from too many ssrcs"] >= 20, 5, "extra SSRCs refused"
            )
            session = client.participant.session
            assert session is not None and len(session.inbound_ssrcs) == MAX_INBOUND_SSRCS
        finally:
            await client.close()


async def test_a_listener_with_every_slot_promoted_on_a_new_line_is_heard() -> None:
    """The most lines a room answers (16 slots) each report from an SSRC of
    their own, and a listener promoted on a new sending line (a client may
    add one rather than turn a receiving line round) sends from one more:
    none of them is refused."""
    from sfu.media.opus import FRAME_SAMPLES, SILENCE_MONO
    from sfu.media.router import Publisher
    from sfu.policy import MAX_SLOTS

    from ..clients import ToneTrack, make_offer
    from ..media.test_streams_given_back import speaker_packet

    async with sfu.Server() as server:
        room = server.room("lines", slots=MAX_SLOTS)
        client = await join(room, "lis", speaker=False, slots=MAX_SLOTS)
        try:
            participant = client.participant
            assert participant is not None and participant.slot_count == MAX_SLOTS
            await participant.wait_connected(10)
            await client.wait_connected(10)
            session = participant.session
            assert session is not None
            # A full stage, straight into the Router: every line gets audio,
            # so the client's receivers all send reports, each from its SSRC.
            stage = [
                Publisher(number=10_000 + n, payload_type=111, audio_level_id=1)
                for n in range(MAX_SLOTS)
            ]
            for publisher in stage:
                room.router.add_publisher(publisher)
            loop = asyncio.get_running_loop()
            for index in range(100):
                for publisher in stage:
                    packet = speaker_packet(publisher.number, index, SILENCE_MONO)
                    room.router.forward(publisher, packet, loop.time())
                await asyncio.sleep(FRAME_SAMPLES / 48000)
            assert all(client.packets(line) for line in range(MAX_SLOTS)), "every line heard"
            await wait_for(
                lambda: len(session.inbound_ssrcs) >= MAX_SLOTS, 10, "reports from every line"
            )

            await room.promote("lis")
            client.pc.addTransceiver(ToneTrack(440), direction="sendonly")
            answer = await participant.renegotiate(await make_offer(client.pc))
            await client.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await wait_for(
                lambda: participant.stats()["inbound"]["packets_received"] >= 25,
                10,
                "the promoted listener's voice",
            )
            assert len(session.inbound_ssrcs) == MAX_SLOTS + 1
            assert server.drops["srtp from too many ssrcs"] == 0
        finally:
            await client.close()


async def test_checks_from_elsewhere_do_not_keep_the_selected_address_alive() -> None:
    """Consent is for the address media goes to (RFC 7675): a client that had it
    sent to one address (one spoofed check with USE-CANDIDATE would do) and
    keeps consent only from another loses the session, not the victim its flood."""
    async with sfu.Server(consent_timeout=1.0) as server:
        participant = await server.room("r").add_listener(offer("recvonly"), "lee")
        session = participant.session
        assert session is not None
        server_ufrag, pwd = answer_credentials(participant.answer)
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as keeper,
        ):
            target.bind(("127.0.0.1", 0))
            keeper.bind(("127.0.0.1", 0))
            target.sendto(binding_request(server_ufrag, UFRAG, pwd), ("127.0.0.1", server.port))
            await wait_for(lambda: session.address == target.getsockname(), 2, "selected")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 3.0
            while loop.time() < deadline and not participant.closed:
                keeper.sendto(  # consent checks, but from another address
                    binding_request(server_ufrag, UFRAG, pwd, use_candidate=False),
                    ("127.0.0.1", server.port),
                )
                await asyncio.sleep(0.2)
        # (Never connected: the close is a handshake that timed out at
        # consent's timeout; test_consent_and_proofs has connected sessions.)
        assert participant.closed
        assert (participant.close_reason or "").startswith("handshake timed out")


async def test_a_session_remembers_a_bounded_number_of_addresses() -> None:
    from sfu.transport.session import MAX_CHECKED_ADDRESSES

    async with sfu.Server() as server:
        participant = await server.room("r").add_listener(offer("recvonly"), "lee")
        session = participant.session
        assert session is not None
        server_ufrag, pwd = answer_credentials(participant.answer)
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(20)]
        try:
            for index, sock in enumerate(sockets):
                sock.bind(("127.0.0.1", 0))
                request = binding_request(server_ufrag, UFRAG, pwd, use_candidate=index == 0)
                sock.sendto(request, ("127.0.0.1", server.port))
            await wait_for(lambda: server.packets_in >= 20, 2, "the checks to arrive")
            await asyncio.sleep(0.05)
            assert len(session.checked_addresses) == MAX_CHECKED_ADDRESSES
            assert session.address == sockets[0].getsockname(), "the one in use is kept"
            assert session.address in session.checked_addresses
            mapped = [a for a, s in server._sessions_by_address.items() if s is session]
            assert sorted(mapped) == sorted(session.checked_addresses)
        finally:
            for sock in sockets:
                sock.close()


async def test_a_failing_room_does_not_stop_the_other_rooms_timers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in one room's periodic work (here its stage check raises) must
    not skip every other room's and session's timers: a session that never
    connects in another room is still ended."""
    async with sfu.Server(consent_timeout=0.5) as server:
        broken = server.room("broken")

        def fails(now: float) -> None:
            raise RuntimeError("a bug in one room")

        monkeypatch.setattr(broken, "_check_stage", fails)
        monkeypatch.setattr(broken, "_tick", fails)
        ghost = await server.room("other").add_listener(LISTENER, "ghost")  # never connects
        await asyncio.wait_for(ghost.wait_closed(), 5)
        assert list(server.sessions()) == []


async def test_control_datagrams_are_dropped_and_counted_when_the_socket_is_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """STUN, DTLS and RTCP go straight to the socket: on a full send buffer they
    are dropped and counted like the fan-out's packets, not queued without
    bound in the transport (loopback cannot fill it: a stand-in raises)."""
    import errno

    class FullSocket:
        def __init__(self) -> None:
            self.errors = [BlockingIOError(errno.EAGAIN, "full"), OSError(errno.ENOBUFS, "none")]

        def sendto(self, data: bytes, address: tuple[str, int]) -> int:
            raise self.errors.pop(0)

    async with sfu.Server() as server:
        monkeypatch.setattr(server, "_socket", FullSocket())
        server._send(b"x" * 100, ("127.0.0.1", 9))
        server._send(b"x" * 100, ("127.0.0.1", 9))
        monkeypatch.undo()
        assert server.stats()["drops"] == {
            "control datagram: socket buffer full": 2,
        }


def proof_answer(request: bytes, client_pwd: str) -> bytes:
    """The client's success response to a server proof, as a full ICE agent sends it."""
    message = stun.parse_message(request)
    assert message.message_class == stun.Class.REQUEST
    assert "ICE-CONTROLLED" in message.attributes and "PRIORITY" in message.attributes
    assert message.check_message_integrity(client_pwd.encode())
    response = stun.Message(
        stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=message.transaction_id
    )
    response.attributes["XOR-MAPPED-ADDRESS"] = ("127.0.0.1", 9)
    response.add_message_integrity(client_pwd.encode())
    response.add_fingerprint()
    return bytes(response)


def datagrams(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    received = []
    while True:
        try:
            received.append(sock.recv(2048))
        except BlockingIOError:
            return received


async def test_a_forged_check_does_not_send_a_connected_members_audio_elsewhere() -> None:
    """A member holds its own ICE credentials, so it can forge a check with
    USE-CANDIDATE from any address: the server proves the address with a
    check of its own first, and only an answer from there (which only a
    client at that address can sign) moves the stream."""
    async with sfu.Server() as server:
        room = server.room("r")
        speaker = await join(room, "alice", speaker=True)
        mallory = await join(room, "mallory", speaker=False)
        try:
            await wait_for(lambda: len(mallory.packets(0)) >= 5, 15, "audio at mallory")
            participant = mallory.participant
            assert participant is not None and participant.session is not None
            session = participant.session
            server_ufrag, pwd = answer_credentials(participant.answer)
            real = session.address
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as victim:
                victim.bind(("127.0.0.1", 0))
                forged = binding_request(server_ufrag, session.remote_ufrag, pwd)
                victim.sendto(forged, ("127.0.0.1", server.port))  # "from" the victim
                await asyncio.sleep(0.5)
                received = datagrams(victim)
                assert session.address == real, "not moved on the forged check's word"
                assert received, "the server asks the address"
                assert all(d[0] < 4 for d in received), "STUN only: no audio to the victim"
                proofs = [d for d in received if d[:2] == b"\x00\x01"]  # binding requests
                assert len({d[8:20] for d in proofs}) == 1, "one transaction"
                # An answer not signed with the client's password proves nothing.
                unsigned = stun.Message(
                    stun.Method.BINDING,
                    stun.Class.RESPONSE,
                    transaction_id=stun.parse_message(proofs[0]).transaction_id,
                )
                unsigned.add_message_integrity(b"not-the-client-password-1234")
                victim.sendto(bytes(unsigned), server_addr(server))
                before = len(mallory.packets(0))
                await asyncio.sleep(0.3)
                assert session.address == real
                assert len(mallory.packets(0)) > before, "the member's own audio goes on"
                # The client really at that address answers: now it moves there.
                victim.sendto(proof_answer(proofs[0], session.remote_pwd), server_addr(server))
                await wait_for(lambda: session.address == victim.getsockname(), 2, "moved")
                await wait_for(
                    lambda: any(128 <= d[0] < 192 for d in datagrams(victim)), 3, "audio there"
                )
        finally:
            await asyncio.gather(speaker.close(), mallory.close())


def server_addr(server: sfu.Server) -> tuple[str, int]:
    return ("127.0.0.1", server.port)


async def test_a_forged_check_does_not_take_another_members_address() -> None:
    """Mallory forges a check from Bob's address with her own credentials:
    Bob's packets must still reach Bob's session (his audio stays heard)."""
    async with sfu.Server() as server:
        room = server.room("r")
        bob = await join(room, "bob", speaker=True)
        mallory = await join(room, "mallory", speaker=False)
        try:
            await wait_for(lambda: len(mallory.packets(0)) >= 5, 15, "bob heard")
            assert bob.participant is not None and bob.participant.session is not None
            assert mallory.participant is not None and mallory.participant.session is not None
            bob_address = bob.participant.session.address
            assert bob_address is not None
            session = mallory.participant.session
            server_ufrag, pwd = answer_credentials(mallory.participant.answer)
            forged = binding_request(server_ufrag, session.remote_ufrag, pwd)
            # The forged source: Bob's own port (a raw socket cannot bind it, so the
            # datagram is handed to the server as if it came from there).
            server._datagram_received(forged, bob_address)
            assert server._sessions_by_address[bob_address] is bob.participant.session
            before = len(mallory.packets(0))
            await asyncio.sleep(0.5)
            assert len(mallory.packets(0)) >= before + 10, "bob is still heard"
        finally:
            await asyncio.gather(bob.close(), mallory.close())


async def test_once_the_first_flight_went_out_a_move_is_proven_first() -> None:
    """A client could read the server's first flight at its own address,
    move the session to a victim's with a forged check and finish the
    handshake from its own (also via a flight sent to the victim first and
    a move back): once a flight went out, moving needs a proof, re-sent
    until answered or 2 s pass; the nominated address is taken when it is."""
    from .test_dtls import Client

    client = Client()
    async with sfu.Server() as server:
        offered = LISTENER.replace(FINGERPRINT, client.fingerprints[0][1])
        participant = await server.room("r").add_listener(offered, "mallory")
        session = participant.session
        assert session is not None
        server_ufrag, pwd = answer_credentials(participant.answer)
        loop = asyncio.get_running_loop()
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as real,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as victim,
        ):
            real.bind(("127.0.0.1", 0))
            victim.bind(("127.0.0.1", 0))
            real.settimeout(2)
            real.sendto(binding_request(server_ufrag, UFRAG, pwd), server_addr(server))
            assert (await loop.run_in_executor(None, real.recv, 2048))[0] < 4
            for datagram in client.start():
                real.sendto(datagram, server_addr(server))
            flight = [await loop.run_in_executor(None, real.recv, 2048)]
            await asyncio.sleep(0.2)
            flight += datagrams(real)
            assert all(19 < d[0] < 64 for d in flight), "the server's first flight"
            victim.sendto(binding_request(server_ufrag, UFRAG, pwd), server_addr(server))
            await asyncio.sleep(1.2)
            assert session.address == real.getsockname(), "not moved on the check's word"
            proofs = [d for d in datagrams(victim) if d[:2] == b"\x00\x01"]
            assert len(proofs) >= 2, "an unanswered proof is sent again"
            assert len({d[8:20] for d in proofs}) == 1, "as one STUN transaction"
            for datagram in client.receive(flight):
                real.sendto(datagram, server_addr(server))
            await wait_for(lambda: session.state == "connected", 3, "connected")
            assert session.address == real.getsockname(), "media starts where it was read"
            # The nominated address answers (the next check asks again, the
            # first proof having run out): now the session moves there.
            await wait_for(lambda: not server._proofs, 5, "the first proof to run out")
            victim.sendto(
                binding_request(server_ufrag, UFRAG, pwd, use_candidate=False),
                server_addr(server),
            )
            await asyncio.sleep(0.1)
            proofs = [d for d in datagrams(victim) if d[:2] == b"\x00\x01"]
            assert proofs, "asked again on the next check"
            victim.sendto(proof_answer(proofs[-1], session.remote_pwd), server_addr(server))
            await wait_for(lambda: session.address == victim.getsockname(), 2, "moved")


async def test_a_new_session_that_proves_an_old_sessions_address_ends_the_old_one() -> None:
    """A client reconnecting from the same port (or a NAT mapping given to
    someone else): once the new session's proof is answered from there, the
    old session's client is gone, and its stream stops at once instead of
    going on until its consent runs out."""
    async with sfu.Server(consent_timeout=30.0) as server:
        room = server.room("r")
        old = await room.add_listener(offer("recvonly"), "old")
        new = await room.add_listener(offer("recvonly").replace(UFRAG, "Yq7w"), "new")
        old_session, new_session = old.session, new.session
        assert old_session is not None and new_session is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as port:
            port.bind(("127.0.0.1", 0))
            old_ufrag, old_pwd = answer_credentials(old.answer)
            port.sendto(binding_request(old_ufrag, UFRAG, old_pwd), server_addr(server))
            await wait_for(lambda: old_session.address == port.getsockname(), 2, "old selected")
            new_ufrag, new_pwd = answer_credentials(new.answer)
            port.sendto(binding_request(new_ufrag, "Yq7w", new_pwd), server_addr(server))
            await asyncio.sleep(0.1)
            assert not old.closed and new_session.address is None, "not on a check's word"
            proofs = [d for d in datagrams(port) if d[:2] == b"\x00\x01"]
            assert proofs
            port.sendto(proof_answer(proofs[-1], new_session.remote_pwd), server_addr(server))
            await wait_for(lambda: old.closed, 2, "the old session ended")
            assert new_session.address == port.getsockname()
            assert server._sessions_by_address[port.getsockname()] is new_session


async def test_a_client_that_believes_itself_controlled_is_told_to_nominate() -> None:
    """RFC 8445 6.1.1 and 7.3.1.1: the ICE-lite server is always the controlled
    agent. A full agent that starts controlled too (ICE-CONTROLLED in its
    checks) gets a signed 487 Role Conflict, switches to controlling and
    nominates; answered with success it would wait for a nomination forever."""
    agent = aioice.Connection(ice_controlling=False, components=1)
    await agent.gather_candidates()
    client_offer = (
        offer("recvonly").replace(UFRAG, agent.local_username).replace(PWD, agent.local_password)
    )
    try:
        async with sfu.Server() as server:
            participant = await server.room("roles").add_listener(client_offer, "carol")
            agent.remote_username, agent.remote_password = answer_credentials(participant.answer)
            agent.remote_is_lite = True
            line = re.search(r"a=candidate:(\S.*)", participant.answer)
            assert line
            await agent.add_remote_candidate(aioice.Candidate.from_sdp(line.group(1).strip()))
            await agent.add_remote_candidate(None)
            await asyncio.wait_for(agent.connect(), 5)
            assert agent.ice_controlling, "the 487 made the client the controlling agent"
            assert server.drops["stun check refused with 487"] >= 1
            session = participant.session
            assert session is not None
            local = agent.local_candidates[0]
            assert session.address == (local.host, local.port)
    finally:
        await agent.close()


async def test_a_new_session_never_takes_a_live_sessions_ufrag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sessions are found by their ufrag (48 random bits): a new one drawn
    equal to a live session's would replace it in the server's table, and
    that session's checks, so its consent, would go to the newcomer."""
    from sfu.transport.ice import IceCredentials

    drawn = iter(["sameufrg", "sameufrg", "otherufr"])
    monkeypatch.setattr(
        IceCredentials, "generate", classmethod(lambda cls: cls(next(drawn), "p" * 32))
    )
    async with sfu.Server(host="127.0.0.1") as server:
        room = server.room("r")
        first = await room.add_listener(LISTENER, "ada")
        second = await room.add_listener(LISTENER, "bob")
        assert first.session is not None and second.session is not None
        assert first.session.credentials.ufrag == "sameufrg"
        assert second.session.credentials.ufrag == "otherufr"
        assert set(server.sessions()) == {first.session, second.session}
