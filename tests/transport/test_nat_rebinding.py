"""A NAT rebinding mid-session: the client's public port changes.

A loopback UDP relay stands for the NAT: the client talks to its inside port
(the answer's candidate is rewritten to it), the relay forwards from an
outside port to the server. Rebinding moves the outside port. The client's
consent checks (aioice's, like browsers') carry no USE-CANDIDATE, so only
the server noticing the old path go quiet can move the media to the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

import sfu
from sfu.transport import session as session_module
from sfu.transport.session import Session

from ..clients import Client, _record_received, close_peer, join, make_offer, wait_for
from ..conftest import client_configuration
from ..test_room_lifecycle import FINGERPRINT, LISTENER, UFRAG
from .test_dtls import Client as DtlsClient
from .test_server import answer_credentials, binding_request, datagrams, proof_answer, server_addr

Address = tuple[Any, ...]


class _Side(asyncio.DatagramProtocol):
    def __init__(self, forward: Any) -> None:
        self.forward = forward

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.forward(data, addr)


class LoopbackNat:
    """inside (the client's side, fixed) <-> outside (the server's side, rebinds)."""

    def __init__(self, server: Address) -> None:
        self.server = server
        self.client: Address | None = None
        self.inside: asyncio.DatagramTransport | None = None
        self.outside: asyncio.DatagramTransport | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.inside, _ = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_client), local_addr=("127.0.0.1", 0)
        )
        await self.rebind()
        return int(self.inside.get_extra_info("sockname")[1])

    async def rebind(self) -> Address:
        """A new outside port; the old one is gone (what reaches it is lost)."""
        if self.outside is not None:
            self.outside.close()
        self.outside, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Side(self._from_server), local_addr=("127.0.0.1", 0)
        )
        return tuple(self.outside.get_extra_info("sockname"))

    def _from_client(self, data: bytes, addr: Address) -> None:
        self.client = addr
        assert self.outside is not None
        self.outside.sendto(data, self.server)

    def _from_server(self, data: bytes, addr: Address) -> None:
        if self.client is not None and self.inside is not None:
            self.inside.sendto(data, self.client)

    def close(self) -> None:
        for transport in (self.inside, self.outside):
            if transport is not None:
                transport.close()


async def listener_behind(nat: LoopbackNat, room: sfu.Room) -> Client:
    """An aiortc listener "bob" of ``room`` whose traffic goes through ``nat``
    (started here): the answer's candidate is rewritten to the NAT's inside port."""
    inside_port = await nat.start()
    pc = RTCPeerConnection(client_configuration())
    bob = Client(pc=pc, identity="bob")
    for _ in range(3):
        pc.addTransceiver("audio", direction="recvonly")
    bob.participant = await room.add_listener(await make_offer(pc), identity="bob")
    _record_received(bob)
    port = room.server.port
    answer = bob.participant.answer.replace(f" {port} typ host", f" {inside_port} typ host")
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return bob


async def test_media_follows_a_listener_whose_nat_rebinds_and_it_stays(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The move comes with the client's first consent check once the old path
    # has been quiet: both quicker than by default (aioice checks every 4-6 s,
    # the server waits 3 s), so the consent timeout the move must beat, and
    # this test's wait past it, can be shorter.
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 1)
    monkeypatch.setattr(session_module, "REBIND_SILENCE", 1.0)
    consent_timeout = 4.0
    async with sfu.Server(consent_timeout=consent_timeout) as server:
        room = server.room("nat")
        alice = await join(room, "alice", speaker=True)
        nat = LoopbackNat(("127.0.0.1", server.port))
        bob = await listener_behind(nat, room)
        pc = bob.pc
        try:
            assert bob.participant is not None
            await wait_for(lambda: len(bob.packets(0)) >= 10, 15, "audio through the NAT")
            session = bob.participant.session
            assert session is not None
            new_address = await nat.rebind()
            rebound_at = asyncio.get_running_loop().time()
            heard = len(bob.packets(0))
            await wait_for(lambda: session.address == new_address, 10, "media sent to the new port")
            await wait_for(lambda: len(bob.packets(0)) >= heard + 50, 5, "audio again")
            # Its consent now comes from the new port: still in the room well
            # after the old port's last word would have expired it.
            remaining = rebound_at + consent_timeout + 2.0 - asyncio.get_running_loop().time()
            await asyncio.sleep(max(0.0, remaining))
            assert not bob.participant.closed, bob.participant.close_reason
            assert session.address == new_address
            # The operator's line says whose media moved, and in which room.
            moves = [r.getMessage() for r in caplog.records if "NAT rebinding" in r.getMessage()]
            assert moves and "'bob'" in moves[0] and "'nat'" in moves[0], moves
        finally:
            await asyncio.gather(alice.close(), close_peer(pc))
            nat.close()


class RebindingOnTheFirstFlight(LoopbackNat):
    """Rebinds when the server's first DTLS flight reaches the old port, which
    loses it: the client's retransmissions and checks come from the new one."""

    rebound = False

    def _from_server(self, data: bytes, addr: Address) -> None:
        if 19 < data[0] < 64 and not self.rebound:  # DTLS (RFC 7983)
            self.rebound = True
            asyncio.get_running_loop().create_task(self.rebind())
            return
        super()._from_server(data, addr)


async def test_a_nat_that_rebinds_during_the_handshake_does_not_stall_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The session moves to the new port once the old one is quiet, as after
    the handshake; before, every flight went on to the old port until the
    handshake timed out."""
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 1)
    monkeypatch.setattr(session_module, "REBIND_SILENCE", 1.0)
    async with sfu.Server(handshake_timeout=8.0) as server:
        room = server.room("nat")
        alice = await join(room, "alice", speaker=True)
        nat = RebindingOnTheFirstFlight(("127.0.0.1", server.port))
        bob = await listener_behind(nat, room)
        pc = bob.pc
        try:
            assert bob.participant is not None
            session = bob.participant.session
            assert session is not None
            await wait_for(
                lambda: session.state == "connected" or bob.participant.closed,  # type: ignore[union-attr]
                7,
                "the handshake done",
            )
            assert not bob.participant.closed, bob.participant.close_reason
            assert nat.rebound and nat.outside is not None
            assert session.address == tuple(nat.outside.get_extra_info("sockname"))
            await wait_for(lambda: len(bob.packets(0)) >= 10, 10, "audio through the new port")
        finally:
            await asyncio.gather(alice.close(), close_peer(pc))
            nat.close()


async def connected_over(
    sock: socket.socket,
    server: sfu.Server,
    identity: str = "lee",
    client: DtlsClient | None = None,
) -> tuple[Session, str, str]:
    """A listener session in room "r" whose handshake ran from ``sock`` (raw
    STUN, in-memory DTLS ``client``: pass one to protect SRTP with its keys)."""
    client = client or DtlsClient()
    session, server_ufrag, pwd = await listener_session(server, client, identity)
    deadline = await checked_from(sock, server, server_ufrag, pwd)
    for datagram in await client_flight(sock, server, client, deadline):
        sock.sendto(datagram, server_addr(server))
    await wait_for(lambda: session.state == "connected", 3, "connected")
    return session, server_ufrag, pwd


async def checked_from(
    sock: socket.socket, server: sfu.Server, server_ufrag: str, pwd: str
) -> float:
    """An ICE check from ``sock``, its success response read (and what came
    with it dropped): the address is taken. The loop time 5 s from now."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    sock.sendto(binding_request(server_ufrag, UFRAG, pwd), server_addr(server))
    while not any(d[:2] == b"\x01\x01" for d in datagrams(sock)):
        assert loop.time() < deadline, "no response to the ICE check"
        await asyncio.sleep(0.005)
    return deadline


async def listener_session(
    server: sfu.Server, client: DtlsClient, identity: str = "lee"
) -> tuple[Session, str, str]:
    """A listener in room "r" whose offer names ``client``'s certificate: its
    session, not checked yet, and the answer's ICE ufrag and password."""
    offered = LISTENER.replace(FINGERPRINT, client.fingerprints[0][1])
    participant = await server.room("r").add_listener(offered, identity)
    assert participant.session is not None
    server_ufrag, pwd = answer_credentials(participant.answer)
    return participant.session, server_ufrag, pwd


async def client_flight(
    sock: socket.socket, server: sfu.Server, client: DtlsClient, deadline: float
) -> list[bytes]:
    """The client's second flight: its first sent from ``sock``, the server's
    answer fed to it as it comes (what else came is dropped)."""
    for datagram in client.start():
        sock.sendto(datagram, server_addr(server))
    loop = asyncio.get_running_loop()
    flight: list[bytes] = []
    while not flight:
        assert loop.time() < deadline, "no DTLS flight from the server"
        await asyncio.sleep(0.005)
        received = [d for d in datagrams(sock) if 19 < d[0] < 64]
        if received:
            flight = client.receive(received)
    return flight


@contextlib.contextmanager
def two_loopback_sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A client's two addresses (two UDP sockets on 127.0.0.1)."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second,
    ):
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        yield first, second


def proofs_to(sock: socket.socket) -> list[bytes]:
    return [d for d in datagrams(sock) if d[:2] == b"\x00\x01"]


async def test_a_quiet_moment_leaves_no_standing_move() -> None:
    """The selected address was quiet once and another one checked meanwhile:
    once the selected one is heard again, neither that check's late proof
    answer nor the other address's later checks may move the media."""
    async with sfu.Server() as server:
        with two_loopback_sockets() as (selected, other):
            session, server_ufrag, pwd = await connected_over(selected, server)
            consent = binding_request(server_ufrag, UFRAG, pwd, use_candidate=False)
            await asyncio.sleep(session_module.REBIND_SILENCE + 0.3)
            other.sendto(consent, server_addr(server))
            await asyncio.sleep(0.1)
            late = proofs_to(other)
            assert late, "a check from elsewhere while quiet is proven (a NAT rebinding)"
            for _ in range(3):  # the selected address is heard again
                selected.sendto(consent, server_addr(server))
                await asyncio.sleep(0.3)
            other.sendto(proof_answer(late[-1], session.remote_pwd), server_addr(server))
            await asyncio.sleep(0.1)
            assert session.address == selected.getsockname(), "moved off a live address"
            await asyncio.sleep(session_module.PROOF_TIMEOUT)
            datagrams(other)  # that proof's re-sends
            selected.sendto(consent, server_addr(server))
            other.sendto(consent, server_addr(server))
            await asyncio.sleep(0.1)
            assert not proofs_to(other), "no move asked while the selected address is live"
            assert session.address == selected.getsockname()


async def test_a_nomination_where_it_already_is_replaces_an_unproven_one() -> None:
    """USE-CANDIDATE from elsewhere (proof pending), then from the selected
    address: the client chose to stay, so the late proof answer moves nothing."""
    async with sfu.Server() as server:
        with two_loopback_sockets() as (selected, other):
            session, server_ufrag, pwd = await connected_over(selected, server)
            nominate = binding_request(server_ufrag, UFRAG, pwd, use_candidate=True)
            other.sendto(nominate, server_addr(server))
            await asyncio.sleep(0.1)
            pending = proofs_to(other)
            assert pending
            selected.sendto(nominate, server_addr(server))
            await asyncio.sleep(0.1)
            other.sendto(proof_answer(pending[-1], session.remote_pwd), server_addr(server))
            await asyncio.sleep(0.1)
            assert session.address == selected.getsockname()
