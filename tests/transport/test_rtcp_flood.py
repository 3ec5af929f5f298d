"""A member cannot fill the event loop with RTCP.

Every SRTCP datagram is decrypted and its reports read on the one event loop
that carries every room on the port; a client could send thousands a second
of datagrams packed with report blocks. The session cuts its SRTCP at a rate
no client needs (before decrypting it), and only blocks on the streams the
server sends it are read. Raw SRTCP from an in-memory DTLS client over loopback.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct

import pylibsrtp
import pytest

import sfu
from sfu.participant import Participant
from sfu.transport import rtp as rtp_module
from sfu.transport import session as session_module
from sfu.transport.rtp import ReportBlock
from sfu.transport.session import RTCP_BURST, RTCP_PER_SECOND
from sfu.transport.srtp import create_srtp_sessions

from ..clients import wait_for
from .test_dtls import Client as DtlsClient
from .test_nat_rebinding import connected_over, two_loopback_sockets
from .test_server import server_addr

OVER_RATE = "srtcp over the session's rate"
CLIENT_SSRC = 0x5EED


def receiver_report(*blocks: tuple[int, int]) -> bytes:
    """An RTCP RR (RFC 3550 6.4.2) from CLIENT_SSRC with a block per (ssrc, packets lost)."""
    body = b"".join(struct.pack("!IIIIII", ssrc, lost, 1, 0, 0, 0) for ssrc, lost in blocks)
    return struct.pack("!BBHI", 0x80 | len(blocks), 201, 1 + 6 * len(blocks), CLIENT_SSRC) + body


async def connected_member(
    sock: socket.socket, server: sfu.Server
) -> tuple[Participant, pylibsrtp.Session]:
    """A connected listener, and the SRTP context its client sends with."""
    client = DtlsClient()
    await connected_over(sock, server, client=client)
    participant = server.room("r").get("lee")
    assert participant is not None
    protect, _ = create_srtp_sessions(client.keys())
    return participant, protect


async def test_a_members_rtcp_past_its_rate_is_dropped_and_counted() -> None:
    """A flood of small valid SRTCP: the burst is read, then no more than
    RTCP_PER_SECOND; the rest is counted in server.drops."""
    async with sfu.Server() as server:
        with two_loopback_sockets() as (sock, _):
            participant, protect = await connected_member(sock, server)
            loop = asyncio.get_running_loop()
            started = loop.time()
            flood = 3 * int(RTCP_BURST)
            for _ in range(flood):
                sock.sendto(protect.protect_rtcp(receiver_report()), server_addr(server))
            await wait_for(
                lambda: participant.rtcp_received + server.drops[OVER_RATE] >= flood,
                5,
                "every datagram read or dropped",
            )
            elapsed = loop.time() - started
            assert RTCP_BURST <= participant.rtcp_received
            assert participant.rtcp_received <= RTCP_BURST + RTCP_PER_SECOND * elapsed + 1, (
                f"{participant.rtcp_received} of {flood} in {elapsed:.2f} s read"
            )
            assert server.drops[OVER_RATE] == flood - participant.rtcp_received


async def test_srtcp_past_the_rate_is_not_decrypted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forged SRTCP past the session's budget is dropped before libsrtp sees
    it (decrypting is most of its cost): not one more unprotect failure."""
    monkeypatch.setattr(session_module, "RTCP_PER_SECOND", 0.0)
    monkeypatch.setattr(session_module, "RTCP_BURST", 5.0)
    async with sfu.Server() as server:
        with two_loopback_sockets() as (sock, _):
            participant, protect = await connected_member(sock, server)
            for _ in range(5):
                sock.sendto(protect.protect_rtcp(receiver_report()), server_addr(server))
            await wait_for(lambda: participant.rtcp_received == 5, 5, "the burst read")
            header = receiver_report()[:8]
            for _ in range(20):
                sock.sendto(header + os.urandom(40), server_addr(server))
            await wait_for(lambda: server.drops[OVER_RATE] >= 20, 5, "the forged ones dropped")
            assert server.drops[OVER_RATE] == 20
            assert server.drops["srtp unprotect failed"] == 0
            assert participant.rtcp_received == 5


async def test_forged_srtcp_does_not_spend_the_clients_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Datagrams reach a session by their source address, which can be
    forged: SRTCP that fails authentication gives its token back, so a forger
    cannot get the client's own reports dropped."""
    monkeypatch.setattr(session_module, "RTCP_PER_SECOND", 0.0)
    monkeypatch.setattr(session_module, "RTCP_BURST", 5.0)
    async with sfu.Server() as server:
        with two_loopback_sockets() as (sock, _):
            participant, protect = await connected_member(sock, server)
            header = receiver_report()[:8]
            for _ in range(20):
                sock.sendto(header + os.urandom(40), server_addr(server))
            await wait_for(
                lambda: server.drops["srtp unprotect failed"] >= 20, 5, "the forged ones tried"
            )
            for _ in range(5):
                sock.sendto(protect.protect_rtcp(receiver_report()), server_addr(server))
            await wait_for(lambda: participant.rtcp_received == 5, 5, "the client's own read")
            assert server.drops[OVER_RATE] == 0


@pytest.mark.parametrize("slots", [2, 3], ids=["slot receiver", "mixed receiver"])
async def test_only_report_blocks_on_the_servers_streams_are_read(
    monkeypatch: pytest.MonkeyPatch, slots: int
) -> None:
    """A datagram packed with report blocks (on SSRCs the server never sent
    it, and many on one it did): no more blocks are built than the streams
    it is sent (its two lines get two slots, or the mix when the room has
    more slots than it has lines), and the report on its stream counts."""
    built: list[ReportBlock] = []

    def counted(*fields: int) -> ReportBlock:
        block = ReportBlock(*fields)
        built.append(block)
        return block

    monkeypatch.setattr(rtp_module, "ReportBlock", counted)
    async with sfu.Server() as server:
        room = server.room("r", slots=slots)
        with two_loopback_sockets() as (sock, _):
            participant, protect = await connected_member(sock, server)
            sent = room.router.slot_ssrcs
            if participant.mixed:
                mix_ssrc = room.mixer.receiver_ssrc(participant)
                assert mix_ssrc is not None
                sent = [mix_ssrc]
            assert len(sent) == (1 if slots == 3 else 2)
            foreign = [(ssrc, 0) for ssrc in range(1, 40) if ssrc not in sent][:31]
            ours = (sent[0], 7)
            compound = receiver_report(*foreign) + receiver_report(*[ours] * 20)
            sock.sendto(protect.protect_rtcp(compound), server_addr(server))
            await wait_for(lambda: participant.rtcp_received == 1, 5, "the datagram read")
            assert server.drops["rtcp malformed"] == 0
            assert 1 <= len(built) <= len(sent), f"{len(built)} report blocks built"
            assert all(block.ssrc == sent[0] for block in built)
            assert participant.stats()["slots"][0]["packets_lost"] == 7
