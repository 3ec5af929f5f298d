"""The server's RTCP as real clients receive it (aiortc peers on loopback).

RFC 3550 6.1: every compound RTCP packet carries an SDES packet with a
CNAME item; here, one chunk for each SSRC that reports in it (RFC 8108
5.3), with the CNAME the answer's ``a=ssrc`` lines give (RFC 5576 4.1).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import pytest
from aiortc.rtp import RtcpPacket, RtcpRrPacket, RtcpSdesPacket, RtcpSrPacket

import sfu
from sfu.media import router as router_module

from .clients import Client, join, wait_for
from .media.test_mixed_listener import join_mixed

CNAME = 1  # SDES item type (RFC 3550 6.5.1)


def record_rtcp(client: Client) -> list[bytes]:
    """Every compound RTCP packet the client's DTLS transport decrypts, as bytes."""
    transport = client.pc.getTransceivers()[0].receiver.transport
    original: Callable[[bytes], Awaitable[None]] = transport._handle_rtcp_data
    compounds: list[bytes] = []

    async def handle(data: bytes) -> None:
        compounds.append(data)
        await original(data)

    transport._handle_rtcp_data = handle  # type: ignore[method-assign]
    return compounds


def answer_cnames(client: Client) -> set[str]:
    assert client.participant is not None
    return set(re.findall(r"a=ssrc:\d+ cname:(\S+)", client.participant.answer))


def reports_and_cnames(compound: bytes) -> tuple[set[int], dict[int, str]]:
    """The SSRCs of the compound's SRs and RRs, and its SDES CNAMEs by SSRC."""
    reporters: set[int] = set()
    cnames: dict[int, str] = {}
    for packet in RtcpPacket.parse(compound):
        if isinstance(packet, (RtcpSrPacket, RtcpRrPacket)):
            reporters.add(packet.ssrc)
        elif isinstance(packet, RtcpSdesPacket):
            for chunk in packet.chunks:
                for item, value in chunk.items:
                    if item == CNAME:
                        cnames[chunk.ssrc] = value.decode()
    return reporters, cnames


async def test_every_compound_the_server_sends_names_its_cname(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Receiver reports to a speaker, sender reports on slot streams to a
    listener and on the mix to a mixed listener: each compound has an SDES
    CNAME for every SSRC reporting in it, the room's, as in the answers."""
    monkeypatch.setattr(router_module, "SENDER_REPORT_INTERVAL", 1.0)
    async with sfu.Server() as server:
        room = server.room("rtcp")
        speaker = await join(room, "alice", speaker=True)
        listener = await join(room, "bob", speaker=False)
        mixed = await join_mixed(room, "carol")
        clients = [speaker, listener, mixed]
        received = {client.identity: record_rtcp(client) for client in clients}
        try:

            def reported(identity: str, kind: type) -> int:
                return sum(
                    any(isinstance(p, kind) for p in RtcpPacket.parse(compound))
                    for compound in received[identity]
                )

            await wait_for(lambda: reported("alice", RtcpRrPacket) >= 2, 15, "RRs to alice")
            await wait_for(lambda: reported("bob", RtcpSrPacket) >= 2, 15, "SRs to bob")
            await wait_for(lambda: reported("carol", RtcpSrPacket) >= 1, 15, "an SR to carol")
            (cname,) = answer_cnames(listener)
            assert answer_cnames(speaker) == answer_cnames(mixed) == {cname}, "one per room"
            for client in clients:
                for compound in received[client.identity]:
                    reporters, cnames = reports_and_cnames(compound)
                    assert reporters, "a compound starts with an SR or RR"
                    assert {cnames.get(ssrc) for ssrc in reporters} == {cname}, (
                        f"{client.identity}: a CNAME for every reporting SSRC"
                    )
            # An SR per slot stream, each SSRC with its chunk.
            last, _ = reports_and_cnames(received["bob"][-1])
            assert last == set(room.router.slot_ssrcs)
        finally:
            await asyncio.gather(*(client.close() for client in clients))
