"""A NAT rebinding mid-session: the client's public port changes.

A loopback UDP relay stands for the NAT: the client talks to its inside port
(the answer's candidate is rewritten to it), the relay forwards from an
outside port to the server. Rebinding moves the outside port. The client's
consent checks (aioice's, like browsers') carry no USE-CANDIDATE, so only
the server noticing the old path go quiet can move the media to the new one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

import sfu

from ..clients import Client, _record_received, close_peer, join, make_offer, wait_for
from ..conftest import client_configuration

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


async def test_media_follows_a_listener_whose_nat_rebinds_and_it_stays() -> None:
    consent_timeout = 8.0
    async with sfu.Server(consent_timeout=consent_timeout) as server:
        room = server.room("nat")
        alice = await join(room, "alice", speaker=True)
        nat = LoopbackNat(("127.0.0.1", server.port))
        inside_port = await nat.start()
        pc = RTCPeerConnection(client_configuration())
        bob = Client(pc=pc, identity="bob")
        try:
            for _ in range(3):
                pc.addTransceiver("audio", direction="recvonly")
            bob.participant = await room.add_listener(await make_offer(pc), identity="bob")
            _record_received(bob)
            answer = bob.participant.answer.replace(
                f" {server.port} typ host", f" {inside_port} typ host"
            )
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
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
        finally:
            await asyncio.gather(alice.close(), close_peer(pc))
            nat.close()
